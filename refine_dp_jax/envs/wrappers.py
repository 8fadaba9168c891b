"""Generic wrappers over the environment contract: masked resets and DP observation history.

All functions act on ONE environment's state; vmap them over the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from refine_dp_jax.envs.base import Env, EnvState


def select(mask: jax.Array, a, b):
    """Per-environment tree select: ``a`` where mask > 0.5 else ``b`` (mask is a scalar)."""
    return jax.tree.map(lambda x, y: jnp.where(mask > 0.5, x, y), a, b)


def reset_where(env: Env, state: EnvState, mask: jax.Array, curriculum) -> EnvState:
    """Replaces the state by a fresh episode where ``mask`` is set (e.g. done or non-finite).

    The reset key comes from the state's own PRNG key, so runs are reproducible per env.
    """
    key, sub = jax.random.split(state.rng)
    fresh = env.reset(sub, curriculum)
    return select(mask, fresh, state.replace(rng=key))


def history_init(frame: jax.Array, length: int) -> jax.Array:
    """[Ds] -> [To, Ds], the first frame repeated (as at the start of a demonstration)."""
    return jnp.broadcast_to(frame, (length, *frame.shape))


def history_push(hist: jax.Array, frame: jax.Array) -> jax.Array:
    """Drops the oldest frame and appends ``frame``. hist: [To, Ds], frame: [Ds]."""
    return jnp.concatenate([hist[1:], frame[None]], axis=0)
