"""A trained LLC as a small, committable, pickle-free artifact, and its checked loader.

``save_llc(folder, parts, learner, command)`` writes
- ``llc.npz``: the actor and critic parameters and the input-normalization statistics
  (float32 arrays named by their path in the learner; no optimizer state);
- ``llc.json``: what the arrays were trained for: the environment, the robot (a digest of its
  build parameters and joint order), the observation / action / command sizes, the env config
  fields that define the LLC's interface (``env.interface()``: rates, action scales, arm
  prior, command ranges, footstep planner), the LLC config (networks, PPO), the command that
  made it, and the sha256 of ``llc.npz``.

``load_llc(folder, parts)`` refuses, in one line naming the difference, a folder that is
missing or incomplete, an ``llc.npz`` whose checksum does not match (corrupted or replaced),
and a checkpoint made for another robot, interface or network; else it returns a learner of
``parts.llc_ppo`` (fresh optimizer state) holding the stored arrays.

``load_llc(folder, parts, widen=True)`` (a warm start, ``llc_init``) also takes an LLC stored
with fewer steps of actor history (``HumanoidConfig.actor_history``) than ``parts``'s env:
the new inputs get zero first-layer weights and the normalizer statistics of the current
step's proprioception, so the loaded policy and value act exactly as the stored ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from refine_dp_jax.errors import ConfigError, CorruptArtifactError
from refine_dp_jax.logs import write_json

FORMAT = "refine_dp_jax.llc/1"
NPZ, META = "llc.npz", "llc.json"


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _stored(learner) -> dict[str, Any]:
    """The learner's parts that a policy needs: parameters and normalizer statistics."""
    return {"params": learner.params, "actor_stats": learner.actor_stats,
            "critic_stats": learner.critic_stats}  # fmt: skip


def _flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}


def robot_signature(env) -> str:
    """sha256 of the robot's build parameters and joint order (envs that have a robot)."""
    params = getattr(env, "params", None)
    body = {"params": dataclasses.asdict(params) if dataclasses.is_dataclass(params) else None,
            "joints": list(getattr(env, "joint_names", []))}  # fmt: skip
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def describe(parts) -> dict:
    """What a stored LLC must agree with to be loaded by ``parts``."""
    env, cfg = parts.env, parts.cfg
    interface = env.interface() if hasattr(env, "interface") else {}
    return {
        "robot": robot_signature(env),
        "sizes": {
            "observation": env.observation_size,
            "privileged_observation": env.privileged_observation_size,
            "action": env.action_size,
            "command": env.command_size,
        },  # fmt: skip
        "interface": json.loads(json.dumps(interface)),
        "networks": {
            "actor_hidden": list(cfg.llc.ppo.actor_hidden),
            "critic_hidden": list(cfg.llc.ppo.critic_hidden),
            "normalize_inputs": cfg.llc.ppo.normalize_inputs,
        },  # fmt: skip
    }


def save_llc(folder: str, parts, learner, command: str = "", extra: dict | None = None) -> dict:
    """Writes ``llc.npz`` then ``llc.json`` (see the module docstring); returns the record."""
    os.makedirs(folder, exist_ok=True)
    arrays = _flat(_stored(jax.device_get(learner)))
    tmp = os.path.join(folder, NPZ + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, os.path.join(folder, NPZ))
    record = {
        "format": FORMAT,
        "env": parts.env.name,
        **describe(parts),
        "llc_config": json.loads(json.dumps(dataclasses.asdict(parts.cfg.llc), default=list)),
        "command": command,
        "arrays": {k: list(v.shape) for k, v in arrays.items()},
        "sha256": _sha256(os.path.join(folder, NPZ)),
        **(extra or {}),
    }
    write_json(os.path.join(folder, META), record)
    return record


