"""Stage 2: demonstrations from the scripted stage planner executed through the frozen LLC, and
their on-disk format.

Format (version 1), a folder with two files, no pickle anywhere:

* ``demos.npz`` (``numpy.savez_compressed``, loaded with ``allow_pickle=False``):
  ``obs`` float32 [E, L, Ds] DP observation at each command step (before the command),
  ``commands`` float32 [E, L, Dc] the command issued at that step (raw units),
  ``lengths`` int32 [E] command steps of each episode (entries past it are padding).
* ``demos.json``: ``format`` = "refine_dp_jax.demos", ``version`` = 1, ``env``, ``obs_dim``,
  ``command_dim``, ``hold`` (LLC steps per command), ``dt`` (s per LLC step), ``command_low``,
  ``command_high``, ``num_episodes``, ``collection`` (attempted, kept, success rate).

* ``manifest.json`` (written last, atomically): size and sha256 of both files and of each array
  (``checkpoint.write_manifest``). A folder without it (older code, or a save cut short) is
  refused.

Only successful episodes are stored. ``load_demos`` verifies the checksums, validates everything
and raises ``DemoFormatError`` (a ``CorruptArtifactError``) with the path and the reason.

Shape legend: E episodes, L max command steps, B envs, To history, Ta chunk, Ds, Dc.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from refine_dp_jax.checkpoint import read_manifest, verify_arrays, verify_files, write_manifest
from refine_dp_jax.config import ONE_PLUS, check_fields, one_of
from refine_dp_jax.envs.base import Env, command_limiter, normalize_command
from refine_dp_jax.envs.wrappers import select
from refine_dp_jax.errors import CorruptArtifactError
from refine_dp_jax.logs import write_json
from refine_dp_jax.memory import compile_checked
from refine_dp_jax.train.gaussian_ppo import GaussianPPO

FORMAT = "refine_dp_jax.demos"
VERSION = 1


class DemoFormatError(CorruptArtifactError, ValueError):
    """A demonstration folder is missing, corrupt, of another version, or inconsistent."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message, path=path, stage="demos")


@dataclass(frozen=True)
class DemoConfig:
    num_episodes: int = 200  # successful episodes to keep
    batch_envs: int = 128  # episodes attempted in parallel per batch
    max_batches: int = 20  # give up after this many batches
    # Who executes the planner's commands: 'llc' (the trained LLC, as in the paper) or
    # 'reference' (the env's hand-written controller; for smoke tests of untrained stacks).
    executor: str = "llc"
    # Smoke runs of stacks that cannot succeed yet (an untrained LLC, a reference controller
    # that does not walk): keep the failed episodes too (successful ones first), so that the
    # later stages have data. Recorded as ``keep_failed`` in demos.json; never for real runs.
    keep_failed: bool = False

    def __post_init__(self):
        check_fields(self, {
            "num_episodes": ONE_PLUS, "batch_envs": ONE_PLUS, "max_batches": ONE_PLUS,
            "executor": one_of("llc", "reference"),
        })  # fmt: skip


@dataclass
class Demos:
    obs: np.ndarray  # [E, L, Ds]
    commands: np.ndarray  # [E, L, Dc]
    lengths: np.ndarray  # [E]
    meta: dict[str, Any]


def make_collect_batch(
    env: Env, llc: GaussianPPO, hold: int, num_envs: int, executor: str = "llc"
) -> Callable:
    """collect(llc_learner, key) -> (obs [B,L,Ds], cmds [B,L,Dc], lengths [B], success [B]).

    Each env runs its first episode: at every command step the expert planner reads the
    privileged state and issues a command, which the LLC tracks for ``hold`` steps.
    """
    steps = math.ceil(env.episode_steps / hold)
    v_step = jax.vmap(env.step)
    limit = command_limiter(env, hold)

    def collect(llc_learner, key):
        s = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), 1.0)

        def command_step(carry, _):
            s, alive, length = carry
            obs = jax.vmap(env.dp_observation)(s)
            cmd = limit(s.command, jax.vmap(env.expert_command)(s))  # what is executed
            s = jax.vmap(env.with_command)(s, cmd)

            def llc_step(carry, _):
                s, alive = carry
                if executor == "reference":
                    a = jax.vmap(env.reference_action)(s)
                else:
                    a, _ = llc.act(llc_learner, s.obs, key, True)
                nxt = jax.vmap(select)(alive, v_step(s, a), s)
                return (nxt, alive * (1.0 - nxt.done)), None

            length = length + alive
            (s, alive2), _ = jax.lax.scan(llc_step, (s, alive), None, length=hold)
            return (s, alive2, length), (obs, cmd)

        alive = jnp.ones((num_envs,))
        (s, _, length), (obs, cmd) = jax.lax.scan(
            command_step, (s, alive, jnp.zeros((num_envs,))), None, length=steps
        )
        success = s.success * s.done
        return jnp.swapaxes(obs, 0, 1), jnp.swapaxes(cmd, 0, 1), length.astype(jnp.int32), success

    return collect


