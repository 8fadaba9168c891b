"""Adam with the learning rate as a traced argument (so a sweep can vmap over it)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def adam_init(params: Any) -> optax.OptState:
    return optax.scale_by_adam().init(params)


def adam_apply(
    params: Any,
    grads: Any,
    opt_state: optax.OptState,
    lr: jax.Array | float,
    weight_decay: jax.Array | float = 0.0,
    max_grad_norm: float = 0.0,
) -> tuple[Any, optax.OptState, jax.Array]:
    """One AdamW step: p <- p - lr * (adam(g) + wd * p). Returns (params, state, grad_norm)."""
    gnorm = optax.tree.norm(grads)
    if max_grad_norm > 0:
        scale = jnp.minimum(1.0, max_grad_norm / (gnorm + 1e-6))
        grads = jax.tree.map(lambda g: g * scale, grads)
    updates, opt_state = optax.scale_by_adam().update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p - lr * (u + weight_decay * p), params, updates)
    return params, opt_state, gnorm
