"""DPPO learner: sampling with the frozen/trainable split, stored-chain likelihoods, and the
update over (decision, denoising step) pairs. Independent of any environment: the rollout code
(``train.rollout`` for MJX tasks, ``probe`` for the bandit) builds a ``DPPOBatch``.

Shape legend: N decisions in the batch, K' fine-tuned steps, Ta chunk, Da action dim,
To history, Ds observation dim.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from refine_dp_jax.config import DiffusionConfig, DPPOConfig, check_divisible
from refine_dp_jax.diffusion import sampler as smp
from refine_dp_jax.diffusion.networks import apply_fn
from refine_dp_jax.diffusion.schedule import make_schedule
from refine_dp_jax.rl.dppo import dppo_loss
from refine_dp_jax.rl.normalize import RewardScaler, reward_scaler_init
from refine_dp_jax.train.optim import adam_apply, adam_init


@struct.dataclass
class DPPOHyper:
    """Dynamic hyperparameters: array leaves, so a sweep is a vmap axis, not a recompile."""

    actor_lr: jax.Array
    critic_lr: jax.Array
    clip_eps: jax.Array
    clip_eps_base: jax.Array
    gamma: jax.Array
    gae_lambda: jax.Array
    gamma_denoise: jax.Array
    vf_coef: jax.Array
    sample_std_floor: jax.Array
    logprob_std_floor: jax.Array

    @classmethod
    def from_config(cls, cfg: DPPOConfig) -> DPPOHyper:
        f = lambda v: jnp.asarray(v, jnp.float32)
        return cls(
            f(cfg.actor_lr), f(cfg.critic_lr), f(cfg.clip_eps), f(cfg.clip_eps_base),
            f(cfg.gamma), f(cfg.gae_lambda), f(cfg.gamma_denoise), f(cfg.vf_coef),
            f(cfg.sample_std_floor), f(cfg.logprob_std_floor),
        )  # fmt: skip


@struct.dataclass
class DPPOLearner:
    actor: Any  # trainable denoiser parameters (serve the last K' chain steps)
    frozen: Any  # pre-trained parameters (serve the first N - K' steps); never updated
    critic: Any  # V(s) parameters
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    hyper: DPPOHyper
    reward_scaler: RewardScaler
    iteration: jax.Array  # [] int32 DPPO updates done


@struct.dataclass
class DPPOBatch:
    """One iteration's data, flattened over decisions (N = T * B)."""

    cond: jax.Array  # [N, To, Ds] (normalized) DP observation history
    xs: jax.Array  # [N, K'+1, Ta, Da] the last K'+1 elements of each stored chain
    old_log_prob: jax.Array  # [N, K'] per-step log-likelihoods under the rollout parameters
    advantages: jax.Array  # [N]
    returns: jax.Array  # [N]


KL_PAIRS = 1024  # (decision, denoising step) pairs that measure the update's KL


class DPPOFns(NamedTuple):
    """Pure functions closed over the static configuration."""

    sample: Callable  # (actor, frozen, hyper, cond [B,To,Ds], key, deterministic) -> Chain
    log_probs: Callable  # (actor, hyper, cond [N,To,Ds], xs [N,K'+1,Ta,Da]) -> [N, K']
    # (hyper, chain) -> [B, K']: log_probs of a chain just sampled, from its stored means
    sampled_log_probs: Callable
    value: Callable  # (critic, cond [N,To,Ds]) -> [N]
    # (params=(actor, critic), learner, batch, pair_idx [M], dec_idx [M'] or None)
    #   -> (loss, DPPOLossOut); dec_idx given: the critic is fitted on those decisions
    loss: Callable
    update: Callable  # (learner, batch, key) -> (learner, metrics)
    init: Callable  # (pretrained_params, critic_params, num_envs) -> DPPOLearner


