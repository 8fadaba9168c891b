"""Generalized advantage estimation with termination and truncation kept apart.

Shape legend: T time steps, B environments.

    delta_t = r_t + gamma * (1 - terminated_t) * V(s'_t) - V(s_t)
    A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}

``next_values`` are the values of the *true* next observations s'_t (before any auto-reset),
so a truncated episode bootstraps from V(s'_t) while a terminated one does not; ``done`` (=
terminated or truncated) cuts the trace at every episode boundary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    done: jax.Array,
    gamma: jax.Array | float,
    lam: jax.Array | float,
) -> tuple[jax.Array, jax.Array]:
    """Advantages and returns. All inputs [T, B] (or [T]); returns (advantages, returns)."""
    terminated = terminated.astype(rewards.dtype)
    done = done.astype(rewards.dtype)
    deltas = rewards + gamma * (1.0 - terminated) * next_values - values

    def body(carry, inp):
        delta, d = inp
        adv = delta + gamma * lam * (1.0 - d) * carry
        return adv, adv

    _, adv = jax.lax.scan(body, jnp.zeros_like(deltas[0]), (deltas, done), reverse=True)
    return adv, adv + values
