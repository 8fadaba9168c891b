"""The DPPO learner's estimators: stored log-likelihoods read off the sampler, and the critic
fitted once per decision, each against the slower reference computation it replaces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refine_dp_jax.config import DiffusionConfig, DPPOConfig
from refine_dp_jax.diffusion.networks import Critic, DenoiserConfig, make_denoiser
from refine_dp_jax.train.dppo import DPPOBatch, make_dppo

N, TO, DS, TA, DA = 24, 2, 3, 4, 2  # decisions, history, obs dim, chunk, action dim


@pytest.fixture(scope="module")
def setup():
    dcfg = DiffusionConfig(
        obs_history=TO, horizon=TA, exec_steps=2, num_steps=10, ft_steps=5,
        denoiser=DenoiserConfig(hidden=32, depth=1, time_dim=8),
    )  # fmt: skip
    den, critic = make_denoiser(dcfg.denoiser), Critic(hidden=(16, 16))
    k1, k2, k3, k4, k5 = jax.random.split(jax.random.key(0), 5)
    cond = jax.random.normal(k1, (N, TO, DS))
    params = den.init(k2, jnp.zeros((1, TA, DA)), jnp.zeros((1,), jnp.int32), cond[:1])["params"]
    # Non-zero last layer, so the denoiser is not the zero function of its initialization.
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(k3, p.shape), params)
    c_params = critic.init(k4, cond[:1])["params"]
    pcfg = lambda per_dec: DPPOConfig(minibatches=4, critic_per_decision=per_dec)
    fns = {per_dec: make_dppo(den, critic, dcfg, pcfg(per_dec), DA) for per_dec in (True, False)}
    learner = fns[True].init(params, c_params, N)
    chain = fns[True].sample(learner.actor, learner.frozen, learner.hyper, cond, k5, False)
    xs = jnp.moveaxis(chain.xs[-(dcfg.ft_steps + 1) :], 0, 1)
    batch = DPPOBatch(
        cond=cond, xs=xs, old_log_prob=fns[True].sampled_log_probs(learner.hyper, chain),
        advantages=jax.random.normal(k1, (N,)), returns=jax.random.normal(k2, (N,)),
    )  # fmt: skip
    return dcfg, fns, learner, batch


def test_sampled_log_probs_equal_a_second_network_pass(setup):
    """Old log-likelihoods from the sampler's means = recomputing the K' steps' means."""
    _, fns, learner, batch = setup
    ref = fns[True].log_probs(learner.actor, learner.hyper, batch.cond, batch.xs)
    assert ref.shape == batch.old_log_prob.shape == (N, 5)
    np.testing.assert_allclose(np.asarray(batch.old_log_prob), np.asarray(ref), atol=2e-5)
    # Not a vacuous match: the clamp does not pin every value to its bounds.
    assert np.unique(np.round(np.asarray(ref), 4)).size > N


def _grads(fns, learner, batch, pair_idx, dec_idx):
    g, out = jax.grad(fns.loss, has_aux=True)(
        (learner.actor, learner.critic), learner, batch, pair_idx, dec_idx
    )
    return g, out