def make_dppo(
    denoiser: nn.Module,
    critic: nn.Module,
    dcfg: DiffusionConfig,
    pcfg: DPPOConfig,
    action_dim: int,
    num_samples: int | None = None,
) -> DPPOFns:
    """Builds the DPPO functions. ``num_samples`` (N * K' per update), if given, is checked
    against ``pcfg.minibatches`` here, before anything compiles."""
    if num_samples is not None:
        check_divisible(num_samples, pcfg.minibatches, "DPPO update")
        if pcfg.critic_per_decision or pcfg.critic_epochs:
            check_divisible(num_samples // dcfg.ft_steps, pcfg.minibatches, "DPPO critic")
    apply = apply_fn(denoiser)
    capply = apply_fn(critic)
    sched = make_schedule(dcfg.num_steps, final_variance=dcfg.final_step_variance)
    n_chain, n_ft = dcfg.chain_steps, dcfg.ft_steps
    plan_train = smp.make_plan(sched, dcfg.sampler, dcfg.ddim_steps, dcfg.eta_train)
    plan_eval = smp.make_plan(sched, dcfg.sampler, dcfg.ddim_steps, dcfg.eta_eval)
    shape = (dcfg.horizon, action_dim)

    def opts(hyper: DPPOHyper) -> smp.SampleOptions:
        return smp.SampleOptions(
            hyper.sample_std_floor, pcfg.noise_clip, pcfg.x0_clip, pcfg.final_clip
        )

    def sample(actor, frozen, hyper, cond, key, deterministic=False):
        plan = plan_eval if deterministic else plan_train
        return smp.sample_chain(
            apply, frozen, actor, plan, cond, key, shape, n_ft, opts(hyper), deterministic
        )

    def step_lp(actor, hyper, cond, x_t, x_next, i):
        """i: [M] fine-tuned step index in [0, K')."""
        return smp.step_log_prob(
            apply, actor, plan_train, (n_chain - n_ft) + i, x_t, x_next, cond,
            dcfg.exec_steps, hyper.logprob_std_floor, pcfg.x0_clip,
        )  # fmt: skip

    def log_probs(actor, hyper, cond, xs):
        n = cond.shape[0]
        i = jnp.broadcast_to(jnp.arange(n_ft)[None], (n, n_ft)).reshape(-1)
        rep = lambda a: jnp.repeat(a, n_ft, axis=0)
        lp = step_lp(
            actor, hyper, rep(cond), xs[:, :-1].reshape(n * n_ft, *shape),
            xs[:, 1:].reshape(n * n_ft, *shape), i,
        )  # fmt: skip
        return lp.reshape(n, n_ft)

    def sampled_log_probs(hyper, chain):
        return smp.sampled_step_log_probs(
            plan_train, chain, n_chain - n_ft, dcfg.exec_steps, hyper.logprob_std_floor
        )

    def value(critic_params, cond):
        return capply(critic_params, cond)

    def loss(params, learner: DPPOLearner, batch: DPPOBatch, pair_idx, dec_idx=None):
        """DPPO loss on the (decision, denoising step) pairs ``pair_idx`` (d * K' + i). The
        critic's regression is on the decisions of those pairs, or, with ``dec_idx``, on the
        decisions ``dec_idx``: V depends only on the decision, so over a uniform draw both
        have the same expected gradient, and the second does not repeat V(s) K' times."""
        actor, critic_p = params
        d, i = pair_idx // n_ft, pair_idx % n_ft
        cond = batch.cond[d]
        new_lp = step_lp(actor, learner.hyper, cond, batch.xs[d, i], batch.xs[d, i + 1], i)
        per_pair = dec_idx is None
        out = dppo_loss(
            new_lp, batch.old_log_prob[d, i], batch.advantages[d], i,
            value(critic_p, cond) if per_pair else jnp.zeros_like(new_lp),
            batch.returns[d] if per_pair else jnp.zeros_like(new_lp), n_ft,
            learner.hyper.clip_eps, learner.hyper.clip_eps_base,
            learner.hyper.gamma_denoise, learner.hyper.vf_coef,
        )  # fmt: skip
        if not per_pair:
            v_loss = jnp.mean(
                jnp.square(value(critic_p, batch.cond[dec_idx]) - batch.returns[dec_idx])
            )
            out = out._replace(loss=out.pg_loss + learner.hyper.vf_coef * v_loss, v_loss=v_loss)
        return out.loss, out

    def fit_critic(learner: DPPOLearner, critic_p, c_opt, batch: DPPOBatch, key):
        """``critic_epochs`` x ``minibatches`` Adam steps of V(s) on the returns of the
        batch's decisions; the last minibatch losses [critic_epochs, minibatches]."""
        n = batch.cond.shape[0]
        mb_dec = check_divisible(n, pcfg.minibatches, "DPPO critic epochs (decisions)")

        def v_loss(c, idx):
            return jnp.mean(jnp.square(value(c, batch.cond[idx]) - batch.returns[idx]))

        def step(carry, idx):
            c, opt = carry
            loss, g = jax.value_and_grad(v_loss)(c, idx)
            c, opt, _ = adam_apply(c, g, opt, learner.hyper.critic_lr, 0.0, pcfg.max_grad_norm)
            return (c, opt), loss

        def epoch(carry, k):
            perm = jax.random.permutation(k, n).reshape(pcfg.minibatches, mb_dec)
            return jax.lax.scan(step, carry, perm)

        keys = jax.random.split(key, pcfg.critic_epochs)
        (critic_p, c_opt), losses = jax.lax.scan(epoch, (critic_p, c_opt), keys)
        return critic_p, c_opt, losses

    def update(learner: DPPOLearner, batch: DPPOBatch, key):
        n = batch.cond.shape[0]
        total = n * n_ft
        mb = check_divisible(total, pcfg.minibatches, "DPPO update")
        per_dec = pcfg.critic_per_decision
        if per_dec:
            mb_dec = check_divisible(n, pcfg.minibatches, "DPPO critic (decisions per update)")
        actor_on = (learner.iteration >= pcfg.critic_warmup_iters).astype(jnp.float32)

        def minibatch(carry, idx):
            actor, critic_p, a_opt, c_opt = carry
            pair_idx, dec_idx = idx
            grads, out = jax.grad(loss, has_aux=True)(
                (actor, critic_p), learner, batch, pair_idx, dec_idx
            )
            g_actor, g_critic = grads
            actor, a_opt, a_norm = adam_apply(
                actor, g_actor, a_opt, learner.hyper.actor_lr * actor_on, 0.0, pcfg.max_grad_norm
            )
            critic_p, c_opt, _ = adam_apply(
                critic_p, g_critic, c_opt, learner.hyper.critic_lr, 0.0, pcfg.max_grad_norm
            )
            m = {
                "loss": out.loss, "pg_loss": out.pg_loss, "v_loss": out.v_loss,
                "approx_kl": out.approx_kl, "clip_frac": out.clip_frac,
                "ratio": out.ratio_mean, "actor_grad_norm": a_norm,
            }  # fmt: skip
            return (actor, critic_p, a_opt, c_opt), m

        def epoch(carry, k):
            k_pair, k_dec = jax.random.split(k)
            perm = jax.random.permutation(k_pair, total).reshape(pcfg.minibatches, mb)
            dec = (
                jax.random.permutation(k_dec, n).reshape(pcfg.minibatches, mb_dec)
                if per_dec
                else None
            )
            return jax.lax.scan(minibatch, carry, (perm, dec))

        # (the epochs' key is ``key`` itself without critic epochs: runs reproduce as before)
        k_epochs, k_critic = jax.random.split(key) if pcfg.critic_epochs else (key, None)
        carry = (learner.actor, learner.critic, learner.actor_opt, learner.critic_opt)
        carry, metrics = jax.lax.scan(epoch, carry, jax.random.split(k_epochs, pcfg.epochs))
        actor, critic_p, a_opt, c_opt = carry
        if pcfg.critic_epochs:
            critic_p, c_opt, v_loss = fit_critic(learner, critic_p, c_opt, batch, k_critic)
            metrics["v_loss_after_critic_epochs"] = v_loss
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["kl_after_update"] = update_kl(actor, learner.hyper, batch, key)
        learner = learner.replace(
            actor=actor, critic=critic_p, actor_opt=a_opt, critic_opt=c_opt,
            iteration=learner.iteration + 1,
        )  # fmt: skip
        return learner, metrics

    def update_kl(actor, hyper, batch: DPPOBatch, key):
        """How far the whole update moved the policy: the loss's approximate KL (E[r - 1 -
        log r] over the stored pairs, r the likelihood ratio) with the updated actor, on up to
        ``KL_PAIRS`` pairs drawn at random. The loss's own ``approx_kl`` is measured before each
        minibatch's step, so it reads 0 where an update is one Adam step (the humanoid tasks).
        One forward pass of those pairs; its key is folded from ``key``, so the update's own
        random draws are unchanged."""
        total = batch.old_log_prob.size
        idx = jax.random.permutation(jax.random.fold_in(key, 0x6B6C), total)[: min(total, KL_PAIRS)]
        d, i = idx // n_ft, idx % n_ft
        lp = step_lp(actor, hyper, batch.cond[d], batch.xs[d, i], batch.xs[d, i + 1], i)
        log_ratio = lp - batch.old_log_prob[d, i]
        return jnp.mean(jnp.expm1(log_ratio) - log_ratio)

    def init(pretrained, critic_params, num_envs: int) -> DPPOLearner:
        return DPPOLearner(
            actor=pretrained,
            frozen=pretrained,
            critic=critic_params,
            actor_opt=adam_init(pretrained),
            critic_opt=adam_init(critic_params),
            hyper=DPPOHyper.from_config(pcfg),
            reward_scaler=reward_scaler_init(num_envs),
            iteration=jnp.zeros((), jnp.int32),
        )

    return DPPOFns(
        sample=sample, log_probs=log_probs, sampled_log_probs=sampled_log_probs, value=value,
        loss=loss, update=update, init=init,
    )  # fmt: skip
