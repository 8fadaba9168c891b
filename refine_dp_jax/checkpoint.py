"""Orbax checkpoints of full training states (+ a JSON record), and finished-stage markers.

A stage writes ``<stage>/ckpt/<step>/`` while it runs and ``<stage>/done.json`` when it has
finished; rerunning a stage resumes from the newest checkpoint, or skips it if done.
PRNG keys in states are raw uint32 arrays (``jax.random.PRNGKey``) so they save as arrays.

Integrity: every checkpoint folder (and the demonstration folder, ``data.demos``) holds a
``manifest.json``, written last and atomically, with the size and sha256 of every file and
the shape, dtype and sha256 of every saved array. Restoring verifies the files before orbax
reads them and the arrays after; a mismatch, a missing manifest (a checkpoint of older code,
or a save cut short) or any read error makes the checkpoint bad. ``Checkpointer.restore_latest``
then falls back to the newest good step (moving the bad ones to ``<stage>/corrupt/``), and
raises ``CorruptArtifactError`` without writing anything when there is none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from refine_dp_jax.errors import CorruptArtifactError
from refine_dp_jax.logs import write_json

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "refine_dp_jax.manifest"


def note(msg: str) -> None:
    """One line to stderr (corruption found, fallback used)."""
    print(f"refine-dp: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Manifests


def array_digest(x: Any) -> dict:
    """shape, dtype and sha256 over (dtype, shape, bytes) of one array."""
    a = np.ascontiguousarray(np.asarray(x))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.reshape(-1).view(np.uint8))
    return {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": h.hexdigest()}


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _files(folder: str) -> list[str]:
    out = []
    for root, _, names in os.walk(folder):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel != MANIFEST and not rel.endswith(".tmp"):
                out.append(rel)
    return sorted(out)


def write_manifest(folder: str, arrays: dict[str, Any] | None = None, files=None) -> None:
    """Checksums of ``files`` (default: every file under ``folder``) and of ``arrays``, written
    atomically as ``folder/manifest.json``. Call it after everything else is on disk."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "files": {
            rel: {
                "size": os.path.getsize(os.path.join(folder, rel)),
                "sha256": _file_sha256(os.path.join(folder, rel)),
            }
            for rel in (_files(folder) if files is None else files)
        },  # fmt: skip
        "arrays": {k: array_digest(v) for k, v in (arrays or {}).items()},
    }
    write_json(os.path.join(folder, MANIFEST), manifest, fsync=True)


def read_manifest(folder: str) -> dict:
    path = os.path.join(folder, MANIFEST)
    if not os.path.exists(path):
        raise CorruptArtifactError(
            f"{folder} has no {MANIFEST} (written by an older version, or its save was cut "
            "short), so its content cannot be verified",
            path=folder,
        )
    try:
        with open(path) as f:
            manifest = json.load(f)
        assert manifest.get("format") == MANIFEST_FORMAT and isinstance(manifest["files"], dict)
    except Exception:
        raise CorruptArtifactError(f"{path} is unreadable", path=path) from None
    return manifest


def verify_files(folder: str) -> dict:
    """Checks every file listed in ``folder``'s manifest (size, then sha256); returns the
    manifest. Raises ``CorruptArtifactError`` naming the first bad file."""
    manifest = read_manifest(folder)
    for rel, want in manifest["files"].items():
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            raise CorruptArtifactError(f"{path} is missing", path=path)
        size = os.path.getsize(path)
        if size != want["size"]:
            raise CorruptArtifactError(
                f"{path} is truncated or overwritten ({size} bytes, {want['size']} written)",
                path=path,
            )
        if _file_sha256(path) != want["sha256"]:
            raise CorruptArtifactError(
                f"{path} does not match its checksum (content changed since it was written)",
                path=path,
            )
    return manifest


def verify_arrays(folder: str, manifest: dict, arrays: dict[str, Any]) -> None:
    """Compares restored ``arrays`` with the checksums in ``manifest``."""
    want = manifest.get("arrays", {})
    if set(want) != set(arrays):
        raise CorruptArtifactError(
            f"{folder}: holds {len(want)} arrays, {len(arrays)} expected (another config?)",
            path=folder,
        )
    for k, x in arrays.items():
        if array_digest(x) != want[k]:
            raise CorruptArtifactError(
                f"{folder}: array {k} {tuple(want[k]['shape'])} does not match its checksum",
                path=folder,
            )


