"""Noise schedules, forward noising and the eps-prediction loss.

Index convention: the K training noise levels are indexed k = 0 .. K-1, k = 0 the least noisy
(DDPM's t = 1) and k = K-1 the noisiest. ``alphas_cumprod[k]`` = prod_{j<=k} (1 - beta_j).

Shape legend: K denoising steps, B batch, Ta chunk length, Da action dimension.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Schedule(NamedTuple):
    """Precomputed DDPM quantities, all [K] float32."""

    betas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array  # alphas_cumprod[k-1], 1.0 at k = 0
    posterior_variance: jax.Array  # beta_tilde_k of q(x_{k-1} | x_k, x_0)
    posterior_log_variance_clipped: jax.Array  # log beta_tilde, k = 0 per ``final_variance``
    posterior_mean_coef1: jax.Array  # multiplies x_0
    posterior_mean_coef2: jax.Array  # multiplies x_k


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Cosine schedule (Nichol & Dhariwal 2021): betas [K] from alpha_bar(t) = cos^2(...).

    alpha_bar(t) = cos^2(((t / K) + s) / (1 + s) * pi / 2) / alpha_bar(0), t = 0..K;
    beta_k = min(1 - alpha_bar(k+1) / alpha_bar(k), max_beta).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    t = np.linspace(0.0, num_steps, num_steps + 1, dtype=np.float64)
    f = np.cos(((t / num_steps) + s) / (1.0 + s) * np.pi * 0.5) ** 2
    abar = f / f[0]
    betas = 1.0 - abar[1:] / abar[:-1]
    return np.clip(betas, 0.0, max_beta)


FINAL_VARIANCES = ("dppo", "ddpm_clipped")


def make_schedule(
    num_steps: int, s: float = 0.008, max_beta: float = 0.999, final_variance: str = "dppo"
) -> Schedule:
    """Builds the cosine schedule and its posterior coefficients (computed in float64).

    The true posterior variance of the last step, beta_tilde_0, is 0, so its log needs a rule:
    ``final_variance='dppo'`` clamps the variance at 1e-20 (DPPO's code), so the last step's std
    is 1e-10 and the std floors of sampling and likelihood decide it (with DPPO's floor 0.1,
    the executed step's std is exactly the floor); ``'ddpm_clipped'`` copies the k = 1
    variance into k = 0 (the "clipped" log-variance of the DDPM paper's code), which with K = 10
    makes that std 0.144, above the floor.
    """
    if final_variance not in FINAL_VARIANCES:
        raise ValueError(f"final_variance must be one of {FINAL_VARIANCES}, got {final_variance!r}")
    betas = cosine_betas(num_steps, s, max_beta)
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    if final_variance == "dppo":
        post_logvar = np.log(np.maximum(post_var, 1e-20))
    else:
        post_logvar = np.log(
            np.concatenate([post_var[1:2] if num_steps > 1 else betas[:1], post_var[1:]])
        )
    coef1 = betas * np.sqrt(abar_prev) / (1.0 - abar)
    coef2 = (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return Schedule(
        betas=f32(betas),
        alphas_cumprod=f32(abar),
        alphas_cumprod_prev=f32(abar_prev),
        posterior_variance=f32(post_var),
        posterior_log_variance_clipped=f32(post_logvar),
        posterior_mean_coef1=f32(coef1),
        posterior_mean_coef2=f32(coef2),
    )


def q_sample(sched: Schedule, x0: jax.Array, k: jax.Array, noise: jax.Array) -> jax.Array:
    """Forward noising x_k = sqrt(abar_k) x_0 + sqrt(1 - abar_k) eps.

    x0, noise: [B, ...]; k: [B] int in [0, K). Returns [B, ...].
    """
    abar = sched.alphas_cumprod[k].reshape(k.shape + (1,) * (x0.ndim - k.ndim))
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def eps_loss(
    denoise_fn, params, sched: Schedule, x0: jax.Array, cond: jax.Array, key: jax.Array
) -> jax.Array:
    """Noise-prediction loss E_{k, eps} ||eps - eps_theta(x_k, k, cond)||^2 (mean over all dims).

    denoise_fn(params, x [B,Ta,Da], k [B], cond [B,...]) -> eps [B,Ta,Da];
    x0: [B, Ta, Da] clean normalized action chunks; cond: [B, To, Ds].
    """
    k_key, n_key = jax.random.split(key)
    num_steps = sched.betas.shape[0]
    k = jax.random.randint(k_key, (x0.shape[0],), 0, num_steps)
    noise = jax.random.normal(n_key, x0.shape, x0.dtype)
    xk = q_sample(sched, x0, k, noise)
    pred = denoise_fn(params, xk, k, cond)
    return jnp.mean(jnp.square(pred - noise))
