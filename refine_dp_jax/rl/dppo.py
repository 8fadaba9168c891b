"""The DPPO loss over (environment step x denoising step) samples.

Shape legend: M minibatch of (decision, denoising step) pairs, K' fine-tuned denoising steps.
Denoising step index i in [0, K'): i = K'-1 is the step that produced the executed action.

    A_norm = (A - mean(A)) / (std(A) + 1e-8)               (per minibatch; unbiased std, and
                                                            0 when A is constant to rounding)
    A_i    = A_norm * gamma_denoise^(K'-1-i)
    eps_i  = eps_base + (eps - eps_base) (exp(3 i/(K'-1)) - 1) / (exp(3) - 1)
    pg     = mean(max(-A_i r, -A_i clip(r, 1-eps_i, 1+eps_i))),  r = exp(logp_new - logp_old)
    loss   = pg + vf_coef * mean((V - R)^2)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class DPPOLossOut(NamedTuple):
    loss: jax.Array
    pg_loss: jax.Array
    v_loss: jax.Array
    approx_kl: jax.Array
    clip_frac: jax.Array
    ratio_mean: jax.Array


def clip_schedule(
    step: jax.Array,
    num_ft: int,
    eps: jax.Array | float,
    eps_base: jax.Array | float,
    rate: float = 3.0,
) -> jax.Array:
    """Per-denoising-step PPO clip range eps_i for step indices i in [0, K'). K'=1 gives eps."""
    if num_ft == 1:
        return jnp.full(jnp.shape(step), eps, jnp.float32)
    t = jnp.asarray(step, jnp.float32) / (num_ft - 1)
    return eps_base + (eps - eps_base) * (jnp.exp(rate * t) - 1.0) / (jnp.exp(rate) - 1.0)


def normalized_advantages(advantages: jax.Array, rel_tol: float = 1e-5) -> jax.Array:
    """(A - mean) / (std + 1e-8) over [M], with the unbiased std (ddof = 1, as torch's
    ``Tensor.std`` in DPPO's code).

    A batch whose spread is below ``rel_tol`` times its largest magnitude is constant up to
    float32 rounding: its mean is off by an ulp, the std equals that error, and dividing would
    turn rounding noise into advantages of about +-1. Such a batch carries no ranking of its
    samples, so its normalized advantages are 0 (and so is the policy loss).
    """
    m = advantages.shape[0]
    centered = advantages - jnp.mean(advantages)
    std = jnp.sqrt(jnp.sum(jnp.square(centered)) / max(m - 1, 1))
    tol = rel_tol * jnp.max(jnp.abs(advantages))
    return jnp.where(std > tol, centered / (std + 1e-8), 0.0)


def dppo_loss(
    new_log_prob: jax.Array,
    old_log_prob: jax.Array,
    advantages: jax.Array,
    step: jax.Array,
    values: jax.Array,
    returns: jax.Array,
    num_ft: int,
    clip_eps: jax.Array | float = 0.01,
    clip_eps_base: jax.Array | float = 0.001,
    gamma_denoise: jax.Array | float = 0.99,
    vf_coef: jax.Array | float = 0.5,
    normalize_advantages: bool = True,
) -> DPPOLossOut:
    """DPPO clipped loss. All inputs [M]; ``step`` int denoising step indices in [0, K')."""
    if normalize_advantages:
        advantages = normalized_advantages(advantages)
    advantages = advantages * gamma_denoise ** (num_ft - 1 - step).astype(jnp.float32)
    eps_i = clip_schedule(step, num_ft, clip_eps, clip_eps_base)
    log_ratio = new_log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    pg = jnp.maximum(-advantages * ratio, -advantages * jnp.clip(ratio, 1 - eps_i, 1 + eps_i))
    pg_loss = jnp.mean(pg)
    v_loss = jnp.mean(jnp.square(values - returns))
    return DPPOLossOut(
        loss=pg_loss + vf_coef * v_loss,
        pg_loss=pg_loss,
        v_loss=v_loss,
        approx_kl=jnp.mean((ratio - 1.0) - log_ratio),
        clip_frac=jnp.mean((jnp.abs(ratio - 1.0) > eps_i).astype(jnp.float32)),
        ratio_mean=jnp.mean(ratio),
    )
