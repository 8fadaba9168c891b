"""RL maths (GAE, PPO, DPPO, normalizers) against plain-loop / NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refine_dp_jax.rl.dppo import clip_schedule, dppo_loss, normalized_advantages
from refine_dp_jax.rl.gae import gae
from refine_dp_jax.rl.normalize import (
    reward_scale,
    reward_scaler_init,
    stats_init,
    stats_normalize,
    stats_update,
)
from refine_dp_jax.rl.ppo import ppo_loss

RNG = np.random.default_rng(0)


def loop_gae(r, v, nv, term, trunc, gamma, lam):
    """Per-environment reference written as an explicit backward loop."""
    t_len, b = r.shape
    adv = np.zeros((t_len, b))
    for j in range(b):
        last = 0.0
        for t in reversed(range(t_len)):
            if term[t, j]:
                delta = r[t, j] - v[t, j]  # no bootstrap after a termination
                last = delta
            elif trunc[t, j]:
                delta = r[t, j] + gamma * nv[t, j] - v[t, j]  # bootstrap, but cut the trace
                last = delta
            else:
                delta = r[t, j] + gamma * nv[t, j] - v[t, j]
                last = delta + gamma * lam * last
            adv[t, j] = last
    return adv


def test_gae_matches_loop_with_termination_and_truncation():
    t_len, b = 37, 5
    r = RNG.normal(size=(t_len, b))
    v = RNG.normal(size=(t_len, b))
    nv = RNG.normal(size=(t_len, b))
    term = RNG.random((t_len, b)) < 0.08
    trunc = (RNG.random((t_len, b)) < 0.08) & ~term
    adv, ret = gae(
        jnp.asarray(r), jnp.asarray(v), jnp.asarray(nv), jnp.asarray(term),
        jnp.asarray(term | trunc), 0.97, 0.9,
    )  # fmt: skip
    ref = loop_gae(r, v, nv, term, trunc, 0.97, 0.9)
    np.testing.assert_allclose(np.asarray(adv), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), ref + v, rtol=1e-5, atol=1e-5)
    # Truncation bootstraps, termination does not: they give different advantages.
    a_term, _ = gae(
        jnp.ones((1, 1)),
        jnp.zeros((1, 1)),
        jnp.ones((1, 1)),
        jnp.ones((1, 1)),
        jnp.ones((1, 1)),
        0.9,
        0.9,
    )
    a_trunc, _ = gae(
        jnp.ones((1, 1)),
        jnp.zeros((1, 1)),
        jnp.ones((1, 1)),
        jnp.zeros((1, 1)),
        jnp.ones((1, 1)),
        0.9,
        0.9,
    )
    assert float(a_term[0, 0]) == pytest.approx(1.0)
    assert float(a_trunc[0, 0]) == pytest.approx(1.9)


def np_norm_adv(a, ddof=0):
    return (a - a.mean()) / (a.std(ddof=ddof) + 1e-8)


def test_ppo_loss_matches_numpy():
    m, da = 64, 3
    mean = RNG.normal(size=(m, da))
    log_std = RNG.normal(size=(da,)) * 0.3
    act = mean + RNG.normal(size=(m, da)) * np.exp(log_std)
    old_lp = RNG.normal(size=(m,)) - 3
    adv = RNG.normal(size=(m,))
    ret = RNG.normal(size=(m,))
    val = RNG.normal(size=(m,))
    out = ppo_loss(
        *(jnp.asarray(x) for x in (mean, log_std, val, act, old_lp, adv, ret)),
        clip_eps=0.2,
        vf_coef=0.5,
        ent_coef=0.01,
    )
    from scipy import stats

    lp = stats.norm.logpdf(act, mean, np.exp(log_std)).sum(-1)
    ratio = np.exp(lp - old_lp)
    a = np_norm_adv(adv)
    pg = np.mean(np.maximum(-a * ratio, -a * np.clip(ratio, 0.8, 1.2)))
    vl = np.mean((val - ret) ** 2)
    ent = stats.norm.entropy(0, np.exp(log_std)).sum()
    np.testing.assert_allclose(float(out.pg_loss), pg, rtol=1e-4)
    np.testing.assert_allclose(float(out.loss), pg + 0.5 * vl - 0.01 * ent, rtol=1e-4)
    np.testing.assert_allclose(float(out.entropy), ent, rtol=1e-5)


def test_clip_schedule_end_points_and_formula():
    kp = 10
    eps = np.asarray(clip_schedule(jnp.arange(kp), kp, 0.01, 0.001))
    assert eps[0] == pytest.approx(0.001)
    assert eps[-1] == pytest.approx(0.01)
    i = np.arange(kp)
    ref = 0.001 + (0.01 - 0.001) * (np.exp(3 * i / (kp - 1)) - 1) / (np.exp(3) - 1)
    np.testing.assert_allclose(eps, ref, rtol=1e-5)
    assert np.all(np.diff(eps) > 0)
    assert float(clip_schedule(jnp.zeros((1,), jnp.int32), 1, 0.02, 0.001)[0]) == pytest.approx(
        0.02
    )


def test_dppo_loss_matches_numpy():
    m, kp = 96, 5
    new = RNG.normal(size=(m,)) * 0.02
    old = new + RNG.normal(size=(m,)) * 0.02
    adv = RNG.normal(size=(m,))
    step = RNG.integers(0, kp, size=(m,))
    val = RNG.normal(size=(m,))
    ret = RNG.normal(size=(m,))
    out = dppo_loss(
        jnp.asarray(new),
        jnp.asarray(old),
        jnp.asarray(adv),
        jnp.asarray(step),
        jnp.asarray(val),
        jnp.asarray(ret),
        kp,
        0.01,
        0.002,
        0.9,
        0.5,
    )
    a = np_norm_adv(adv, ddof=1) * 0.9 ** (kp - 1 - step)  # torch's unbiased std, as DPPO
    eps = 0.002 + 0.008 * (np.exp(3 * step / (kp - 1)) - 1) / (np.exp(3) - 1)
    ratio = np.exp(new - old)
    pg = np.mean(np.maximum(-a * ratio, -a * np.clip(ratio, 1 - eps, 1 + eps)))
    vl = np.mean((val - ret) ** 2)
    np.testing.assert_allclose(float(out.pg_loss), pg, rtol=1e-4)
    np.testing.assert_allclose(float(out.loss), pg + 0.5 * vl, rtol=1e-4)
    assert 0 < float(out.clip_frac) < 1


def test_dppo_advantage_normalization_unbiased_and_constant_batches():
    """Unbiased std (DPPO's torch ``std``), and a batch constant to float32 rounding gives
    zero advantages and a zero policy loss, not +-1 from normalized rounding noise."""
    adv = RNG.normal(size=(10,)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(normalized_advantages(jnp.asarray(adv))), np_norm_adv(adv, ddof=1), rtol=1e-5
    )
    m, kp = 96, 5
    step = jnp.asarray(RNG.integers(0, kp, size=(m,)))
    new = jnp.asarray(RNG.normal(size=(m,)) * 0.02, jnp.float32)
    old = new + jnp.asarray(RNG.normal(size=(m,)) * 0.02, jnp.float32)
    for value in (0.0, 5.0, -0.37, 1234.5):
        const = jnp.full((m,), value, jnp.float32)
        assert np.all(np.asarray(normalized_advantages(const)) == 0.0)
        out = dppo_loss(new, old, const, step, jnp.zeros(m), jnp.zeros(m), kp, 0.01, 0.002)
        assert float(out.pg_loss) == 0.0
        da = 2
        mu = jnp.zeros((m, da))
        ppo = ppo_loss(mu, jnp.zeros(da), jnp.zeros(m), mu + 0.1, old, const, jnp.zeros(m))
        assert float(ppo.pg_loss) == 0.0  # Gaussian PPO's normalization has the same guard
    # A small but real spread is still normalized.
    spread = jnp.asarray(5.0 + 1e-3 * RNG.normal(size=(m,)), jnp.float32)
    z = np.asarray(normalized_advantages(spread))
    assert abs(z.std(ddof=1) - 1.0) < 1e-2


def test_running_stats_equal_full_batch_moments():
    data = RNG.normal(loc=2.0, scale=3.0, size=(1000, 4))
    st = stats_init(4)
    for chunk in np.split(data, [7, 300, 301, 800]):
        st = stats_update(st, jnp.asarray(chunk))
    np.testing.assert_allclose(np.asarray(st.mean), data.mean(0), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(st.var), data.var(0), rtol=1e-4)
    z = np.asarray(stats_normalize(st, jnp.asarray(data)))
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)


def test_reward_scaler_matches_loop():
    t_len, b, gamma = 20, 3, 0.9
    r = RNG.normal(size=(t_len, b))
    d = RNG.random((t_len, b)) < 0.1
    sc, scaled = reward_scale(reward_scaler_init(b), jnp.asarray(r), jnp.asarray(d), gamma)
    ret = np.zeros(b)
    rets = []
    for t in range(t_len):
        ret = ret * gamma + r[t]
        rets.append(ret.copy())
        ret = ret * (1 - d[t])
    rets = np.stack(rets)
    np.testing.assert_allclose(np.asarray(scaled), r / np.sqrt(rets.var() + 1e-8), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(sc.ret), ret, rtol=1e-5, atol=1e-6)


def test_gae_is_jittable_and_vmappable():
    f = jax.jit(
        jax.vmap(lambda r: gae(r, r, r, r * 0, r * 0, 0.99, 0.95)[0], in_axes=1, out_axes=1)
    )
    assert f(jnp.ones((4, 3))).shape == (4, 3)


def test_weighted_ppo_loss_equals_loss_on_kept_samples():
    """Weight 0 removes a sample exactly: same loss as on the subset."""
    m, da = 40, 2
    args = [
        RNG.normal(size=(m, da)), RNG.normal(size=(da,)) * 0.2, RNG.normal(size=(m,)),
        RNG.normal(size=(m, da)), RNG.normal(size=(m,)) - 2, RNG.normal(size=(m,)),
        RNG.normal(size=(m,)),
    ]  # fmt: skip
    keep = RNG.random(m) < 0.6
    full = ppo_loss(*(jnp.asarray(a) for a in args), weight=jnp.asarray(keep, jnp.float32))
    sub = [a if i == 1 else a[keep] for i, a in enumerate(args)]
    ref = ppo_loss(*(jnp.asarray(a) for a in sub))
    np.testing.assert_allclose(float(full.loss), float(ref.loss), rtol=1e-5)
    np.testing.assert_allclose(float(full.approx_kl), float(ref.approx_kl), rtol=1e-4, atol=1e-7)


def test_weighted_running_stats_ignore_masked_rows():
    data = RNG.normal(size=(50, 3))
    keep = RNG.random(50) < 0.5
    st = stats_update(stats_init(3), jnp.asarray(data), jnp.asarray(keep, jnp.float32))
    np.testing.assert_allclose(np.asarray(st.mean), data[keep].mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(st.var), data[keep].var(0), rtol=1e-4)


def test_llc_learn_updates_input_stats_only_when_asked():
    """``llc_learn(..., update_stats=False)`` (joint phase, ``finetune.llc_update_stats``)
    leaves the running input statistics as they were; the default folds the batch in."""
    from refine_dp_jax.train.gaussian_ppo import PPOConfig, make_gaussian_ppo
    from refine_dp_jax.train.llc import LLCTransition, llc_learn

    t_len, b, do, dp, da = 4, 2, 3, 5, 2
    cfg = PPOConfig(epochs=1, minibatches=2, actor_hidden=(8,), critic_hidden=(8,))
    ppo = make_gaussian_ppo(cfg, do, dp, da, t_len * b)
    learner = ppo.init(jax.random.PRNGKey(0))
    f = lambda *shape: jnp.asarray(RNG.normal(loc=1.0, size=(t_len, b, *shape)), jnp.float32)
    zeros = jnp.zeros((t_len, b))
    tr = LLCTransition(obs=f(do), privileged_obs=f(dp), action=f(da), log_prob=zeros - 1.0,
                       reward=f(), done=zeros, terminated=zeros, value=zeros,
                       next_value=zeros, valid=zeros + 1.0)  # fmt: skip
    frozen, _ = llc_learn(ppo, learner, tr, cfg, jax.random.PRNGKey(1), update_stats=False)
    updated, _ = llc_learn(ppo, learner, tr, cfg, jax.random.PRNGKey(1))
    for before, after in ((learner.actor_stats, frozen.actor_stats),
                          (learner.critic_stats, frozen.critic_stats)):  # fmt: skip
        for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    want = stats_update(learner.actor_stats, tr.obs.reshape(-1, do))
    np.testing.assert_allclose(np.asarray(updated.actor_stats.mean), np.asarray(want.mean),
                               rtol=1e-6)  # fmt: skip
    assert not np.allclose(
        np.asarray(updated.actor_stats.mean), np.asarray(learner.actor_stats.mean)
    )
    # the parameters take the same PPO step either way (the statistics are updated after it)
    for x, y in zip(jax.tree.leaves(frozen.params), jax.tree.leaves(updated.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_llc_critic_warmup_step_leaves_the_actor_and_fills_its_adam_moments():
    """``llc_learn(..., actor_lr_scale=0)`` (``finetune.llc_critic_warmup``): the actor's
    parameters and log-std stay as they were, the critic takes the same steps as in a full
    update (its loss does not depend on the actor), the actor's Adam moments follow the
    gradients (the first real step is then not a fresh Adam's sign-sized one)."""
    from refine_dp_jax.train.gaussian_ppo import PPOConfig, make_gaussian_ppo
    from refine_dp_jax.train.llc import LLCTransition, llc_learn

    t_len, b, do, dp, da = 4, 2, 3, 5, 2
    cfg = PPOConfig(epochs=2, minibatches=2, actor_hidden=(8,), critic_hidden=(8,))
    ppo = make_gaussian_ppo(cfg, do, dp, da, t_len * b)
    learner = ppo.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(3)  # its own draws: the module's RNG feeds the tests below
    f = lambda *shape: jnp.asarray(rng.normal(size=(t_len, b, *shape)), jnp.float32)
    zeros = jnp.zeros((t_len, b))
    tr = LLCTransition(obs=f(do), privileged_obs=f(dp), action=f(da), log_prob=zeros - 1.0,
                       reward=f(), done=zeros, terminated=zeros, value=zeros,
                       next_value=zeros, valid=zeros + 1.0)  # fmt: skip
    key = jax.random.PRNGKey(1)
    warm, _ = llc_learn(ppo, learner, tr, cfg, key, False, actor_lr_scale=0.0)
    full, _ = llc_learn(ppo, learner, tr, cfg, key, False)
    leaves = lambda t: [np.asarray(x) for x in jax.tree.leaves(t)]  # noqa: E731
    for x, y in zip(leaves((learner.params.actor, learner.params.log_std)),
                    leaves((warm.params.actor, warm.params.log_std)), strict=True):  # fmt: skip
        np.testing.assert_array_equal(x, y)
    before, after = leaves(learner.params.actor), leaves(full.params.actor)
    assert any(not np.allclose(x, y) for x, y in zip(before, after, strict=True))
    for x, y in zip(leaves(warm.params.critic), leaves(full.params.critic), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    assert not np.allclose(leaves(warm.params.critic)[0], leaves(learner.params.critic)[0])
    mu = leaves(warm.actor_opt.mu)
    assert all(np.all(np.isfinite(m)) for m in mu) and any(np.abs(m).max() > 0 for m in mu)


def test_kl_adaptive_learning_rate_follows_the_rule():
    """PPOConfig.desired_kl: each minibatch divides the actor lr by 1.5 when its KL from the
    rollout policy exceeds 2 x desired_kl, multiplies it by 1.5 below desired_kl / 2, within
    lr_bounds; desired_kl = 0 keeps the configured lr."""
    from refine_dp_jax.train.gaussian_ppo import PPOBatch, PPOConfig, make_gaussian_ppo

    m, dx, da = 8, 3, 2
    x = jnp.asarray(RNG.normal(size=(m, dx)), jnp.float32)
    act = jnp.asarray(RNG.normal(size=(m, da)), jnp.float32)
    ones = jnp.ones((m,))

    def lr_after(desired_kl, far: bool, bounds=(1e-5, 1e-2)):
        cfg = PPOConfig(lr=1e-3, epochs=2, minibatches=2, actor_hidden=(8,), critic_hidden=(8,),
                        desired_kl=desired_kl, lr_bounds=bounds)  # fmt: skip
        ppo = make_gaussian_ppo(cfg, dx, dx, da, m)
        learner = ppo.init(jax.random.PRNGKey(0))
        _, logp = ppo.act(learner, x, jax.random.PRNGKey(0), True)
        logp = jnp.broadcast_to(logp, (m,))
        # far: the rollout policy gave these actions a much higher likelihood (KL >> 0.01)
        batch = PPOBatch(actor_in=x, critic_in=x, action=act,
                         log_prob=logp + (3.0 if far else 0.0) * ones, advantage=ones,
                         ret=ones, weight=ones)  # fmt: skip
        new, metrics = ppo.update(learner, batch, jax.random.PRNGKey(1))
        assert float(metrics["lr"]) == float(new.lr)
        return float(new.lr)

    four = 2 * 2  # epochs x minibatches
    np.testing.assert_allclose(lr_after(0.01, far=True), 1e-3 / 1.5**four, rtol=1e-5)
    np.testing.assert_allclose(lr_after(10.0, far=False), 1e-3 * 1.5**four, rtol=1e-5)
    np.testing.assert_allclose(lr_after(10.0, far=False, bounds=(1e-5, 2e-3)), 2e-3, rtol=1e-6)
    np.testing.assert_allclose(lr_after(0.0, far=True), 1e-3, rtol=1e-7)


def test_first_episode_returns_to_go_match_a_per_env_loop():
    from experiments.dppo_snr import returns_to_go

    t_len, b, gamma = 7, 5, 0.9
    reward = RNG.integers(0, 2, (t_len, b)).astype(float) * RNG.uniform(0.5, 2.0, (t_len, b))
    done = np.zeros((t_len, b))
    done[2, 0] = done[5, 0] = 1  # two episodes: only the first counts
    done[6, 1] = 1  # ends on the last decision
    done[0, 2] = 1  # one-decision episode
    done[3, 4] = 1  # env 3 never ends: masked out entirely
    ret, valid = returns_to_go(reward, done, gamma)
    for j in range(b):
        ends = np.flatnonzero(done[:, j])
        if not len(ends):
            assert not valid[:, j].any()
            continue
        end = ends[0]
        assert valid[: end + 1, j].all() and not valid[end + 1 :, j].any()
        for t in range(end + 1):
            want = sum(gamma ** (k - t) * reward[k, j] for k in range(t, end + 1))
            assert ret[t, j] == pytest.approx(want)


def test_gradient_snr_recovers_a_known_signal_and_a_null():
    from experiments.dppo_snr import gradient_stats

    dim, m = 4000, 40
    s = RNG.normal(size=dim) * 0.1  # |s|^2 ~ 40
    noise = RNG.normal(size=(m, dim)) * 0.5  # |n|^2 ~ 1000
    st = gradient_stats(list(s + noise))
    assert st["signal_sq"] == pytest.approx(np.sum(s**2), rel=0.25)
    assert (
        0 < st["signal_sq_stderr"]
        and abs(st["signal_sq"] - np.sum(s**2)) < 4 * st["signal_sq_stderr"]
    )
    assert st["noise_sq"] == pytest.approx(0.25 * dim, rel=0.05)
    assert st["noise_to_signal"] == pytest.approx(0.25 * dim / np.sum(s**2), rel=0.3)
    null = gradient_stats(list(noise))
    assert abs(null["signal_sq"]) < 0.2 * np.sum(s**2)
    assert abs(null["signal_sq"]) < 4 * null["signal_sq_stderr"]
    assert abs(null["mean_cosine"]) < 0.01
