"""A probe task that proves the DPPO gradient end to end in seconds.

One-step contextual bandit. Context s ~ U[-1, 1]^2. Demonstrations are bimodal:
a = 0.5 s + m * (0.4, 0.4) + N(0, 0.05^2), m = +-1 with equal probability. Only the "+" mode
is rewarded: r = 1 if |a - (0.5 s + (0.4, 0.4))| < 0.25 else 0. A DP pre-trained on the demos
lands about half its samples in the rewarded mode; DPPO on the sparse reward must push that
fraction above 95 % on held-out contexts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from refine_dp_jax.config import DiffusionConfig, DPPOConfig, PretrainConfig, check_divisible
from refine_dp_jax.diffusion.networks import Critic, DenoiserConfig, make_denoiser
from refine_dp_jax.diffusion.schedule import make_schedule
from refine_dp_jax.train.dppo import DPPOBatch, make_dppo
from refine_dp_jax.train.pretrain import make_pretrain_epoch, pretrain_init

CTX_DIM = 2
ACT_DIM = 2
OFFSET = 0.4
RADIUS = 0.25


@dataclass(frozen=True)
class BanditProbeConfig:
    seed: int = 0
    num_demos: int = 4096
    diffusion: DiffusionConfig = field(
        default_factory=lambda: DiffusionConfig(
            obs_history=1,
            horizon=1,
            exec_steps=1,
            num_steps=10,
            sampler="ddpm",
            ft_steps=5,
            denoiser=DenoiserConfig(kind="mlp", hidden=64, depth=2, time_dim=16),
        )  # fmt: skip
    )
    pretrain: PretrainConfig = field(
        default_factory=lambda: PretrainConfig(steps=3000, batch_size=256, lr=2e-3, ema_decay=0.99)
    )
    dppo: DPPOConfig = field(
        default_factory=lambda: DPPOConfig(
            actor_lr=3e-4,
            critic_lr=3e-3,
            clip_eps=0.1,
            clip_eps_base=0.05,
            epochs=4,
            minibatches=4,
            reward_scaling=False,
            critic_warmup_iters=0,
        )  # fmt: skip
    )
    num_envs: int = 256  # contexts per DPPO iteration
    iterations: int = 40
    eval_contexts: int = 1024

    def __post_init__(self):
        check_divisible(
            self.num_envs * self.diffusion.ft_steps, self.dppo.minibatches, "DPPO update"
        )


def mode_center(s: jax.Array, sign: float) -> jax.Array:
    return 0.5 * s + sign * OFFSET


def reward(s: jax.Array, a: jax.Array) -> jax.Array:
    """s, a: [B, 2] -> [B] in {0, 1}."""
    return (jnp.linalg.norm(a - mode_center(s, 1.0), axis=-1) < RADIUS).astype(jnp.float32)


def demos(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Returns (contexts [n, 1, 2], actions [n, 1, 2])."""
    ks, km, kn = jax.random.split(key, 3)
    s = jax.random.uniform(ks, (n, CTX_DIM), minval=-1.0, maxval=1.0)
    m = jnp.where(jax.random.bernoulli(km, 0.5, (n, 1)), 1.0, -1.0)
    a = mode_center(s, 1.0) * (m > 0) + mode_center(s, -1.0) * (m < 0)
    a = a + 0.05 * jax.random.normal(kn, a.shape)
    return s[:, None], a[:, None]


def run_bandit_probe(cfg: BanditProbeConfig = BanditProbeConfig()) -> dict[str, float]:
    """Pre-trains, measures, fine-tunes with DPPO, measures again. Returns the fractions."""
    dcfg, pcfg = cfg.diffusion, cfg.dppo
    key = jax.random.key(cfg.seed)
    k_demo, k_init, k_pre, k_crit, k_ft, k_eval = jax.random.split(key, 6)
    ctx, act = demos(k_demo, cfg.num_demos)

    denoiser = make_denoiser(dcfg.denoiser)
    critic = Critic(hidden=(64, 64))
    params = denoiser.init(k_init, act[:2], jnp.zeros((2,), jnp.int32), ctx[:2])["params"]
    pre = jax.jit(
        make_pretrain_epoch(
            lambda p, *a: denoiser.apply({"params": p}, *a),
            make_schedule(dcfg.num_steps),
            cfg.pretrain,
            cfg.pretrain.steps,
        )
    )
    state, losses = pre(pretrain_init(params), act, ctx, k_pre)

    fns = make_dppo(denoiser, critic, dcfg, pcfg, ACT_DIM, cfg.num_envs * dcfg.ft_steps)
    critic_params = critic.init(k_crit, ctx[:2])["params"]
    learner = fns.init(state.ema, critic_params, cfg.num_envs)

    @jax.jit
    def evaluate(learner, key):
        kc, ks = jax.random.split(key)
        s = jax.random.uniform(kc, (cfg.eval_contexts, CTX_DIM), minval=-1.0, maxval=1.0)
        out = {}
        for name, det in (("deterministic", True), ("stochastic", False)):
            chain = fns.sample(learner.actor, learner.frozen, learner.hyper, s[:, None], ks, det)
            a = chain.xs[-1][:, 0]
            out[name] = jnp.mean(reward(s, a))
            # Which mode a sample is nearer to (the demos' split is 50/50).
            d_plus = jnp.linalg.norm(a - mode_center(s, 1.0), axis=-1)
            d_minus = jnp.linalg.norm(a - mode_center(s, -1.0), axis=-1)
            out[name + "_mode"] = jnp.mean((d_plus < d_minus).astype(jnp.float32))
        return out

    @jax.jit
    def iteration(learner, key):
        kc, ks, ku = jax.random.split(key, 3)
        s = jax.random.uniform(kc, (cfg.num_envs, CTX_DIM), minval=-1.0, maxval=1.0)[:, None]
        chain = fns.sample(learner.actor, learner.frozen, learner.hyper, s, ks, False)
        xs = jnp.moveaxis(chain.xs[-(dcfg.ft_steps + 1) :], 0, 1)  # [B, K'+1, Ta, Da]
        r = reward(s[:, 0], xs[:, -1, 0])
        old_lp = fns.sampled_log_probs(learner.hyper, chain)
        v = fns.value(learner.critic, s)
        # One-step episodes: GAE reduces to A = r - V(s), returns = r.
        batch = DPPOBatch(cond=s, xs=xs, old_log_prob=old_lp, advantages=r - v, returns=r)
        learner, metrics = fns.update(learner, batch, ku)
        return learner, {**metrics, "reward": jnp.mean(r)}

    before = evaluate(learner, k_eval)
    history = []
    for k in jax.random.split(k_ft, cfg.iterations):
        learner, m = iteration(learner, k)
        history.append(float(m["reward"]))
    after = evaluate(learner, k_eval)
    return {
        "pretrain_loss_first": float(losses[:50].mean()),
        "pretrain_loss_last": float(losses[-50:].mean()),
        "rewarded_before": float(before["stochastic"]),
        "rewarded_before_deterministic": float(before["deterministic"]),
        "rewarded_after": float(after["stochastic"]),
        "rewarded_after_deterministic": float(after["deterministic"]),
        "plus_mode_before": float(before["stochastic_mode"]),
        "plus_mode_after": float(after["stochastic_mode"]),
        "train_reward_curve": history,
    }


def with_overrides(cfg: BanditProbeConfig, **kw) -> BanditProbeConfig:
    return dataclasses.replace(cfg, **kw)
