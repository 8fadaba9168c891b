"""Orbax checkpoints of full training states (+ a JSON record), and finished-stage markers.

A stage writes ``<stage>/ckpt/<step>/`` while it runs and ``<stage>/done.json`` when it has
finished; rerunning a stage resumes from the newest checkpoint, or skips it if done.
PRNG keys in states are raw uint32 arrays (``jax.random.PRNGKey``) so they save as arrays.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def _to_saveable(state: Any) -> dict[str, Any]:
    """Flat {index: leaf} without zero-size leaves (orbax refuses them; e.g. mjx's empty
    actuator-activation arrays). The structure comes back from the restore target."""
    leaves = jax.tree.leaves(state)
    return {f"{i:05d}": x for i, x in enumerate(leaves) if np.size(x) > 0}


def _from_saved(saved: dict[str, Any], target: Any) -> Any:
    leaves, treedef = jax.tree.flatten(target)
    out = [saved.get(f"{i:05d}", x) if np.size(x) > 0 else x for i, x in enumerate(leaves)]
    return jax.tree.unflatten(treedef, out)


class Checkpointer:
    """Thin wrapper over ``orbax.checkpoint.CheckpointManager``."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self._mgr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def save(self, step: int, state: Any, record: dict | None = None) -> None:
        self._mgr.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_to_saveable(state)),
                record=ocp.args.JsonSave(record or {}),
            ),
        )
        self._mgr.wait_until_finished()

    def restore(self, step: int, target: Any) -> tuple[Any, dict]:
        """Restores into the structure (and dtypes/shapes) of ``target``."""
        out = self._mgr.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_to_saveable(target)),
                record=ocp.args.JsonRestore(),
            ),
        )
        return _from_saved(out["state"], target), dict(out["record"] or {})

    def close(self) -> None:
        self._mgr.close()


def save_artifact(directory: str, state: Any, record: dict) -> None:
    """A stage's final output: one checkpoint at step 0 of ``directory``."""
    ck = Checkpointer(directory, max_to_keep=1)
    ck.save(0, state, record)
    ck.close()


def load_artifact(directory: str, target: Any) -> tuple[Any, dict]:
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"missing artifact {directory}: run the stage that writes it")
    ck = Checkpointer(directory, max_to_keep=1)
    step = ck.latest_step()
    if step is None:
        raise FileNotFoundError(f"artifact folder {directory} holds no checkpoint")
    out = ck.restore(step, target)
    ck.close()
    return out


def mark_done(stage_dir: str, record: dict) -> None:
    tmp = os.path.join(stage_dir, "done.json.tmp")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, os.path.join(stage_dir, "done.json"))


def read_done(stage_dir: str) -> dict | None:
    path = os.path.join(stage_dir, "done.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
