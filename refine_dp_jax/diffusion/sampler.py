"""DDPM / DDIM samplers that return the whole denoising chain, and per-step log-likelihoods.

Both samplers are written in one form. A *chain plan* lists the N sampling steps in the order
they run (noisiest first); step i maps x_i (noise level ``timesteps[i]``) to x_{i+1}:

    eps      = eps_theta(x_i, timesteps[i], cond)
    x0_hat   = clip((x_i - sqrt(1 - abar) eps) / sqrt(abar), -x0_clip, x0_clip)
    mean_i   = coef_x0[i] * x0_hat + coef_xt[i] * x_i
    x_{i+1}  = mean_i + std_i * clip(z, -noise_clip, noise_clip),   z ~ N(0, I)
    std_i    = max(sigma[i], std_floor)             (0 in deterministic mode)

and the last sample is clipped to [-final_clip, final_clip]. DDPM: N = K, the posterior
q(x_{k-1} | x_k, x0_hat). DDIM: N = ``ddim_steps`` levels t = K - K/N, ..., K/N, 0 with
sigma = eta * sqrt((1 - abar_prev)/(1 - abar)) * sqrt(1 - abar/abar_prev).

DPPO split: the first N - K' steps use frozen (pre-trained) parameters, the last K' the
trainable copy. Each step is Gaussian, so the likelihood of a stored chain is exact
(``step_log_prob``).

Shape legend: N chain steps, K' fine-tuned steps, B batch, Ta chunk, Ta_exec executed actions,
Da action dim, To observation history, Ds observation dim.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from refine_dp_jax.diffusion.schedule import Schedule

# apply(params, x [B,Ta,Da], k [B] int, cond [B,To,Ds]) -> eps [B,Ta,Da]
DenoiseFn = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]


class ChainPlan(NamedTuple):
    """Per-step coefficients of a sampler, [N] each, in sampling order (noisiest first)."""

    timesteps: jax.Array  # int32 noise level fed to the network
    sqrt_abar: jax.Array
    sqrt_one_minus_abar: jax.Array
    coef_x0: jax.Array
    coef_xt: jax.Array
    sigma: jax.Array  # std of the step before any floor


class Chain(NamedTuple):
    """A sampled denoising chain."""

    xs: jax.Array  # [N+1, B, Ta, Da]: x_K (pure noise) ... x_0 (the action chunk)
    means: jax.Array  # [N, B, Ta, Da] Gaussian mean of each step
    stds: jax.Array  # [N] std used for each step's noise


class SampleOptions(NamedTuple):
    """Exploration knobs of DPPO. Array leaves so that a sweep can vmap over them."""

    std_floor: jax.Array | float = 0.1  # min std of every sampling step
    noise_clip: jax.Array | float = 3.0  # z clipped to +-noise_clip
    x0_clip: jax.Array | float = 1.0  # predicted clean action clipped to +-x0_clip
    final_clip: jax.Array | float = 1.0  # the executed chunk clipped to +-final_clip


def ddpm_plan(sched: Schedule) -> ChainPlan:
    """DDPM ancestral sampling over all K levels, K-1 -> 0."""
    k = jnp.arange(sched.betas.shape[0] - 1, -1, -1)
    abar = sched.alphas_cumprod[k]
    return ChainPlan(
        timesteps=k.astype(jnp.int32),
        sqrt_abar=jnp.sqrt(abar),
        sqrt_one_minus_abar=jnp.sqrt(1.0 - abar),
        coef_x0=sched.posterior_mean_coef1[k],
        coef_xt=sched.posterior_mean_coef2[k],
        sigma=jnp.exp(0.5 * sched.posterior_log_variance_clipped[k]),
    )


def ddim_plan(sched: Schedule, ddim_steps: int, eta: jax.Array | float) -> ChainPlan:
    """DDIM over ``ddim_steps`` evenly spaced levels (K must be divisible by ddim_steps)."""
    num_steps = sched.betas.shape[0]
    if ddim_steps < 1 or num_steps % ddim_steps:
        raise ValueError(f"ddim_steps={ddim_steps} must be >= 1 and divide K={num_steps}")
    stride = num_steps // ddim_steps
    k = jnp.arange(ddim_steps - 1, -1, -1) * stride  # e.g. K=20, N=5: 16, 12, 8, 4, 0
    abar = sched.alphas_cumprod[k]
    abar_prev = jnp.concatenate([sched.alphas_cumprod[k[1:]], jnp.ones((1,))])
    sigma = eta * jnp.sqrt((1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev))
    c_dir = jnp.sqrt(jnp.maximum(1.0 - abar_prev - sigma**2, 0.0))
    one_m = jnp.sqrt(1.0 - abar)
    return ChainPlan(
        timesteps=k.astype(jnp.int32),
        sqrt_abar=jnp.sqrt(abar),
        sqrt_one_minus_abar=one_m,
        coef_x0=jnp.sqrt(abar_prev) - c_dir * jnp.sqrt(abar) / one_m,
        coef_xt=c_dir / one_m,
        sigma=sigma,
    )


def make_plan(sched: Schedule, sampler: str, ddim_steps: int = 0, eta: float = 1.0) -> ChainPlan:
    """Chain plan by name: ``'ddpm'`` or ``'ddim'``."""
    if sampler == "ddpm":
        return ddpm_plan(sched)
    if sampler == "ddim":
        return ddim_plan(sched, ddim_steps, eta)
    raise ValueError(f"unknown sampler {sampler!r}; expected 'ddpm' or 'ddim'")


def _plan_at(plan: ChainPlan, i: jax.Array) -> ChainPlan:
    return jax.tree.map(lambda a: a[i], plan)


def step_mean(
    apply: DenoiseFn,
    params: Any,
    plan_i: ChainPlan,
    x: jax.Array,
    cond: jax.Array,
    x0_clip: jax.Array | float,
) -> jax.Array:
    """Gaussian mean of one denoising step. plan_i leaves: [] or [B]; x: [B,Ta,Da] -> [B,Ta,Da]."""
    bshape = (x.shape[0],)
    col = lambda a: jnp.broadcast_to(a, bshape)[:, None, None]
    t = jnp.broadcast_to(plan_i.timesteps, bshape)
    eps = apply(params, x, t, cond)
    x0 = (x - col(plan_i.sqrt_one_minus_abar) * eps) / col(plan_i.sqrt_abar)
    x0 = jnp.clip(x0, -x0_clip, x0_clip)
    return col(plan_i.coef_x0) * x0 + col(plan_i.coef_xt) * x


def sample_chain(
    apply: DenoiseFn,
    params_frozen: Any,
    params_ft: Any,
    plan: ChainPlan,
    cond: jax.Array,
    key: jax.Array,
    action_shape: tuple[int, int],
    num_ft: int,
    opts: SampleOptions = SampleOptions(),
    deterministic: bool = False,
) -> Chain:
    """Samples a chain for a batch of conditions.

    cond: [B, To, Ds]; action_shape: (Ta, Da); num_ft: K' (static) steps that use ``params_ft``,
    the first N - K' use ``params_frozen``. ``deterministic``: no noise at any step (with DDIM
    eta = 0 the map from x_K to x_0 is then a fixed function). Returns a ``Chain``.

    Deterministic evaluation, our choice against DPPO's: DPPO's code keeps a std of 1e-3 on
    the steps k > 0 and 0 only on the last; we use 0 on every step, so that an evaluation is a
    fixed function of (x_K, observation) and repeats bit for bit. A 1e-3 std on actions in
    [-1, 1] is a perturbation far below the floor of 0.1 that training explores with.
    """
    n = plan.timesteps.shape[0]
    if not 0 <= num_ft <= n:
        raise ValueError(f"num_ft (K') must be in [0, N={n}], got {num_ft}")
    b = cond.shape[0]
    k0, key = jax.random.split(key)
    x_init = jax.random.normal(k0, (b, *action_shape))

    def make_body(params):
        def body(x, inp):
            plan_i, i, k = inp
            mean = step_mean(apply, params, plan_i, x, cond, opts.x0_clip)
            std = jnp.where(deterministic, 0.0, jnp.maximum(plan_i.sigma, opts.std_floor))
            z = jnp.clip(jax.random.normal(k, x.shape), -opts.noise_clip, opts.noise_clip)
            x_next = mean + std * z
            x_next = jnp.where(
                i == n - 1, jnp.clip(x_next, -opts.final_clip, opts.final_clip), x_next
            )
            return x_next, (x_next, mean, std)

        return body

    keys = jax.random.split(key, n)
    idx = jnp.arange(n)
    split = n - num_ft
    seg = lambda a, lo, hi: jax.tree.map(lambda v: v[lo:hi], a)
    x = x_init
    outs = []
    for params, lo, hi in ((params_frozen, 0, split), (params_ft, split, n)):
        if hi > lo:
            x, out = jax.lax.scan(
                make_body(params), x, (seg(plan, lo, hi), idx[lo:hi], keys[lo:hi])
            )
            outs.append(out)
    xs = jnp.concatenate([x_init[None]] + [o[0] for o in outs], axis=0)
    means = jnp.concatenate([o[1] for o in outs], axis=0)
    stds = jnp.concatenate([o[2] for o in outs], axis=0)
    return Chain(xs=xs, means=means, stds=stds)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """Elementwise log N(x; mean, std^2)."""
    return -0.5 * jnp.square((x - mean) / std) - jnp.log(std) - 0.5 * jnp.log(2.0 * jnp.pi)


def _exec_mean_log_prob(x_next, mean, std, num_exec, clamp):
    """DPPO's reduction: elementwise log N(x_next; mean, std^2), clamped, averaged over the
    first ``num_exec`` actions and all action dims. x_next, mean: [..., Ta, Da] -> [...]."""
    logp = gaussian_log_prob(x_next, mean, std)
    if clamp is not None:
        logp = jnp.clip(logp, clamp[0], clamp[1])
    return jnp.mean(logp[..., :num_exec, :], axis=(-2, -1))


def sampled_step_log_probs(
    plan: ChainPlan,
    chain: Chain,
    first: int,
    num_exec: int,
    std_floor: jax.Array | float = 0.1,
    clamp: tuple[float, float] | None = (-5.0, 2.0),
) -> jax.Array:
    """``step_log_prob`` of chain steps ``first .. N-1`` of a chain just sampled, from the
    Gaussian means the sampler computed: the same values, without another network pass.

    Returns [B, N - first] (batch first, as ``DPPOBatch.old_log_prob``)."""
    sigma = plan.sigma[first:]
    std = jnp.maximum(sigma, std_floor)[:, None, None, None]  # [N-first, 1, 1, 1]
    lp = _exec_mean_log_prob(chain.xs[first + 1 :], chain.means[first:], std, num_exec, clamp)
    return jnp.moveaxis(lp, 0, 1)


def step_log_prob(
    apply: DenoiseFn,
    params: Any,
    plan: ChainPlan,
    step: jax.Array,
    x_t: jax.Array,
    x_next: jax.Array,
    cond: jax.Array,
    num_exec: int,
    std_floor: jax.Array | float = 0.1,
    x0_clip: jax.Array | float = 1.0,
    clamp: tuple[float, float] | None = (-5.0, 2.0),
) -> jax.Array:
    """DPPO's per-denoising-step log-likelihood of stored transitions under ``params``.

    step: [M] int chain step indices i (x_t = x_i, x_next = x_{i+1}); x_t, x_next: [M,Ta,Da];
    cond: [M,To,Ds]. Std = max(sigma_i, std_floor); the elementwise log-density is clamped to
    ``clamp`` and averaged over the first ``num_exec`` actions and all Da dims. Returns [M].
    """
    plan_i = _plan_at(plan, step)
    mean = step_mean(apply, params, plan_i, x_t, cond, x0_clip)
    std = jnp.maximum(plan_i.sigma, std_floor)[:, None, None]
    return _exec_mean_log_prob(x_next, mean, std, num_exec, clamp)


def chain_log_prob(
    apply: DenoiseFn,
    params_frozen: Any,
    params_ft: Any,
    plan: ChainPlan,
    chain_xs: jax.Array,
    cond: jax.Array,
    num_ft: int,
    std_floor: jax.Array | float = 0.0,
    x0_clip: jax.Array | float = 1.0,
) -> jax.Array:
    """Exact log-likelihood of whole chains: sum over steps and elements, no clamp.

    chain_xs: [N+1, B, Ta, Da]; returns [B]. For analysis and tests; DPPO uses step_log_prob.
    """
    n = plan.timesteps.shape[0]
    total = jnp.zeros(chain_xs.shape[1])
    for i in range(n):
        params = params_frozen if i < n - num_ft else params_ft
        plan_i = _plan_at(plan, i)
        mean = step_mean(apply, params, plan_i, chain_xs[i], cond, x0_clip)
        std = jnp.maximum(plan_i.sigma, std_floor)
        total = total + jnp.sum(gaussian_log_prob(chain_xs[i + 1], mean, std), axis=(1, 2))
    return total
