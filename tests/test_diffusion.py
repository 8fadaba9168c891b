"""Diffusion maths against independent NumPy/SciPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from refine_dp_jax.diffusion import sampler as smp
from refine_dp_jax.diffusion.networks import (
    Critic,
    DenoiserConfig,
    apply_fn,
    make_denoiser,
    mish,
)
from refine_dp_jax.diffusion.schedule import eps_loss, make_schedule, q_sample

K = 10


def np_cosine_abar(k_total, s=0.008):
    """alpha_bar_k for k = 1..K from the closed form, betas clipped at 0.999, in a plain loop."""
    f = lambda t: np.cos((t / k_total + s) / (1 + s) * np.pi / 2) ** 2
    out, prod = [], 1.0
    for t in range(1, k_total + 1):
        beta = min(1 - f(t) / f(t - 1), 0.999)
        prod *= 1 - beta
        out.append(prod)
    return np.array(out)


@pytest.fixture(scope="module")
def sched():
    return make_schedule(K)


def test_cosine_schedule_matches_closed_form(sched):
    np.testing.assert_allclose(np.asarray(sched.alphas_cumprod), np_cosine_abar(K), rtol=1e-5)
    betas = np.asarray(sched.betas)
    assert np.all(betas > 0) and np.all(betas <= 0.999)
    assert np.all(np.diff(np.asarray(sched.alphas_cumprod)) < 0)


def test_posterior_coefficients_match_gaussian_conditioning(sched):
    """q(x_{k-1} | x_k, x_0) from precision-weighted Gaussian algebra, one k at a time."""
    abar = np.asarray(sched.alphas_cumprod, np.float64)
    for k in range(1, K):
        ap, a = abar[k - 1], abar[k]
        alpha = a / ap
        beta = 1 - alpha
        # prior x_{k-1} ~ N(sqrt(ap) x0, 1-ap)
        # likelihood x_k | x_{k-1} ~ N(sqrt(alpha) x_{k-1}, beta)
        prec = 1 / (1 - ap) + alpha / beta
        x0, xk = 0.3, -1.1
        mean = (np.sqrt(ap) * x0 / (1 - ap) + np.sqrt(alpha) * xk / beta) / prec
        c1, c2 = float(sched.posterior_mean_coef1[k]), float(sched.posterior_mean_coef2[k])
        np.testing.assert_allclose(c1 * x0 + c2 * xk, mean, rtol=1e-4)
        np.testing.assert_allclose(float(sched.posterior_variance[k]), 1 / prec, rtol=1e-4)


def test_forward_noising_marginals_monte_carlo(sched):
    n = 200_000
    x0 = jnp.full((n, 1, 1), 0.7)
    for k in (0, 4, 9):
        noise = jax.random.normal(jax.random.key(k), x0.shape)
        xk = np.asarray(q_sample(sched, x0, jnp.full((n,), k), noise)).ravel()
        a = float(sched.alphas_cumprod[k])
        assert abs(xk.mean() - np.sqrt(a) * 0.7) < 0.01
        assert abs(xk.var() - (1 - a)) < 0.01


def test_eps_loss_of_perfect_and_zero_denoiser(sched):
    """Perfect eps-predictor for a point mass at c gives loss 0; the zero predictor gives ~1."""
    c = jnp.array([[0.2, -0.5]])
    x0 = jnp.broadcast_to(c, (4096, 1, 2))
    abar = sched.alphas_cumprod

    def perfect(params, x, k, cond):
        a = abar[k][:, None, None]
        return (x - jnp.sqrt(a) * c) / jnp.sqrt(1 - a)

    zero = lambda params, x, k, cond: jnp.zeros_like(x)
    cond = jnp.zeros((4096, 1, 1))
    assert float(eps_loss(perfect, None, sched, x0, cond, jax.random.key(0))) < 1e-8
    assert abs(float(eps_loss(zero, None, sched, x0, cond, jax.random.key(0))) - 1.0) < 0.05


def gaussian_eps(sched, m, s):
    """Bayes-optimal eps predictor when x0 ~ N(m, s^2) elementwise."""
    abar = sched.alphas_cumprod

    def f(params, x, k, cond):
        a = abar[k][:, None, None]
        return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * m) / (a * s**2 + 1 - a)

    return f


def exact_output_moments(plan, sched_m, sched_s):
    """Plain-loop oracle: with a linear (Gaussian-optimal) denoiser every step is
    x' = A x + b + std z, so the output is Gaussian with moments from this recursion."""
    mean, var = 0.0, 1.0
    for i in range(len(plan.timesteps)):
        sa = float(plan.sqrt_abar[i])
        a = sa**2
        g = (1 - a) / (a * sched_s**2 + 1 - a)  # x0_hat = ((1-g) x + g sa m) / sa
        cx0, cxt = float(plan.coef_x0[i]), float(plan.coef_xt[i])
        big_a = cx0 * (1 - g) / sa + cxt
        b = cx0 * g * sched_m
        mean, var = big_a * mean + b, big_a**2 * var + float(plan.sigma[i]) ** 2
    return mean, np.sqrt(var)


