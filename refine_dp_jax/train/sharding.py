"""Data parallelism over all devices (and hosts) with one ``jax.sharding.Mesh``.

The mesh has a single axis ``'env'``. Environment-batched leaves of a training state (the
simulator states, observation histories, per-env counters) are split along their leading
axis; everything else (parameters, optimizer states, statistics, keys) is replicated. The
compiled step is the same program as on one device: XLA's SPMD partitioner inserts the
collectives (e.g. the gathers of the PPO minibatch shuffle), so the result equals the
single-device run for the same global batch up to floating-point summation order.

With ``jax.distributed.initialize()`` the same mesh spans every process's devices.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_mesh(devices: list | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("env",))


def env_paths(state: Any) -> tuple[str, ...]:
    """Attribute paths of a state's environment-batched subtrees."""
    names = type(state).__name__
    if names == "LLCTrainState":
        return ("env_state", "cmd_timer")
    if names == "FinetuneState":
        return ("hier.env", "hier.hist", "planner.reward_scaler.ret")
    return ()


def _get(obj, dotted: str):
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


def state_shardings(state: Any, mesh: Mesh) -> Any:
    """A pytree of NamedShardings matching ``state``: env-batched leaves split, rest replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec("env"))
    n = mesh.devices.size
    batched_ids = set()
    for path in env_paths(state):
        sub = _get(state, path)
        if sub is not None:
            batched_ids.update(id(x) for x in jax.tree.leaves(sub))

    def pick(x):
        if id(x) in batched_ids and np.ndim(x) >= 1 and np.shape(x)[0] % n == 0:
            return split
        return replicated

    return jax.tree.map(pick, state)


def shard_state(state: Any, mesh: Mesh | None) -> tuple[Any, Any]:
    """Places ``state`` on the mesh; returns (state, shardings). No-op for ``mesh=None``."""
    if mesh is None:
        return state, None
    shardings = state_shardings(state, mesh)
    if jax.process_count() > 1:
        # Every process holds the same full host copy; each device takes its slice.
        def put(x, sharding):
            host = np.asarray(x)
            return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

        state = jax.tree.map(put, state, shardings)
    else:
        state = jax.device_put(state, shardings)
    return state, shardings