def test_critic_per_decision_has_the_per_pair_gradient_in_expectation(setup):
    """Over all pairs, the per-pair critic loss weights every decision K' times: its gradient
    equals the per-decision loss's over all decisions. Per-decision minibatches partition the
    decisions, so the mean of their gradients (what a uniform random minibatch gives in
    expectation) is that same gradient. The actor's gradient does not depend on the mode."""
    dcfg, fns, learner, batch = setup
    pairs = jnp.arange(N * dcfg.ft_steps)
    g_pair, out_pair = _grads(fns[False], learner, batch, pairs, None)
    g_dec, out_dec = _grads(fns[True], learner, batch, pairs, jnp.arange(N))
    close = lambda a, b: jax.tree.map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=1e-7),
        a, b,
    )  # fmt: skip
    close(g_dec[1], g_pair[1])
    close(g_dec[0], g_pair[0])
    assert float(out_dec.v_loss) == pytest.approx(float(out_pair.v_loss), rel=1e-5)
    assert float(out_dec.loss) == pytest.approx(float(out_pair.loss), rel=1e-5)
    perm = jax.random.permutation(jax.random.key(3), N).reshape(4, N // 4)
    g_mb = [_grads(fns[True], learner, batch, pairs, p)[0][1] for p in perm]
    close(jax.tree.map(lambda *g: sum(g) / len(g), *g_mb), g_pair[1])
    # A single minibatch is a different (noisy) estimate, so the check above can fail.
    assert not np.allclose(
        np.asarray(jax.tree.leaves(g_mb[0])[0]), np.asarray(jax.tree.leaves(g_pair[1])[0])
    )


def test_update_fits_the_critic_in_both_modes(setup):
    """Both modes reduce the value loss on a fixed batch; the per-decision one by as much."""
    _, fns, learner, batch = setup
    v0 = float(jnp.mean(jnp.square(fns[True].value(learner.critic, batch.cond) - batch.returns)))
    for per_dec in (True, False):
        lrn = learner
        for k in jax.random.split(jax.random.key(1), 10):
            lrn, _ = jax.jit(fns[per_dec].update)(lrn, batch, k)
        v = float(jnp.mean(jnp.square(fns[per_dec].value(lrn.critic, batch.cond) - batch.returns)))
        assert v < 0.7 * v0, (per_dec, v, v0)


def test_critic_epochs_fit_the_returns_and_leave_the_actor_alone(setup):
    """``critic_epochs``: extra critic-only passes after the DPPO epochs. With one epoch of
    one minibatch (the humanoid tasks' regime) the actor's step is the same with or without
    them, and the critic's squared error on the batch's returns falls well below what the
    one joint step leaves."""
    dcfg, fns, learner, batch = setup
    den, critic = make_denoiser(dcfg.denoiser), Critic(hidden=(16, 16))
    cfg = lambda e: DPPOConfig(epochs=1, minibatches=1, critic_warmup_iters=0, critic_epochs=e)
    out = {}
    for e in (0, 100):
        f = make_dppo(den, critic, dcfg, cfg(e), DA)
        new, metrics = jax.jit(f.update)(learner, batch, jax.random.key(7))
        v = f.value(new.critic, batch.cond)
        out[e] = (new, float(jnp.mean(jnp.square(v - batch.returns))), metrics)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6),
        out[0][0].actor, out[100][0].actor,
    )  # fmt: skip
    assert not np.allclose(np.asarray(jax.tree.leaves(out[0][0].actor)[0]),
                           np.asarray(jax.tree.leaves(learner.actor)[0]))  # fmt: skip
    before = float(
        jnp.mean(jnp.square(fns[True].value(learner.critic, batch.cond) - batch.returns))
    )
    assert out[100][1] < 0.6 * min(before, out[0][1]), (before, out[0][1], out[100][1])
    assert out[100][2]["v_loss_after_critic_epochs"].shape == ()
    assert "v_loss_after_critic_epochs" not in out[0][2]


def test_update_reports_how_far_it_moved_the_policy(setup):
    """``kl_after_update``: E[r - 1 - log r] of the stored pairs under the updated actor (all
    N K' = 120 pairs here, fewer than ``KL_PAIRS``), against a NumPy evaluation of the same
    estimator. With one Adam step per update the loss's ``approx_kl``, measured before the
    step, is ~0; the step's own KL is not. During the critic warm-up the actor stays and so
    does the KL (0 up to the stored log-likelihoods' float error)."""
    dcfg, fns, learner, batch = setup
    den, critic = make_denoiser(dcfg.denoiser), Critic(hidden=(16, 16))
    one_step = lambda warmup: DPPOConfig(
        epochs=1, minibatches=1, critic_warmup_iters=warmup, actor_lr=3e-2
    )
    f = make_dppo(den, critic, dcfg, one_step(0), DA)
    start = f.init(learner.actor, learner.critic, N)  # the config's learning rate
    new, m = jax.jit(f.update)(start, batch, jax.random.key(11))
    lr = np.asarray(f.log_probs(new.actor, new.hyper, batch.cond, batch.xs), np.float64)
    lr -= np.asarray(batch.old_log_prob, np.float64)
    oracle = np.mean(np.expm1(lr) - lr)
    assert oracle > 1e-5, oracle
    assert float(m["kl_after_update"]) == pytest.approx(oracle, rel=1e-3, abs=1e-8)
    assert abs(float(m["approx_kl"])) < 1e-2 * oracle
    f_warm = make_dppo(den, critic, dcfg, one_step(5), DA)
    start = f_warm.init(learner.actor, learner.critic, N)
    _, m_warm = jax.jit(f_warm.update)(start, batch, jax.random.key(11))
    assert abs(float(m_warm["kl_after_update"])) < 1e-2 * oracle
