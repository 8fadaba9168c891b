"""Stage 4: fine-tuning in ONE jitted step per iteration.

* ``make_dppo_train``: DP-only DPPO (rollout -> GAE on decisions -> epochs x minibatches over
  (decision, denoising step) pairs).
* ``joint=True``: Algorithm 1 of REFINE-DP in the same step: roll out and update the LLC with
  PPO on its tracking rewards, then roll out again and update the DP with DPPO.
* ``make_mlp_ppo_train``: the baseline, an MLP planner (behaviour-cloned) fine-tuned with
  Gaussian PPO on the same rollout.

Shape legend: T decisions, B envs, K' fine-tuned steps, Ta chunk, Ta_exec executed, Dc command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import struct

from refine_dp_jax.config import DiffusionConfig, DPPOConfig
from refine_dp_jax.envs.base import Env
from refine_dp_jax.rl.gae import gae
from refine_dp_jax.rl.normalize import reward_scale
from refine_dp_jax.train.dppo import DPPOBatch, DPPOFns, DPPOLearner
from refine_dp_jax.train.gaussian_ppo import GaussianLearner, GaussianPPO, PPOBatch, PPOConfig
from refine_dp_jax.train.hierarchy import (
    Decision,
    HierEnvState,
    ObsNormalizer,
    make_hier_rollout,
)
from refine_dp_jax.train.llc import LLCConfig, llc_learn


@dataclass(frozen=True)
class FinetuneConfig:
    """Rollout sizes of stage 4 (shared by DPPO, joint optimization and the MLP baseline)."""

    num_envs: int = 64  # B
    decisions: int = 16  # T decisions per iteration
    iterations: int = 30
    joint: bool = True  # alternate LLC PPO and DPPO (Algorithm 1); False = DP-only
    # joint: update the LLC's running input statistics on the DP's commands too. Off: they
    # stay at their stage-1 values (the LLC's inputs normalized as in its training). Measured
    # on the testbed (docs/results/joint_stats/): frozen, joint success at iterations 10-50
    # was 91 / 93.5 / 92 / 88.5 / 91 % against 74 / 90 / 87.5 / 79 / 85 % with the update.
    llc_update_stats: bool = False
    # joint: the LLC's PPO fits only its critic (and the actor's Adam moments) for this many
    # first iterations. A stored LLC's critic was fitted to its own training episodes, not to
    # the task's (see experiments/humanoid.py for what it measured on the humanoid)
    llc_critic_warmup: int = 0
    # joint: the LLC phase rolls out its own envs (``FinetuneState.hier_llc``). Off: both
    # phases continue the same episodes, so half of every episode the DP trains on is played
    # with the LLC's exploration noise (measured no better on the table lift:
    # docs/results/table_lift)
    llc_own_envs: bool = False

    def __post_init__(self):
        from refine_dp_jax.config import NONNEG, ONE_PLUS, check_fields

        check_fields(self, {"num_envs": ONE_PLUS, "decisions": ONE_PLUS, "iterations": NONNEG,
                            "llc_critic_warmup": NONNEG})  # fmt: skip


@struct.dataclass
class FinetuneState:
    planner: DPPOLearner | GaussianLearner
    normalizer: ObsNormalizer
    llc: GaussianLearner
    hier: HierEnvState
    key: jax.Array
    hier_llc: HierEnvState | None = None  # joint with ``llc_own_envs``: the LLC phase's envs


def episode_metrics(decs: Decision) -> dict:
    """Aggregates of the episodes that ended in this rollout."""
    n_done = jnp.sum(decs.done)
    return {
        "episodes": n_done,
        "success_rate": jnp.sum(decs.success) / jnp.maximum(n_done, 1.0),
        "task_reward": jnp.mean(decs.reward),
        "hand_err": jnp.mean(decs.hand_err),
        "nonfinite_resets": jnp.sum(decs.nonfinite),
    }


def dp_plan_fn(fns: DPPOFns, ft: int):
    """Planner function of the diffusion policy: chunk = x_0; aux = (the last K'+1 chain
    elements [B, K'+1, Ta, Da], their K' step log-likelihoods [B, K'] under the sampling
    parameters, read off the sampler's means: no second pass of the denoiser)."""

    def plan(params: tuple[DPPOLearner, ObsNormalizer], cond, key, deterministic):
        learner = params[0]
        chain = fns.sample(learner.actor, learner.frozen, learner.hyper, cond, key, deterministic)
        xs = jnp.moveaxis(chain.xs[-(ft + 1) :], 0, 1)
        return chain.xs[-1], (xs, fns.sampled_log_probs(learner.hyper, chain))

    return plan


def make_dppo_train(
    env: Env,
    fns: DPPOFns,
    llc_ppo: GaussianPPO,
    dcfg: DiffusionConfig,
    pcfg: DPPOConfig,
    fcfg: FinetuneConfig,
    llc_cfg: LLCConfig,
    hold: int,
) -> Callable:
    """train_step(FinetuneState) -> (FinetuneState, metrics): DPPO, plus LLC PPO if joint."""
    ft = dcfg.ft_steps
    plan = dp_plan_fn(fns, ft)
    common = dict(num_decisions=fcfg.decisions, exec_steps=dcfg.exec_steps, hold=hold)
    rollout = make_hier_rollout(env, llc_ppo, plan, lambda p: p[1], **common)
    rollout_llc = make_hier_rollout(env, llc_ppo, plan, lambda p: p[1], record_llc=True, **common)

    def dppo_phase(state: FinetuneState, key):
        k_roll, k_up = jax.random.split(key)
        learner = state.planner
        hs, decs, _ = rollout(state.hier, (learner, state.normalizer), state.llc, k_roll)
        t_len, b = decs.reward.shape
        reward = decs.reward
        scaler = learner.reward_scaler
        if pcfg.reward_scaling:
            scaler, reward = reward_scale(scaler, reward, decs.done, learner.hyper.gamma)
        flat = lambda x: x.reshape((t_len * b,) + x.shape[2:])
        values = fns.value(learner.critic, flat(decs.cond)).reshape(t_len, b)
        next_values = fns.value(learner.critic, flat(decs.next_cond)).reshape(t_len, b)
        adv, ret = gae(
            reward, values, next_values, decs.terminated, decs.done,
            learner.hyper.gamma, learner.hyper.gae_lambda,
        )  # fmt: skip
        xs, old_lp = decs.aux
        batch = DPPOBatch(
            cond=flat(decs.cond), xs=flat(xs), old_log_prob=flat(old_lp),
            advantages=flat(adv), returns=flat(ret),
        )  # fmt: skip
        learner, metrics = fns.update(learner.replace(reward_scaler=scaler), batch, k_up)
        metrics = {**metrics, **episode_metrics(decs), "value_mean": jnp.mean(values)}
        return state.replace(planner=learner, hier=hs), metrics

    def llc_phase(state: FinetuneState, key):
        k_roll, k_up = jax.random.split(key)
        own = state.hier_llc is not None
        hs, decs, trs = rollout_llc(
            state.hier_llc if own else state.hier, (state.planner, state.normalizer),
            state.llc, k_roll, False, True,
        )  # fmt: skip
        warm = state.planner.iteration < fcfg.llc_critic_warmup  # DPPO updates done so far
        llc, m = llc_learn(llc_ppo, state.llc, trs, llc_cfg.ppo, k_up, fcfg.llc_update_stats,
                           jnp.where(warm, 0.0, 1.0))  # fmt: skip
        m = {**m, "tracking_reward": jnp.sum(trs.reward) / jnp.maximum(jnp.sum(trs.valid), 1.0)}
        m.update({f"rollout_{k}": v for k, v in episode_metrics(decs).items()})
        return state.replace(llc=llc, **{"hier_llc" if own else "hier": hs}), m

    def train_step(state: FinetuneState):
        key, k_llc, k_dp = jax.random.split(state.key, 3)
        metrics = {}
        if fcfg.joint:
            state, m_llc = llc_phase(state, k_llc)
            metrics.update({f"llc/{k}": v for k, v in m_llc.items()})
        state, m_dp = dppo_phase(state, k_dp)
        metrics.update({f"dp/{k}": v for k, v in m_dp.items()})
        return state.replace(key=key), metrics

    return train_step


def mlp_plan_fn(ppo: GaussianPPO, exec_steps: int, command_dim: int):
    """Planner function of the MLP baseline: Gaussian over the Ta_exec executed commands."""

    def plan(params: tuple[GaussianLearner, ObsNormalizer], cond, key, deterministic):
        a, logp = ppo.act(params[0], cond.reshape(cond.shape[0], -1), key, deterministic)
        chunk = jnp.clip(a, -1.0, 1.0).reshape(a.shape[0], exec_steps, command_dim)
        return chunk, (a, logp)

    return plan


def make_mlp_ppo_train(
    env: Env,
    ppo: GaussianPPO,
    llc_ppo: GaussianPPO,
    pcfg: PPOConfig,
    dcfg: DiffusionConfig,
    fcfg: FinetuneConfig,
    hold: int,
) -> Callable:
    """train_step(FinetuneState) -> (FinetuneState, metrics) for the MLP + Gaussian PPO baseline."""
    plan = mlp_plan_fn(ppo, dcfg.exec_steps, env.command_size)
    rollout = make_hier_rollout(
        env, llc_ppo, plan, lambda p: p[1], fcfg.decisions, dcfg.exec_steps, hold
    )

    def train_step(state: FinetuneState):
        key, k_roll, k_up = jax.random.split(state.key, 3)
        learner = state.planner
        hs, decs, _ = rollout(state.hier, (learner, state.normalizer), state.llc, k_roll)
        t_len, b = decs.reward.shape
        flat = lambda x: x.reshape((t_len * b,) + x.shape[2:])
        cond = decs.cond.reshape(t_len, b, -1)
        values = ppo.value(learner, cond)
        next_values = ppo.value(learner, decs.next_cond.reshape(t_len, b, -1))
        adv, ret = gae(decs.reward, values, next_values, decs.terminated, decs.done,
                       pcfg.gamma, pcfg.gae_lambda)  # fmt: skip
        actions, logp = decs.aux
        batch = PPOBatch(
            actor_in=flat(cond), critic_in=flat(cond), action=flat(actions), log_prob=flat(logp),
            advantage=flat(adv), ret=flat(ret), weight=jnp.ones((t_len * b,)),
        )  # fmt: skip
        learner, metrics = ppo.update(learner, batch, k_up)
        metrics = {**metrics, **episode_metrics(decs)}
        return state.replace(planner=learner, hier=hs, key=key), {
            f"mlp/{k}": v for k, v in metrics.items()
        }

    return train_step