@pytest.mark.parametrize(
    "plan_kind,steps,eta",
    [("ddpm", 100, 1.0), ("ddim", 20, 1.0), ("ddim", 20, 0.0), ("ddim", 100, 1.0)],
    ids=["ddpm", "ddim20-eta1", "ddim20-eta0", "ddim100-eta1"],
)
def test_sampler_output_distribution(plan_kind, steps, eta):
    """Monte Carlo moments of sampled x_0 match the exact linear-Gaussian recursion; the fine
    chains also land on the data distribution N(m, s^2) itself."""
    sched = make_schedule(100)
    m, s = 0.3, 0.2
    plan = smp.make_plan(sched, plan_kind, ddim_steps=steps, eta=eta)
    opts = smp.SampleOptions(std_floor=0.0, noise_clip=100.0, x0_clip=100.0, final_clip=100.0)
    cond = jnp.zeros((40_000, 1, 1))
    f = gaussian_eps(sched, m, s)
    chain = smp.sample_chain(f, None, None, plan, cond, jax.random.key(1), (1, 1), 0, opts)
    x = np.asarray(chain.xs[-1]).ravel()
    ref_mean, ref_std = exact_output_moments(plan, m, s)
    assert abs(x.mean() - ref_mean) < 0.005
    assert abs(x.std() - ref_std) < 0.005
    if steps == 100:
        assert abs(x.mean() - m) < 0.01 and abs(x.std() - s) < 0.02


def test_ddim_stride_one_eta_one_has_ddpm_means():
    sched = make_schedule(50)
    p1, p2 = smp.ddpm_plan(sched), smp.ddim_plan(sched, 50, 1.0)
    for name in ("timesteps", "coef_x0", "coef_xt"):
        np.testing.assert_allclose(
            np.asarray(getattr(p1, name), float), np.asarray(getattr(p2, name), float), atol=1e-4
        )
    # Same stds, the last step included: both have variance 0 there (DDPM's clamped at 1e-20).
    np.testing.assert_allclose(np.asarray(p1.sigma[:-1]), np.asarray(p2.sigma[:-1]), rtol=1e-3)
    assert float(p1.sigma[-1]) < 1e-9 and float(p2.sigma[-1]) == 0.0


def np_posterior_std(k_total, rule):
    """Per-step std of DDPM, k = 0..K-1, in a plain loop. 'dppo': DPPO's code, the posterior
    variance clamped at 1e-20; 'ddpm_clipped': beta_tilde_0 replaced by beta_tilde_1."""
    abar = np_cosine_abar(k_total)
    var = []
    for k in range(k_total):
        ap = abar[k - 1] if k > 0 else 1.0
        beta = 1 - abar[k] / ap
        var.append(beta * (1 - ap) / (1 - abar[k]))
    if rule == "dppo":
        var = [max(v, 1e-20) for v in var]
    else:
        var[0] = var[1]
    return np.sqrt(np.array(var))


@pytest.mark.parametrize("k_total", [5, 10, 20])
def test_final_step_std_follows_dppo(k_total):
    """The executed (k = 0) step: DPPO's rule leaves its std to the floor (0.1); the DDPM
    'clipped' variant gives 0.283 at K = 5 and 0.144 at K = 10, above the floor."""
    floor = 0.1
    for rule in ("dppo", "ddpm_clipped"):
        plan = smp.ddpm_plan(make_schedule(k_total, final_variance=rule))
        ref = np_posterior_std(k_total, rule)[::-1]  # sampling order: noisiest first
        np.testing.assert_allclose(np.asarray(plan.sigma), ref, rtol=1e-4, atol=1e-12)
        opts = smp.SampleOptions(std_floor=floor)
        zero = lambda p, x, k, c: jnp.zeros_like(x)
        chain = smp.sample_chain(
            zero, None, None, plan, jnp.zeros((2, 1, 1)), jax.random.key(0), (1, 1), 0, opts
        )
        last = float(chain.stds[-1])
        if rule == "dppo":
            assert last == pytest.approx(floor, rel=1e-6)
        else:
            assert last == pytest.approx(max(ref[-1], floor), rel=1e-4)
    default = smp.ddpm_plan(make_schedule(k_total))  # the default rule is DPPO's
    assert float(default.sigma[-1]) < 1e-9
    clipped_last = {5: 0.283, 10: 0.144, 20: 0.0}[k_total]
    if clipped_last:
        assert np_posterior_std(k_total, "ddpm_clipped")[0] == pytest.approx(clipped_last, abs=1e-3)


