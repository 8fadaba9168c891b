"""Gaussian-policy PPO loss (the LLC's learner and the MLP+PPO baseline).

Shape legend: M minibatch size, Da action dim. The policy is N(mu(s), diag(exp(log_std))^2),
unsquashed (the environment clips actions).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class PPOLossOut(NamedTuple):
    loss: jax.Array
    pg_loss: jax.Array
    v_loss: jax.Array
    entropy: jax.Array
    approx_kl: jax.Array
    clip_frac: jax.Array


def diag_gaussian_log_prob(x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """Sum over the last axis of log N(x; mean, exp(log_std)^2). [M, Da] -> [M]."""
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z * z - log_std - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)


def diag_gaussian_entropy(log_std: jax.Array) -> jax.Array:
    """Entropy of a diagonal Gaussian, summed over the last axis."""
    return jnp.sum(log_std + 0.5 * (1.0 + jnp.log(2.0 * jnp.pi)), axis=-1)


def ppo_loss(
    mean: jax.Array,
    log_std: jax.Array,
    values: jax.Array,
    actions: jax.Array,
    old_log_prob: jax.Array,
    advantages: jax.Array,
    returns: jax.Array,
    clip_eps: jax.Array | float = 0.2,
    vf_coef: jax.Array | float = 0.5,
    ent_coef: jax.Array | float = 0.0,
    normalize_advantages: bool = True,
    weight: jax.Array | None = None,
) -> PPOLossOut:
    """Clipped-surrogate PPO loss.

    mean: [M, Da]; log_std: [Da] or [M, Da]; values, old_log_prob, advantages, returns: [M];
    actions: [M, Da]; weight: optional [M] sample weights (0 masks a sample out; every mean,
    including the advantage normalization, is then a weighted mean).
    loss = pg_loss + vf_coef * mean((V - R)^2) - ent_coef * entropy.
    """
    w = jnp.ones_like(advantages) if weight is None else weight
    w = w / jnp.maximum(jnp.sum(w), 1e-8)
    wmean = lambda x: jnp.sum(w * x)
    if normalize_advantages:
        a_mean = wmean(advantages)
        a_std = jnp.sqrt(wmean(jnp.square(advantages - a_mean)))
        # A batch constant up to float32 rounding has no ranking: zero advantages (see
        # rl.dppo.normalized_advantages), not normalized rounding noise of about +-1.
        tol = 1e-5 * jnp.max(jnp.abs(advantages) * (w > 0))
        advantages = jnp.where(a_std > tol, (advantages - a_mean) / (a_std + 1e-8), 0.0)
    log_std = jnp.broadcast_to(log_std, mean.shape)
    logp = diag_gaussian_log_prob(actions, mean, log_std)
    log_ratio = logp - old_log_prob
    ratio = jnp.exp(log_ratio)
    pg = jnp.maximum(-advantages * ratio, -advantages * jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps))
    pg_loss = wmean(pg)
    v_loss = wmean(jnp.square(values - returns))
    entropy = jnp.mean(diag_gaussian_entropy(log_std))
    loss = pg_loss + vf_coef * v_loss - ent_coef * entropy
    return PPOLossOut(
        loss=loss,
        pg_loss=pg_loss,
        v_loss=v_loss,
        entropy=entropy,
        approx_kl=wmean((ratio - 1.0) - log_ratio),
        clip_frac=wmean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32)),
    )
