"""A Gaussian-policy PPO learner, shared by the LLC and by the MLP+PPO baseline planner.

The policy is N(mu(norm(x)), diag(exp(log_std))^2) with a state-independent log-std; the
critic sees its own (possibly privileged) normalized input. Inputs are normalized with running
statistics that are part of the learner state.

Shape legend: M samples (flattened time x envs), Dx actor input, Dv critic input, Da action.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from refine_dp_jax.config import (
    DISCOUNT,
    NONNEG,
    ONE_PLUS,
    POSITIVE,
    UNIT,
    WIDTHS,
    Rule,
    check_divisible,
    check_fields,
)
from refine_dp_jax.diffusion.networks import MLP
from refine_dp_jax.rl.normalize import RunningStats, stats_init, stats_normalize, stats_update
from refine_dp_jax.rl.ppo import diag_gaussian_log_prob, ppo_loss
from refine_dp_jax.train.optim import adam_apply, adam_init

LR_BOUNDS = Rule(lambda v: len(v) == 2 and 0 < v[0] <= v[1], "(low, high) with 0 < low <= high")


@dataclass(frozen=True)
class PPOConfig:
    """Gaussian PPO hyperparameters (LLC and MLP baseline)."""

    lr: float = 3e-4
    critic_lr: float = 1e-3
    clip_eps: float = 0.2
    gamma: float = 0.97
    gae_lambda: float = 0.95
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    epochs: int = 4
    minibatches: int = 4
    max_grad_norm: float = 1.0
    init_log_std: float = -0.7
    min_log_std: float = -3.0
    actor_hidden: tuple[int, ...] = (128, 128)
    critic_hidden: tuple[int, ...] = (128, 128)
    normalize_inputs: bool = True
    # KL-adaptive actor learning rate (the schedule of legged-robot PPO, e.g. rsl_rl): after
    # each minibatch's approximate KL from the rollout policy, lr /= 1.5 when KL > 2 x this,
    # lr *= 1.5 when KL < this / 2, within [lr_bounds]; 0: the fixed ``lr``. Measured on the
    # committed standing LLC (std ~0.14; its run at a fixed 3e-4 ended at KL 0.06, half the
    # samples clipped): at 0.01 the rate fell to the 1e-5 floor within 5 iterations and KL
    # stayed ~0.016 there; 150 more iterations improved nothing. Off by default.
    desired_kl: float = 0.0
    lr_bounds: tuple[float, float] = (1e-5, 1e-2)

    def __post_init__(self):
        check_fields(self, {
            "desired_kl": NONNEG,
            "lr": POSITIVE, "critic_lr": POSITIVE, "clip_eps": POSITIVE, "gamma": DISCOUNT,
            "gae_lambda": UNIT, "ent_coef": NONNEG, "vf_coef": NONNEG, "epochs": ONE_PLUS,
            "minibatches": ONE_PLUS, "max_grad_norm": NONNEG, "actor_hidden": WIDTHS,
            "critic_hidden": WIDTHS, "lr_bounds": LR_BOUNDS,
        })  # fmt: skip


@struct.dataclass
class GaussianParams:
    actor: Any
    critic: Any
    log_std: jax.Array  # [Da]


@struct.dataclass
class GaussianLearner:
    params: GaussianParams
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    actor_stats: RunningStats  # normalization of the actor input
    critic_stats: RunningStats  # normalization of the critic input
    iteration: jax.Array
    lr: jax.Array  # [] the actor learning rate (moves only with PPOConfig.desired_kl > 0)


class PPOBatch(NamedTuple):
    actor_in: jax.Array  # [M, Dx]
    critic_in: jax.Array  # [M, Dv]
    action: jax.Array  # [M, Da] the sampled (unclipped) action
    log_prob: jax.Array  # [M]
    advantage: jax.Array  # [M]
    ret: jax.Array  # [M]
    weight: jax.Array  # [M] 1 for real samples, 0 for padding (masked out of the loss)


class GaussianPPO(NamedTuple):
    init: Callable  # (key) -> GaussianLearner
    act: Callable  # (learner, x [..., Dx], key, deterministic) -> (action, log_prob)
    value: Callable  # (learner, v [..., Dv]) -> [...]
    update: Callable  # (learner, PPOBatch, key) -> (learner, metrics)
    update_stats: Callable  # (learner, actor_in [M,Dx], critic_in [M,Dv], weight [M]) -> learner


def make_gaussian_ppo(
    cfg: PPOConfig, actor_dim: int, critic_dim: int, action_dim: int, num_samples: int | None = None
) -> GaussianPPO:
    """Builds the learner's pure functions; checks the minibatch split before compiling."""
    if num_samples is not None:
        check_divisible(num_samples, cfg.minibatches, "PPO update")
    actor = MLP(cfg.actor_hidden, action_dim, activation="tanh", last_scale=0.01)
    critic = MLP(cfg.critic_hidden, 1, activation="tanh")

    def norm(stats, x):
        return stats_normalize(stats, x, clip=5.0) if cfg.normalize_inputs else x

    def init(key):
        ka, kc = jax.random.split(key)
        params = GaussianParams(
            actor=actor.init(ka, jnp.zeros((1, actor_dim)))["params"],
            critic=critic.init(kc, jnp.zeros((1, critic_dim)))["params"],
            log_std=jnp.full((action_dim,), cfg.init_log_std, jnp.float32),
        )
        return GaussianLearner(
            params=params,
            actor_opt=adam_init((params.actor, params.log_std)),
            critic_opt=adam_init(params.critic),
            actor_stats=stats_init(actor_dim),
            critic_stats=stats_init(critic_dim),
            iteration=jnp.zeros((), jnp.int32),
            lr=jnp.float32(cfg.lr),
        )

    def mean_fn(actor_params, stats, x):
        return actor.apply({"params": actor_params}, norm(stats, x))

    def act(learner: GaussianLearner, x, key, deterministic=False):
        p = learner.params
        mean = mean_fn(p.actor, learner.actor_stats, x)
        log_std = jnp.maximum(p.log_std, cfg.min_log_std)
        noise = jax.random.normal(key, mean.shape)
        a = jnp.where(deterministic, mean, mean + jnp.exp(log_std) * noise)
        return a, diag_gaussian_log_prob(a, mean, jnp.broadcast_to(log_std, mean.shape))

    def value_fn(critic_params, stats, v):
        return critic.apply({"params": critic_params}, norm(stats, v))[..., 0]

    def value(learner: GaussianLearner, v):
        return value_fn(learner.params.critic, learner.critic_stats, v)

    def update(learner: GaussianLearner, batch: PPOBatch, key, actor_lr_scale=1.0):
        """PPO epochs over ``batch``. ``actor_lr_scale`` multiplies the actor's step (0: the
        critic alone learns; Adam's moments of the actor still follow its gradients)."""
        m = batch.action.shape[0]
        mb = check_divisible(m, cfg.minibatches, "PPO update")

        def loss_fn(params, b: PPOBatch):
            (actor_p, log_std), critic_p = params
            out = ppo_loss(
                mean_fn(actor_p, learner.actor_stats, b.actor_in),
                jnp.maximum(log_std, cfg.min_log_std),
                value_fn(critic_p, learner.critic_stats, b.critic_in),
                b.action, b.log_prob, b.advantage, b.ret,
                cfg.clip_eps, cfg.vf_coef, cfg.ent_coef, weight=b.weight,
            )  # fmt: skip
            return out.loss, out._asdict()

        def adapt(lr, kl):
            """The KL-adaptive step of the actor learning rate (PPOConfig.desired_kl)."""
            if cfg.desired_kl <= 0:
                return lr
            lo, hi = cfg.lr_bounds
            lr = jnp.where(kl > 2.0 * cfg.desired_kl, lr / 1.5, lr)
            lr = jnp.where(kl < 0.5 * cfg.desired_kl, lr * 1.5, lr)
            return jnp.clip(lr, lo, hi)

        def minibatch(carry, idx):
            params, a_opt, c_opt, lr = carry
            b = jax.tree.map(lambda x: x[idx], batch)
            grads, metrics = jax.grad(loss_fn, has_aux=True)(
                ((params.actor, params.log_std), params.critic), b
            )
            # the KL of the policy before this step (metrics are computed at the current
            # params), as rsl_rl adapts before its step
            lr = adapt(lr, metrics["approx_kl"])
            (g_actor, g_logstd), g_critic = grads
            (actor_p, log_std), a_opt, gn = adam_apply(
                (params.actor, params.log_std), (g_actor, g_logstd), a_opt,
                (lr if cfg.desired_kl > 0 else cfg.lr) * actor_lr_scale, 0.0, cfg.max_grad_norm,
            )  # fmt: skip
            critic_p, c_opt, _ = adam_apply(
                params.critic, g_critic, c_opt, cfg.critic_lr, 0.0, cfg.max_grad_norm
            )
            metrics["grad_norm"] = gn
            return (GaussianParams(actor_p, critic_p, log_std), a_opt, c_opt, lr), metrics

        def epoch(carry, k):
            perm = jax.random.permutation(k, m).reshape(cfg.minibatches, mb)
            return jax.lax.scan(minibatch, carry, perm)

        carry = (learner.params, learner.actor_opt, learner.critic_opt, learner.lr)
        (params, a_opt, c_opt, lr), metrics = jax.lax.scan(
            epoch, carry, jax.random.split(key, cfg.epochs)
        )
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["std"] = jnp.mean(jnp.exp(params.log_std))
        metrics["lr"] = lr
        return learner.replace(
            params=params,
            actor_opt=a_opt,
            critic_opt=c_opt,
            iteration=learner.iteration + 1,
            lr=lr,
        ), metrics

    def update_stats(learner: GaussianLearner, actor_in, critic_in, weight=None):
        if not cfg.normalize_inputs:
            return learner
        return learner.replace(
            actor_stats=stats_update(learner.actor_stats, actor_in, weight),
            critic_stats=stats_update(learner.critic_stats, critic_in, weight),
        )

    return GaussianPPO(init=init, act=act, value=value, update=update, update_stats=update_stats)