def test_ddim_eta0_is_deterministic_and_exact_for_point_mass():
    sched = make_schedule(20)
    c = jnp.array([0.25, -0.4])
    abar = sched.alphas_cumprod

    def perfect(params, x, k, cond):
        a = abar[k][:, None, None]
        return (x - jnp.sqrt(a) * c) / jnp.sqrt(1 - a)

    plan = smp.ddim_plan(sched, 5, 0.0)
    np.testing.assert_allclose(np.asarray(plan.sigma), 0.0, atol=1e-7)
    cond = jnp.zeros((64, 1, 1))
    opts = smp.SampleOptions(std_floor=0.0)
    a = smp.sample_chain(perfect, None, None, plan, cond, jax.random.key(3), (3, 2), 0, opts)
    np.testing.assert_allclose(np.asarray(a.xs[-1]), np.broadcast_to(c, (64, 3, 2)), atol=1e-5)
    # Deterministic mode with a real network: identical chains for any step noise.
    net = make_denoiser(DenoiserConfig(hidden=32, depth=1))
    x = jnp.zeros((4, 3, 2))
    params = net.init(jax.random.key(0), x, jnp.zeros(4, jnp.int32), jnp.zeros((4, 1, 5)))["params"]
    params = jax.tree.map(lambda p: p + 0.05, params)  # leave the zero-init output layer
    ap = apply_fn(net)
    cond = jax.random.normal(jax.random.key(9), (4, 1, 5))
    d1 = smp.sample_chain(
        ap,
        params,
        params,
        plan,
        cond,
        jax.random.key(5),
        (3, 2),
        5,
        smp.SampleOptions(std_floor=0.5),
        deterministic=True,
    )
    d2 = smp.sample_chain(
        ap,
        params,
        params,
        plan,
        cond,
        jax.random.key(5),
        (3, 2),
        5,
        smp.SampleOptions(std_floor=0.04),
        deterministic=True,
    )
    np.testing.assert_array_equal(np.asarray(d1.xs), np.asarray(d2.xs))


@pytest.fixture(scope="module")
def net_and_params():
    net = make_denoiser(DenoiserConfig(kind="mlp", hidden=32, depth=2))
    x = jnp.zeros((2, 4, 3))
    p1 = net.init(jax.random.key(0), x, jnp.zeros(2, jnp.int32), jnp.zeros((2, 2, 5)))["params"]
    # Non-zero output layer so that the network actually matters.
    p1 = jax.tree.map(lambda p: p + 0.02 * jax.random.normal(jax.random.key(1), p.shape), p1)
    p2 = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(2), p.shape), p1)
    return apply_fn(net), p1, p2


def test_chain_log_prob_equals_sum_of_scipy_logpdfs(sched, net_and_params):
    ap, p1, p2 = net_and_params
    plan = smp.ddpm_plan(sched)
    cond = jax.random.normal(jax.random.key(4), (6, 2, 5))
    opts = smp.SampleOptions(std_floor=0.1, noise_clip=3.0, x0_clip=1.0, final_clip=10.0)
    chain = smp.sample_chain(ap, p1, p2, plan, cond, jax.random.key(7), (4, 3), 4, opts)
    xs, means, stds = (np.asarray(a, np.float64) for a in chain)
    ref = sum(stats.norm.logpdf(xs[i + 1], means[i], stds[i]).sum(axis=(1, 2)) for i in range(K))
    got = smp.chain_log_prob(ap, p1, p2, plan, chain.xs, cond, 4, std_floor=0.1)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4)
    # The std floor was applied at every step (DDPM posterior stds are below 0.1 late in the chain).
    assert np.all(stds >= 0.1 - 1e-7)

    # DPPO's per-step likelihood: floor, clamp to [-5, 2], mean over executed actions and dims.
    n_exec = 2
    for i in (K - 4, K - 1):
        step = jnp.full((6,), i)
        lp = smp.step_log_prob(ap, p2, plan, step, chain.xs[i], chain.xs[i + 1], cond, n_exec, 0.1)
        ref_i = np.clip(stats.norm.logpdf(xs[i + 1], means[i], stds[i]), -5, 2)[:, :n_exec]
        np.testing.assert_allclose(np.asarray(lp), ref_i.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)