def stage_of(path: str) -> str | None:
    """The stage folder name a checkpoint path belongs to (``<out>/<stage>/final/0`` -> stage)."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    for name in ("final", "ckpt"):
        if name in parts:
            return parts[len(parts) - 1 - parts[::-1].index(name) - 1]
    return None


# ---------------------------------------------------------------------------------------------
# Checkpoints


def _to_saveable(state: Any) -> dict[str, Any]:
    """Flat {index: leaf} without zero-size leaves (orbax refuses them; e.g. mjx's empty
    actuator-activation arrays). The structure comes back from the restore target."""
    leaves = jax.tree.leaves(state)
    return {f"{i:05d}": x for i, x in enumerate(leaves) if np.size(x) > 0}


def _from_saved(saved: dict[str, Any], target: Any) -> Any:
    leaves, treedef = jax.tree.flatten(target)
    out = [saved.get(f"{i:05d}", x) if np.size(x) > 0 else x for i, x in enumerate(leaves)]
    return jax.tree.unflatten(treedef, out)


def _host_copy(tree: Any) -> Any:
    """NumPy copies of a pytree's arrays for checksums. An array sharded over several processes
    (multi-host runs) is gathered from all of them, so every process must call this."""

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(get, tree)


@contextlib.contextmanager
def _sigint_deferred():
    """Ctrl-C during a save takes effect once the save and its manifest are complete, so an
    interrupted run never leaves a half-verified newest checkpoint behind."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    hit = []
    signal.signal(signal.SIGINT, lambda *_: hit.append(1))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hit:
        raise KeyboardInterrupt


