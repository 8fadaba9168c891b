"""Stage 1: train the low-level controller with PPO on its tracking rewards, commands sampled
at random over the range the DP will use. One jitted ``train_step(state) -> (state, metrics)``
does a rollout (scan over T LLC steps, vmap over B envs), GAE and the PPO epochs.

Shape legend: T rollout steps, B environments, Do LLC observation, Dpriv critic observation,
Da LLC action.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from refine_dp_jax.config import NONNEG, ONE_PLUS, check_fields
from refine_dp_jax.envs.base import Env, EnvState
from refine_dp_jax.envs.wrappers import reset_where
from refine_dp_jax.rl.gae import gae
from refine_dp_jax.train.gaussian_ppo import (
    GaussianLearner,
    GaussianPPO,
    PPOBatch,
    PPOConfig,
    make_gaussian_ppo,
)


@dataclass(frozen=True)
class LLCConfig:
    """LLC training (stage 1) and the LLC's share of joint optimization."""

    num_envs: int = 128  # B
    rollout_steps: int = 32  # T LLC steps per PPO iteration
    iterations: int = 150
    command_hold_steps: int = 20  # a random command is held this many LLC steps on average
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def __post_init__(self):
        check_fields(self, {"num_envs": ONE_PLUS, "rollout_steps": ONE_PLUS,
                            "iterations": NONNEG, "command_hold_steps": ONE_PLUS})  # fmt: skip


class LLCTransition(NamedTuple):
    """One LLC step of B envs (leading [T, B] once stacked)."""

    obs: jax.Array  # [Do]
    privileged_obs: jax.Array  # [Dpriv]
    action: jax.Array  # [Da] sampled, unclipped
    log_prob: jax.Array
    reward: jax.Array
    done: jax.Array
    terminated: jax.Array
    value: jax.Array
    next_value: jax.Array  # V of the true next state (before any reset)
    valid: jax.Array  # 1 for a real step, 0 for a padded one (env already done)


@struct.dataclass
class LLCTrainState:
    learner: GaussianLearner
    env_state: EnvState  # [B]
    cmd_timer: jax.Array  # [B] int32 steps until the next random command
    curriculum: jax.Array  # [] reset range scale
    key: jax.Array


def make_llc_ppo(env: Env, cfg: LLCConfig, num_samples: int | None = None) -> GaussianPPO:
    return make_gaussian_ppo(
        cfg.ppo, env.observation_size, env.privileged_observation_size, env.action_size,
        num_samples,
    )  # fmt: skip


def llc_batch(ppo: GaussianPPO, learner: GaussianLearner, tr: LLCTransition, cfg: PPOConfig):
    """GAE over [T, B] transitions, flattened into a PPO batch."""
    adv, ret = gae(
        tr.reward, tr.value, tr.next_value, tr.terminated, tr.done, cfg.gamma, cfg.gae_lambda
    )
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    return PPOBatch(
        actor_in=flat(tr.obs), critic_in=flat(tr.privileged_obs), action=flat(tr.action),
        log_prob=flat(tr.log_prob), advantage=flat(adv), ret=flat(ret), weight=flat(tr.valid),
    )  # fmt: skip


def llc_learn(
    ppo: GaussianPPO,
    learner: GaussianLearner,
    tr: LLCTransition,
    cfg: PPOConfig,
    key,
    update_stats: bool = True,
):
    """PPO update on [T, B] transitions, then (``update_stats``) the input statistics.
    Returns (learner, metrics)."""
    batch = llc_batch(ppo, learner, tr, cfg)
    learner, metrics = ppo.update(learner, batch, key)
    if update_stats:
        learner = ppo.update_stats(learner, batch.actor_in, batch.critic_in, batch.weight)
    return learner, metrics


def make_llc_train(env: Env, cfg: LLCConfig) -> tuple[Callable, Callable, GaussianPPO]:
    """Returns (init(key) -> LLCTrainState, train_step(state) -> (state, metrics), ppo)."""
    b, t_len = cfg.num_envs, cfg.rollout_steps
    ppo = make_llc_ppo(env, cfg, b * t_len)
    v_reset = jax.vmap(env.reset, in_axes=(0, None))
    v_step = jax.vmap(env.step)
    v_cmd = jax.vmap(env.sample_command)
    v_with = jax.vmap(env.with_command)
    v_reset_where = jax.vmap(lambda s, m, c: reset_where(env, s, m, c), in_axes=(0, 0, None))

    def init(key) -> LLCTrainState:
        k_env, k_l, k = jax.random.split(key, 3)
        return LLCTrainState(
            learner=ppo.init(k_l),
            env_state=v_reset(jax.random.split(k_env, b), jnp.float32(1.0)),
            cmd_timer=jnp.zeros((b,), jnp.int32),
            curriculum=jnp.float32(1.0),
            key=k,
        )

    def rollout(state: LLCTrainState, key):
        def one(carry, k):
            s, timer = carry
            kc, kt, ka = jax.random.split(k, 3)
            fresh = v_cmd(jax.random.split(kc, b), s)
            new = timer <= 0
            s = v_with(s, jnp.where(new[:, None], fresh, s.command))
            hold = jax.random.randint(kt, (b,), cfg.command_hold_steps // 2,
                                      cfg.command_hold_steps * 3 // 2 + 1)  # fmt: skip
            timer = jnp.where(new, hold, timer) - 1
            a, logp = ppo.act(state.learner, s.obs, ka)
            nxt = v_step(s, a)
            tr = LLCTransition(
                obs=s.obs, privileged_obs=s.privileged_obs, action=a, log_prob=logp,
                reward=nxt.reward, done=nxt.done, terminated=nxt.done * (1.0 - nxt.truncated),
                value=ppo.value(state.learner, s.privileged_obs),
                next_value=ppo.value(state.learner, nxt.privileged_obs),
                valid=jnp.ones_like(nxt.reward),
            )  # fmt: skip
            info = {"nonfinite": nxt.nonfinite, "done": nxt.done, **nxt.metrics}
            nxt = v_reset_where(nxt, nxt.done, state.curriculum)
            timer = jnp.where(tr.done > 0.5, 0, timer)
            return (nxt, timer), (tr, info)

        (s, timer), (tr, info) = jax.lax.scan(
            one, (state.env_state, state.cmd_timer), jax.random.split(key, t_len)
        )
        return s, timer, tr, info

    def train_step(state: LLCTrainState):
        key, k_roll, k_up = jax.random.split(state.key, 3)
        env_state, timer, tr, info = rollout(state, k_roll)
        learner, metrics = llc_learn(ppo, state.learner, tr, cfg.ppo, k_up)
        metrics = {
            **metrics,
            "reward": jnp.mean(tr.reward),
            "episodes": jnp.sum(info["done"]),
            "nonfinite_resets": jnp.sum(info["nonfinite"]),
            **{k: jnp.mean(v) for k, v in info.items() if k not in ("done", "nonfinite")},
        }
        return LLCTrainState(learner, env_state, timer, state.curriculum, key), metrics

    return init, train_step, ppo


def llc_policy_fn(ppo: GaussianPPO) -> Callable[[Any, jax.Array, jax.Array, bool], Any]:
    """(learner, obs [B,Do], key, deterministic) -> (action [B,Da], log_prob [B])."""
    return ppo.act