def test_frozen_trainable_split(sched, net_and_params):
    """The first N-K' steps use the frozen net: chains agree there and differ after."""
    ap, p1, p2 = net_and_params
    plan = smp.ddpm_plan(sched)
    cond = jax.random.normal(jax.random.key(4), (5, 2, 5))
    kft = 3
    a = smp.sample_chain(ap, p1, p2, plan, cond, jax.random.key(0), (4, 3), kft)
    b = smp.sample_chain(ap, p1, p1, plan, cond, jax.random.key(0), (4, 3), kft)
    np.testing.assert_array_equal(np.asarray(a.xs[: K - kft + 1]), np.asarray(b.xs[: K - kft + 1]))
    assert not np.allclose(np.asarray(a.xs[-1]), np.asarray(b.xs[-1]))
    assert np.all(np.abs(np.asarray(a.xs[-1])) <= 1.0)  # clean-action clip
    with pytest.raises(ValueError, match="num_ft"):
        smp.sample_chain(ap, p1, p2, plan, cond, jax.random.key(0), (4, 3), K + 1)


def test_noise_clip_bounds_each_step(sched):
    zero = lambda params, x, k, cond: jnp.zeros_like(x)
    plan = smp.ddpm_plan(sched)
    opts = smp.SampleOptions(std_floor=0.1, noise_clip=0.5, x0_clip=1.0, final_clip=5.0)
    ch = smp.sample_chain(
        zero, None, None, plan, jnp.zeros((512, 1, 1)), jax.random.key(0), (2, 2), 0, opts
    )
    dev = np.abs(np.asarray(ch.xs[1:] - ch.means)) / np.asarray(ch.stds)[:, None, None, None]
    assert dev.max() <= 0.5 + 1e-5 and dev.max() > 0.45


@pytest.mark.parametrize("kind", ["mlp", "dit"])
def test_denoisers_shapes_and_learn(kind, sched):
    """Both denoisers map [B,Ta,Da] -> [B,Ta,Da] and reduce the eps loss on a toy dataset."""
    cfg = DenoiserConfig(kind=kind, hidden=32, depth=1, heads=2)
    net = make_denoiser(cfg)
    b, ta, da, to, ds = 64, 4, 2, 2, 3
    cond = jax.random.normal(jax.random.key(0), (b, to, ds))
    x0 = jnp.tanh(cond[:, :1, :2] + jnp.linspace(-0.5, 0.5, ta)[None, :, None])
    params = net.init(jax.random.key(1), x0, jnp.zeros(b, jnp.int32), cond)["params"]
    ap = apply_fn(net)
    assert ap(params, x0, jnp.zeros(b, jnp.int32), cond).shape == (b, ta, da)
    import optax

    opt = optax.adam(3e-3)
    st = opt.init(params)

    @jax.jit
    def step(p, st, k):
        loss, g = jax.value_and_grad(lambda q: eps_loss(ap, q, sched, x0, cond, k))(p)
        u, st = opt.update(g, st)
        return optax.apply_updates(p, u), st, loss

    losses = []
    for k in jax.random.split(jax.random.key(2), 150):
        params, st, loss = step(params, st, k)
        losses.append(float(loss))
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:5])


def test_critic_shape():
    c = Critic(hidden=(16,))
    obs = jnp.ones((3, 2, 4))
    p = c.init(jax.random.key(0), obs)["params"]
    assert c.apply({"params": p}, obs).shape == (3,)


def test_mish_matches_numpy_reference_and_has_finite_gradients():
    x = np.concatenate([np.linspace(-60.0, 60.0, 4001), [-1e4, -88.0, 0.0, 19.9, 20.0, 20.1, 1e4]])
    x = x.astype(np.float32)
    x64 = x.astype(np.float64)
    t = np.tanh(np.logaddexp(0.0, x64))  # tanh(softplus(x))
    got = np.asarray(mish(jnp.asarray(x)))
    np.testing.assert_allclose(got, x64 * t, rtol=2e-6, atol=1e-6)
    # d/dx x tanh(sp(x)) = tanh(sp) + x sigmoid(x) (1 - tanh(sp)^2)
    dref = t + x64 / (1.0 + np.exp(-np.clip(x64, -700, 700))) * (1.0 - t**2)
    dgot = np.asarray(jax.vmap(jax.grad(mish))(jnp.asarray(x)))
    assert np.all(np.isfinite(dgot))
    np.testing.assert_allclose(dgot, dref, rtol=1e-5, atol=1e-5)