def collect_demos(
    env: Env, llc: GaussianPPO, llc_learner, cfg: DemoConfig, hold: int, key, progress=None
) -> Demos:
    """Runs batches until ``cfg.num_episodes`` successes are kept (or ``max_batches``)."""
    collect = jax.jit(make_collect_batch(env, llc, hold, cfg.batch_envs, cfg.executor))
    compile_checked(collect, llc_learner, jax.random.fold_in(key, 0),
                    what=f"demonstration batches of {cfg.batch_envs} envs",
                    hint="lower demos.batch_envs")  # fmt: skip
    good: list[tuple] = []  # (obs, cmd, length) of successful episodes, per batch
    failed: list[tuple] = []  # the failed ones (kept only with ``keep_failed``)
    kept = attempted = 0
    for i in range(cfg.max_batches):
        obs, cmd, length, success = jax.device_get(collect(llc_learner, jax.random.fold_in(key, i)))
        ok = success > 0.5
        attempted += len(ok)
        kept += int(ok.sum())
        good.append((obs[ok], cmd[ok], length[ok]))
        if cfg.keep_failed:
            failed.append((obs[~ok], cmd[~ok], length[~ok]))
        if progress is not None:
            progress(kept, attempted)
        if kept >= cfg.num_episodes:
            break
    if kept == 0 and not cfg.keep_failed:
        raise RuntimeError(
            f"no successful demonstration in {attempted} attempts: the LLC cannot execute the "
            "scripted planner's commands; train the LLC longer"
        )
    obs_l, cmd_l, len_l = (list(x) for x in zip(*(good + failed), strict=True))
    n = min(sum(len(x) for x in len_l), cfg.num_episodes)
    meta = {
        "format": FORMAT, "version": VERSION, "env": env.name,
        "obs_dim": int(env.dp_observation_size), "command_dim": int(env.command_size),
        "hold": int(hold), "dt": float(env.dt),
        "command_low": np.asarray(env.command_low).tolist(),
        "command_high": np.asarray(env.command_high).tolist(),
        "num_episodes": n,
        "executor": cfg.executor,
        "keep_failed": cfg.keep_failed,
        "collection": {"attempted": attempted, "successes": kept, "success_rate": kept / attempted},
    }  # fmt: skip
    return Demos(
        obs=np.concatenate(obs_l)[:n].astype(np.float32),
        commands=np.concatenate(cmd_l)[:n].astype(np.float32),
        lengths=np.concatenate(len_l)[:n].astype(np.int32),
        meta=meta,
    )


def save_demos(demos: Demos, folder: str) -> None:
    """Writes the folder atomically (temporary names, then rename), the manifest last."""
    os.makedirs(folder, exist_ok=True)
    if os.path.exists(os.path.join(folder, "manifest.json")):
        os.remove(os.path.join(folder, "manifest.json"))  # the old one no longer applies
    tmp = os.path.join(folder, "demos.tmp.npz")
    np.savez_compressed(tmp, obs=demos.obs, commands=demos.commands, lengths=demos.lengths)
    os.replace(tmp, os.path.join(folder, "demos.npz"))
    write_json(os.path.join(folder, "demos.json"), demos.meta)
    arrays = {"obs": demos.obs, "commands": demos.commands, "lengths": demos.lengths}
    write_manifest(folder, arrays, files=["demos.npz", "demos.json"])