def _diff(a, b, prefix: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a:
                return f"{prefix}{k}: the stored LLC has none, here {b[k]!r}"
            if k not in b:
                return f"{prefix}{k}: stored {a[k]!r}, none here"
            if (d := _diff(a[k], b[k], f"{prefix}{k}.")) is not None:
                return d
        return None
    return None if a == b else f"{prefix[:-1]}: stored {a!r}, here {b!r}"


def _history(interface: dict) -> int:
    return int(interface.get("actor_history", 0) or 0)


def _expected(parts, record: dict, widen: bool) -> tuple[dict, int]:
    """What the stored record must say to fit ``parts`` and how many steps of actor history
    to add to it (``widen``: a stored LLC with fewer steps than the env's is accepted)."""
    here = describe(parts)
    old = _history(record.get("interface") or {})
    add = _history(here["interface"]) - old
    if not widen or add <= 0:
        return here, 0
    extra = parts.env.proprio_size * add
    sizes = dict(here["sizes"])
    sizes["observation"] -= extra
    sizes["privileged_observation"] -= extra
    interface = dict(here["interface"])
    interface.pop("actor_history")
    if old:
        interface["actor_history"] = old
    return {**here, "sizes": sizes, "interface": interface}, add


def check_llc(folder: str, parts, widen: bool = False) -> dict:
    """Checks a stored LLC against ``parts`` without reading its arrays into a learner (files
    present, checksum, robot, interface, network); returns its record. ``widen``: see
    ``load_llc``."""
    return _check(folder, parts, widen)[0]


def _check(folder: str, parts, widen: bool) -> tuple[dict, int]:
    """``check_llc``'s record, and the steps of actor history ``load_llc`` must add."""
    npz, meta = os.path.join(folder, NPZ), os.path.join(folder, META)
    for p in (meta, npz):
        if not os.path.isfile(p):
            raise ConfigError(
                f"LLC checkpoint {folder}: {os.path.basename(p)} is missing (train "
                "and export one: refine-dp train-llc, then refine-dp export-llc)"
            )
    with open(meta) as f:
        try:
            record = json.load(f)
        except json.JSONDecodeError as e:
            raise CorruptArtifactError(f"LLC checkpoint {meta} is not valid JSON ({e})") from None
    if record.get("format") != FORMAT:
        raise CorruptArtifactError(f"{meta}: format {record.get('format')!r}, expected {FORMAT}")
    if _sha256(npz) != record.get("sha256"):
        raise CorruptArtifactError(
            f"LLC checkpoint {npz} does not match its checksum in {META} (corrupted or replaced)"
        )
    here, add = _expected(parts, record, widen)
    stored = {k: record.get(k) for k in here}
    if stored["robot"] != here["robot"]:
        raise ConfigError(
            f"LLC checkpoint {folder} was trained for another robot (env {record.get('env')}): "
            "its robot parameters or joint order differ from this environment's"
        )
    if (d := _diff(stored, here, "")) is not None:
        hint = ""
        if "actor_history" in d and not widen:
            hint = " (a warm start, llc_init, widens an LLC with less actor history)"
        raise ConfigError(f"LLC checkpoint {folder} does not fit this experiment: {d}{hint}")
    return record, add


def load_llc(folder: str, parts, widen: bool = False):
    """The stored LLC as a learner of ``parts.llc_ppo`` (see the module docstring)."""
    record, add = _check(folder, parts, widen)
    npz = os.path.join(folder, NPZ)
    template = parts.llc_ppo.init(jax.random.PRNGKey(0))
    with np.load(npz, allow_pickle=False) as z:
        arrays = dict(z)
    if add:
        arrays = _widen(arrays, record["sizes"]["observation"], add, parts.env)
    paths = jax.tree_util.tree_leaves_with_path(_stored(template))
    leaves = []
    for k, v in paths:
        name = jax.tree_util.keystr(k)
        if name not in arrays or arrays[name].shape != np.shape(v):
            got = arrays[name].shape if name in arrays else "missing"
            raise ConfigError(f"LLC checkpoint {folder}: {name} is {got}, expected {np.shape(v)}")
        leaves.append(jnp.asarray(arrays[name], dtype=jnp.asarray(v).dtype))
    tree = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(_stored(template)), leaves)
    return template.replace(**tree)


FIRST_KERNELS = ("['params'].actor['Dense_0']['kernel']", "['params'].critic['Dense_0']['kernel']")
STATS = ("['actor_stats'].mean", "['actor_stats'].var", "['critic_stats'].mean",
         "['critic_stats'].var")  # fmt: skip


def _widen(arrays: dict, obs_size: int, add: int, env) -> dict:
    """The stored arrays with ``add`` more steps of actor history: inputs inserted at
    ``obs_size`` (the end of the stored actor observation, which is also where the critic's
    privileged part begins): zero rows in both first-layer kernels, and in the normalizer
    statistics copies of those of the current step's proprioception (``env.proprio``'s
    entries: the same quantities, one step later)."""
    idx = env.proprio_entries
    out = dict(arrays)
    for name in FIRST_KERNELS:
        k = arrays[name]
        out[name] = np.insert(k, [obs_size], np.zeros((add * len(idx), k.shape[1]), k.dtype), 0)
    for name in STATS:
        v = arrays[name]
        out[name] = np.insert(v, [obs_size], np.tile(v[idx], add))
    return out