def _move_aside(path: str, stage_dir: str, name: str) -> str:
    """Moves a bad artifact to ``stage_dir/corrupt/<name>-<time>`` (kept for inspection)."""
    base = os.path.join(stage_dir, "corrupt", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    dest, i = base, 1
    while os.path.exists(dest):
        dest, i = f"{base}-{i}", i + 1
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.move(path, dest)
    return dest


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


class Checkpointer:
    """Thin wrapper over ``orbax.checkpoint.CheckpointManager`` that verifies what it reads."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self._mgr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mgr.all_steps())

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def save(self, step: int, state: Any, record: dict | None = None) -> None:
        saveable = _to_saveable(state)
        with _sigint_deferred():
            self._mgr.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(saveable),
                    record=ocp.args.JsonSave(record or {}),
                ),
            )
            self._mgr.wait_until_finished()
            host = _host_copy(saveable)  # a collective in multi-host runs: every process
            if jax.process_index() == 0:
                write_manifest(self.step_dir(step), host)

    def restore(self, step: int, target: Any) -> tuple[Any, dict]:
        """Restores into the structure (and dtypes/shapes) of ``target`` after checking the
        files; checks the restored arrays. Raises ``CorruptArtifactError``."""
        folder = self.step_dir(step)
        manifest = verify_files(folder)
        try:
            out = self._mgr.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(_to_saveable(target)),
                    record=ocp.args.JsonRestore(),
                ),
            )
        except Exception as e:  # orbax/tensorstore errors of unreadable data
            raise CorruptArtifactError(f"{folder} cannot be read ({_short(e)})", folder) from None
        verify_arrays(folder, manifest, _host_copy(dict(out["state"])))
        return _from_saved(out["state"], target), dict(out["record"] or {})

    def restore_latest(self, target: Any) -> tuple[int, Any, dict] | None:
        """The newest step that verifies: ``(step, state, record)``, or None when there is no
        checkpoint. Bad newer steps are reported and moved to ``<stage>/corrupt/``; when no
        step is good, raises ``CorruptArtifactError`` and changes nothing."""
        bad: list[tuple[int, CorruptArtifactError]] = []
        for step in reversed(self.all_steps()):
            try:
                state, record = self.restore(step, target)
            except CorruptArtifactError as e:
                bad.append((step, e))
                continue
            for b, e in bad:
                note(f"bad checkpoint: {e}; falling back to step {step} (moved step {b} to "
                     f"{self._quarantine(b)})")  # fmt: skip
            if bad:
                self._mgr.reload()
            return step, state, record
        if bad:
            raise CorruptArtifactError(
                f"{bad[0][1]}; no earlier good checkpoint in {self.directory}",
                path=self.directory,
                stage=stage_of(self.directory),
            )
        return None

    def _quarantine(self, step: int) -> str:
        name = f"{os.path.basename(self.directory)}-{step}"
        return _move_aside(self.step_dir(step), os.path.dirname(self.directory), name)

    def close(self) -> None:
        self._mgr.close()


def save_artifact(directory: str, state: Any, record: dict) -> None:
    """A stage's final output: one checkpoint at step 0 of ``directory``."""
    ck = Checkpointer(directory, max_to_keep=1)
    ck.save(0, state, record)
    ck.close()


def load_artifact(directory: str, target: Any) -> tuple[Any, dict]:
    """Restores a stage's artifact; ``CorruptArtifactError`` (naming the stage that writes it)
    when it is missing, fails its checksums or cannot be read."""
    stage = stage_of(directory)
    if not os.path.isdir(directory):
        raise CorruptArtifactError(
            f"missing artifact {directory}: run the stage that writes it", directory, stage
        )
    ck = Checkpointer(directory, max_to_keep=1)
    try:
        step = ck.latest_step()
        if step is None:
            raise CorruptArtifactError(f"artifact folder {directory} holds no checkpoint",
                                       directory, stage)  # fmt: skip
        try:
            return ck.restore(step, target)
        except CorruptArtifactError as e:
            e.stage = stage
            raise
    finally:
        ck.close()


def complete_steps(ckpt_dir: str) -> list[int]:
    """Steps of the checkpoints in ``ckpt_dir`` that were written to the end (their manifest is
    on disk), ascending; [] when there is no such folder."""
    if not os.path.isdir(ckpt_dir):
        return []
    steps = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
    return [s for s in steps if os.path.exists(os.path.join(ckpt_dir, str(s), MANIFEST))]


def artifact_problem(path: str) -> str | None:
    """Why the artifact at ``path`` fails its file checksums (None when it passes): ``path`` is
    a folder with a manifest (demonstrations) or an orbax folder whose newest step has one."""
    try:
        if not os.path.isdir(path):
            return f"{path} is missing"
        if not os.path.exists(os.path.join(path, MANIFEST)):
            steps = [int(d) for d in os.listdir(path) if d.isdigit()]
            if steps:
                path = os.path.join(path, str(max(steps)))
        verify_files(path)
    except CorruptArtifactError as e:
        return str(e)
    return None


# ---------------------------------------------------------------------------------------------
# Finished-stage markers


def mark_done(stage_dir: str, record: dict) -> None:
    write_json(os.path.join(stage_dir, "done.json"), record)


def read_done(stage_dir: str, artifact: str | None = None) -> dict | None:
    """The stage's done record, or None when it has not finished. With ``artifact`` (a path
    relative to ``stage_dir``, "." for the folder itself), a stage whose artifact fails its
    checksums is not done either: that is reported in one line, a bad orbax artifact is moved
    to ``<stage>/corrupt/`` (so the stage can write it again), and None is returned."""
    path = os.path.join(stage_dir, "done.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            done = json.load(f)
    except (OSError, ValueError):
        note(f"{path} is unreadable; redoing stage {os.path.basename(stage_dir)}")
        return None
    if artifact is not None:
        folder = os.path.normpath(os.path.join(stage_dir, artifact))
        problem = artifact_problem(folder)
        if problem is not None:
            name = os.path.basename(os.path.normpath(stage_dir))
            if folder != os.path.normpath(stage_dir) and os.path.isdir(folder):
                problem += f"; moved to {_move_aside(folder, stage_dir, artifact)}"
            note(f"stage {name} is not done: {problem}; redoing it")
            return None
    return done