def load_demos(folder: str, env: Env | None = None) -> Demos:
    """Loads and validates a demonstration folder (optionally against ``env``)."""
    meta_path, data_path = os.path.join(folder, "demos.json"), os.path.join(folder, "demos.npz")
    if not (os.path.exists(meta_path) and os.path.exists(data_path)):
        raise DemoFormatError(f"{folder}: needs demos.json and demos.npz", folder)
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise DemoFormatError(f"{meta_path} is unreadable ({e})", meta_path) from None
    if meta.get("format") != FORMAT:
        raise DemoFormatError(f"{folder}: format {meta.get('format')!r}, expected {FORMAT!r}",
                              folder)  # fmt: skip
    if meta.get("version") != VERSION:
        raise DemoFormatError(
            f"{folder}: version {meta.get('version')}, this code reads {VERSION}", folder
        )
    try:
        verify_files(folder)  # sizes and sha256 of demos.npz and demos.json
    except CorruptArtifactError as e:
        raise DemoFormatError(str(e), e.path) from None
    try:
        with np.load(data_path, allow_pickle=False) as z:
            missing = {"obs", "commands", "lengths"} - set(z.files)
            if missing:
                raise DemoFormatError(f"{folder}: demos.npz lacks {sorted(missing)}", data_path)
            obs, cmds, lengths = z["obs"], z["commands"], z["lengths"]
    except DemoFormatError:
        raise
    except Exception as e:  # BadZipFile, zlib.error, EOFError, ValueError of a damaged file
        raise DemoFormatError(
            f"{data_path} cannot be read ({type(e).__name__}: {e})", data_path
        ) from None
    try:
        verify_arrays(folder, read_manifest(folder),
                      {"obs": obs, "commands": cmds, "lengths": lengths})  # fmt: skip
    except CorruptArtifactError as e:
        raise DemoFormatError(str(e), data_path) from None
    e = meta.get("num_episodes")
    if obs.ndim != 3 or cmds.ndim != 3 or lengths.ndim != 1:
        raise DemoFormatError(f"{folder}: obs/commands must be [E,L,D] and lengths [E]")
    if (
        not (obs.shape[0] == cmds.shape[0] == lengths.shape[0] == e)
        or obs.shape[1] != cmds.shape[1]
    ):
        raise DemoFormatError(
            f"{folder}: inconsistent shapes obs {obs.shape}, commands {cmds.shape}, "
            f"lengths {lengths.shape}, num_episodes {e}"
        )
    if obs.shape[2] != meta["obs_dim"] or cmds.shape[2] != meta["command_dim"]:
        raise DemoFormatError(f"{folder}: feature sizes differ from demos.json")
    if e < 1 or lengths.min() < 1 or lengths.max() > obs.shape[1]:
        raise DemoFormatError(f"{folder}: episode lengths must be in [1, {obs.shape[1]}]")
    if not (np.isfinite(obs).all() and np.isfinite(cmds).all()):
        raise DemoFormatError(f"{folder}: non-finite values")
    if env is not None:
        if meta["env"] != env.name:
            raise DemoFormatError(f"{folder}: recorded on {meta['env']!r}, not {env.name!r}")
        if meta["obs_dim"] != env.dp_observation_size or meta["command_dim"] != env.command_size:
            raise DemoFormatError(f"{folder}: sizes do not match environment {env.name!r}")
    return Demos(obs.astype(np.float32), cmds.astype(np.float32), lengths.astype(np.int32), meta)


def chunk_dataset(
    demos: Demos, env: Env, obs_history: int, horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(obs history, action chunk) pairs from every step of every episode.

    Returns (conds [N,To,Ds] normalized, actions [N,Ta,Dc] in [-1,1], obs_mean [Ds], obs_std [Ds]).
    The history before the episode start repeats the first frame; the chunk past the end
    repeats the last command.
    """
    e, _, _ = demos.obs.shape
    ep, t = [], []
    for i in range(e):
        n = int(demos.lengths[i])
        ep.append(np.full(n, i))
        t.append(np.arange(n))
    ep, t = np.concatenate(ep), np.concatenate(t)
    hist_t = np.clip(t[:, None] + np.arange(-obs_history + 1, 1)[None], 0, None)
    last = demos.lengths[ep][:, None] - 1
    chunk_t = np.minimum(t[:, None] + np.arange(horizon)[None], last)
    conds = demos.obs[ep[:, None], hist_t]
    cmds = demos.commands[ep[:, None], chunk_t]
    valid = np.concatenate([demos.obs[i, : demos.lengths[i]] for i in range(e)])
    mean, std = valid.mean(0), valid.std(0) + 1e-3
    actions = np.asarray(jnp.clip(normalize_command(env, jnp.asarray(cmds)), -1.0, 1.0))
    return ((conds - mean) / std).astype(np.float32), actions.astype(np.float32), mean, std
