"""Running statistics as pure state: observation normalization and reward scaling.

``RunningStats`` holds a mean/variance estimate merged batch by batch with Chan et al.'s
parallel formula, so it is exact for any split of the data. ``RewardScaler`` divides rewards by
the running std of the discounted return, as DPPO (and PPO's reward scaling) do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class RunningStats:
    mean: jax.Array  # [D]
    var: jax.Array  # [D]
    count: jax.Array  # [] float32


def stats_init(shape: tuple[int, ...] | int) -> RunningStats:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return RunningStats(jnp.zeros(shape), jnp.ones(shape), jnp.zeros(()))


def stats_update(
    stats: RunningStats, x: jax.Array, weight: jax.Array | None = None
) -> RunningStats:
    """Merges a batch x [N, *D] into the statistics; ``weight`` [N] in {0, 1} drops rows."""
    x = x.reshape((-1,) + stats.mean.shape)
    w = jnp.ones(x.shape[:1]) if weight is None else weight.reshape(-1).astype(x.dtype)
    wcol = w.reshape((-1,) + (1,) * (x.ndim - 1))
    n = jnp.sum(w)
    b_mean = jnp.sum(wcol * x, axis=0) / jnp.maximum(n, 1.0)
    b_var = jnp.sum(wcol * jnp.square(x - b_mean), axis=0) / jnp.maximum(n, 1.0)
    tot = jnp.maximum(stats.count + n, 1e-8)
    delta = b_mean - stats.mean
    mean = stats.mean + delta * n / tot
    m2 = stats.var * stats.count + b_var * n + jnp.square(delta) * stats.count * n / tot
    return RunningStats(mean, m2 / tot, tot)


def stats_normalize(stats: RunningStats, x: jax.Array, clip: float = 10.0, eps: float = 1e-8):
    """(x - mean) / std, clipped to +-clip."""
    return jnp.clip((x - stats.mean) / jnp.sqrt(stats.var + eps), -clip, clip)


@struct.dataclass
class RewardScaler:
    ret: jax.Array  # [B] running discounted return per environment
    stats: RunningStats  # statistics of that return (scalar)


def reward_scaler_init(num_envs: int) -> RewardScaler:
    return RewardScaler(jnp.zeros((num_envs,)), stats_init(()))


def reward_scale(
    scaler: RewardScaler,
    rewards: jax.Array,
    dones: jax.Array,
    gamma: jax.Array | float,
    eps: float = 1e-8,
) -> tuple[RewardScaler, jax.Array]:
    """Scales rewards [T, B] by the std of the running discounted return.

    The return accumulates ret = gamma * ret + r_t and restarts after each done; the statistics
    are updated with all T*B return values, then every reward is divided by their std.
    """

    def body(ret, inp):
        r, d = inp
        ret = ret * gamma + r
        return ret * (1.0 - d), ret

    ret, rets = jax.lax.scan(body, scaler.ret, (rewards, dones.astype(rewards.dtype)))
    stats = stats_update(scaler.stats, rets.reshape(-1))
    scaled = rewards / jnp.sqrt(stats.var + eps)
    return RewardScaler(ret, stats), scaled
