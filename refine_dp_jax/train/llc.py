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

from refine_dp_jax.config import NONNEG, ONE_PLUS, POSITIVE, UNIT, check_fields, within
from refine_dp_jax.envs.base import Env, EnvState, command_limiter
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
    # The base-velocity part of the command (the env's ``velocity_command_size`` leading
    # entries) is redrawn on its own timer, held this many LLC steps on average (the tasks
    # hold a walking velocity for seconds); 0: redrawn with the rest of the command.
    velocity_hold_steps: int = 0
    # Reward curriculum (envs with ``with_reward_curriculum``: the paper's penalty weights
    # ramp from their initial to their final values): level = iteration / this, capped at 1;
    # 0: the final weights from the first iteration. Logged as ``reward_curriculum``.
    reward_curriculum_iterations: int = 0
    # Humanoid LLCs: episodes of the LLC evaluation at the end of the stage (llc/eval.json,
    # train/llc_eval.py); 0: none.
    eval_episodes: int = 0
    # Command curriculum on the base velocity (walking LLCs): the base-velocity entries of the
    # random commands are scaled by a level that starts at ``speed_scale_start`` and grows by
    # ``speed_scale_step`` after each iteration whose velocity tracking error, averaged over
    # the steps with a moving command, is below ``speed_scale_max_err`` (m/s), up to 1 (the
    # env's whole velocity range). 1.0: the whole range from the start. Logged as
    # ``speed_scale``; the stored LLC records the level it reached.
    speed_scale_start: float = 1.0
    speed_scale_step: float = 0.05
    speed_scale_max_err: float = 0.2
    # The actor's learning rate falls linearly from ``ppo.lr`` at the first iteration to this
    # at the last (``iterations``; a run stopped earlier by ``--minutes`` ends above it), as
    # the standing LLC's chain of continuations stepped it down by hand (3e-4 -> 1e-4 ->
    # 5e-5); 0: ``ppo.lr`` throughout. Logged as ``actor_lr``.
    lr_final: float = 0.0
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def __post_init__(self):
        check_fields(self, {"num_envs": ONE_PLUS, "rollout_steps": ONE_PLUS,
                            "iterations": NONNEG, "command_hold_steps": ONE_PLUS,
                            "velocity_hold_steps": NONNEG,
                            "reward_curriculum_iterations": NONNEG,
                            "eval_episodes": NONNEG,
                            "speed_scale_start": within(0, 1, lo_open=True),
                            "speed_scale_step": UNIT, "speed_scale_max_err": POSITIVE,
                            "lr_final": NONNEG})  # fmt: skip


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
    cmd_target: jax.Array  # [B, Dc] random command the command moves toward
    cmd_timer: jax.Array  # [B] int32 steps until the next random command
    vel_timer: jax.Array  # [B] int32 steps until the next random base velocity
    curriculum: jax.Array  # [] reset range scale
    iteration: jax.Array  # [] int32 PPO iterations done (drives the reward curriculum)
    key: jax.Array
    speed_scale: jax.Array  # [] command curriculum level of the base velocity (LLCConfig)


def _ramp(iteration, n: int) -> jax.Array:
    """[] iteration / n, capped at 1."""
    return jnp.minimum(jnp.asarray(iteration, jnp.float32) / n, 1.0)


def reward_curriculum_level(cfg: LLCConfig, iteration) -> jax.Array:
    """[] the reward curriculum level of PPO iteration ``iteration`` (see LLCConfig)."""
    n = cfg.reward_curriculum_iterations
    if n == 0:
        return jnp.float32(1.0)
    return _ramp(iteration, n)


def actor_lr_scale(cfg: LLCConfig, iteration) -> jax.Array:
    """[] the factor on ``cfg.ppo.lr`` at PPO iteration ``iteration`` (``LLCConfig.lr_final``):
    1 at the first iteration, ``lr_final / ppo.lr`` at the last and after."""
    if cfg.lr_final == 0.0:
        return jnp.float32(1.0)
    return 1.0 + _ramp(iteration, max(cfg.iterations - 1, 1)) * (cfg.lr_final / cfg.ppo.lr - 1.0)


def with_reward_level(env: Env) -> Callable:
    """vmapped (states [B], level []) -> states, for envs with a reward curriculum (else the
    identity)."""
    if not hasattr(env, "with_reward_curriculum"):
        return lambda s, level: s
    return jax.vmap(env.with_reward_curriculum, in_axes=(0, None))


def command_schedule(env: Env, num_envs: int, hold_steps: int, velocity_hold_steps: int):
    """Random commands as LLC training (and its evaluation) sees them: a new random target
    every ``hold_steps`` LLC steps on average (uniform in [hold/2, 3 hold/2]), its base
    velocity part (the env's ``velocity_command_size`` leading entries) on its own timer when
    ``velocity_hold_steps`` > 0; the command moves toward the target by at most the env's
    ``command_max_step`` per step (a jump where the env has none).

    Returns ``next(keys (3,), state [B], target, timer, vtimer, speed_scale=1) -> (command,
    target, timer, vtimer, new_target [B] bool)``; the keys draw the commands, the hold and
    the velocity hold; new base velocities are scaled by ``speed_scale`` (the command
    curriculum, ``LLCConfig.speed_scale_start``)."""
    b = num_envs
    n_vel = getattr(env, "velocity_command_size", 0)
    nv = n_vel if velocity_hold_steps > 0 else 0
    is_vel = jnp.arange(env.command_size) < nv  # [Dc] entries on the velocity timer
    is_speed = jnp.arange(env.command_size) < n_vel  # [Dc] entries the curriculum scales
    limit = command_limiter(env, 1)  # one LLC step per command
    v_cmd = jax.vmap(env.sample_command)

    def draw(key, mean):
        return jax.random.randint(key, (b,), mean // 2, mean * 3 // 2 + 1)

    def next_command(keys, s, target, timer, vtimer, speed_scale=1.0):
        kc, kt, kv = keys
        fresh = v_cmd(jax.random.split(kc, b), s)
        fresh = fresh * jnp.where(is_speed, speed_scale, 1.0)[None, :]
        new = timer <= 0
        new_v = vtimer <= 0 if nv else new
        new_entry = jnp.where(is_vel[None, :], new_v[:, None], new[:, None])  # [B, Dc]
        target = jnp.where(new_entry, fresh, target)
        cmd = limit(s.command, target)
        timer = jnp.where(new, draw(kt, hold_steps), timer) - 1
        vtimer = jnp.where(new_v, draw(kv, max(velocity_hold_steps, 1)), vtimer) - 1
        return cmd, target, timer, vtimer, new

    return next_command


def walking_metrics(info: dict) -> dict:
    """Walking diagnostics over the [T, B] steps with a moving command (envs whose metrics
    carry ``moving``, ``vel_err``, ``foot_err``, ``cmd_speed`` and ``speed_along_cmd``; else
    empty): velocity tracking error (m/s), footstep tracking error (m), and forward progress
    (speed along the commanded direction over the commanded speed; 1 = on pace)."""
    if not {"moving", "vel_err", "cmd_speed", "speed_along_cmd", "foot_err"} <= set(info):
        return {}
    m = info["moving"]
    n = jnp.maximum(jnp.sum(m), 1.0)
    mean = lambda x: jnp.sum(x * m) / n  # noqa: E731
    return {
        "vel_err_moving": mean(info["vel_err"]),
        "foot_err_moving": mean(info["foot_err"]),
        "progress_ratio": jnp.sum(info["speed_along_cmd"] * m)
        / jnp.maximum(jnp.sum(info["cmd_speed"] * m), 1e-6),
        "moving_share": jnp.mean(m),
    }


def next_speed_scale(cfg: LLCConfig, scale, walk: dict) -> jax.Array:
    """The command curriculum's next level: ``scale`` + ``speed_scale_step`` when this
    iteration's velocity error on moving commands (``walk["vel_err_moving"]``, from
    ``walking_metrics``) is below ``speed_scale_max_err``, capped at 1; unchanged for envs
    without walking metrics."""
    grow = walk.get("vel_err_moving", jnp.inf) < cfg.speed_scale_max_err
    return jnp.minimum(scale + cfg.speed_scale_step * grow, 1.0)


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
    actor_lr_scale=1.0,
):
    """PPO update on [T, B] transitions (the actor's step times ``actor_lr_scale``), then
    (``update_stats``) the input statistics. Returns (learner, metrics)."""
    batch = llc_batch(ppo, learner, tr, cfg)
    learner, metrics = ppo.update(learner, batch, key, actor_lr_scale)
    if update_stats:
        learner = ppo.update_stats(learner, batch.actor_in, batch.critic_in, batch.weight)
    return learner, metrics


def make_llc_train(env: Env, cfg: LLCConfig) -> tuple[Callable, Callable, GaussianPPO]:
    """Returns (init(key) -> LLCTrainState, train_step(state) -> (state, metrics), ppo)."""
    b, t_len = cfg.num_envs, cfg.rollout_steps
    ppo = make_llc_ppo(env, cfg, b * t_len)
    v_reset = jax.vmap(env.reset, in_axes=(0, None))
    v_step = jax.vmap(env.step)
    v_with = jax.vmap(env.with_command)
    v_reset_where = jax.vmap(lambda s, m, c: reset_where(env, s, m, c), in_axes=(0, 0, None))
    v_level = with_reward_level(env)
    next_command = command_schedule(env, b, cfg.command_hold_steps, cfg.velocity_hold_steps)

    def init(key) -> LLCTrainState:
        k_env, k_l, k = jax.random.split(key, 3)
        s0 = v_reset(jax.random.split(k_env, b), jnp.float32(1.0))
        return LLCTrainState(
            learner=ppo.init(k_l),
            env_state=s0,
            cmd_target=s0.command,
            cmd_timer=jnp.zeros((b,), jnp.int32),
            vel_timer=jnp.zeros((b,), jnp.int32),
            curriculum=jnp.float32(1.0),
            iteration=jnp.zeros((), jnp.int32),
            key=k,
            speed_scale=jnp.float32(cfg.speed_scale_start),
        )

    def rollout(state: LLCTrainState, key):
        level = reward_curriculum_level(cfg, state.iteration)

        def one(carry, k):
            s, target, timer, vtimer = carry
            kc, kt, ka = jax.random.split(k, 3)
            keys = (kc, kt, jax.random.fold_in(kt, 1))
            cmd, target, timer, vtimer, _ = next_command(keys, s, target, timer, vtimer,
                                                         state.speed_scale)  # fmt: skip
            s = v_level(v_with(s, cmd), level)
            a, logp = ppo.act(state.learner, s.obs, ka)
            nxt = v_step(s, a)
            tr = LLCTransition(
                obs=s.obs, privileged_obs=s.privileged_obs, action=a, log_prob=logp,
                reward=nxt.reward, done=nxt.done, terminated=nxt.done * (1.0 - nxt.truncated),
                value=ppo.value(state.learner, s.privileged_obs),
                next_value=ppo.value(state.learner, nxt.privileged_obs),
                valid=jnp.ones_like(nxt.reward),
            )  # fmt: skip
            info = {
                "nonfinite": nxt.nonfinite,
                "done": nxt.done,
                **nxt.metrics,
                "ended_at": nxt.step_count * nxt.done,
            }
            nxt = v_reset_where(nxt, nxt.done, state.curriculum)
            timer = jnp.where(tr.done > 0.5, 0, timer)
            vtimer = jnp.where(tr.done > 0.5, 0, vtimer)
            target = jnp.where(tr.done[:, None] > 0.5, nxt.command, target)
            return (nxt, target, timer, vtimer), (tr, info)

        carry = (state.env_state, state.cmd_target, state.cmd_timer, state.vel_timer)
        (s, target, timer, vtimer), (tr, info) = jax.lax.scan(
            one, carry, jax.random.split(key, t_len)
        )
        return s, target, timer, vtimer, tr, info, level

    def train_step(state: LLCTrainState):
        key, k_roll, k_up = jax.random.split(state.key, 3)
        env_state, target, timer, vtimer, tr, info, level = rollout(state, k_roll)
        lr_scale = actor_lr_scale(cfg, state.iteration)
        learner, metrics = llc_learn(ppo, state.learner, tr, cfg.ppo, k_up, actor_lr_scale=lr_scale)
        episodes = jnp.sum(info["done"])
        walk = walking_metrics(info)
        speed_scale = next_speed_scale(cfg, state.speed_scale, walk)
        metrics = {
            **metrics,
            "reward": jnp.mean(tr.reward),
            "episodes": episodes,
            "nonfinite_resets": jnp.sum(info["nonfinite"]),
            "terminations": jnp.sum(tr.terminated) / b,  # per env: falls, failures, successes
            # share of the episodes ended in this iteration that ended by a termination (for
            # the robot-only LLC env, which has no success: falls and exploded states)
            "fall_rate": jnp.sum(tr.terminated) / jnp.maximum(episodes, 1.0),
            "episode_seconds": jnp.sum(info["ended_at"]) * env.dt / jnp.maximum(episodes, 1.0),
            "reward_curriculum": level,
            "actor_lr": metrics["lr"] * lr_scale,  # the KL-adaptive rate or ppo.lr, annealed
            "speed_scale": state.speed_scale,
            **walk,
            **{k: jnp.mean(v) for k, v in info.items()
               if k not in ("done", "nonfinite", "moving", "ended_at")},
        }  # fmt: skip
        new = LLCTrainState(learner, env_state, target, timer, vtimer, state.curriculum,
                            state.iteration + 1, key, speed_scale)  # fmt: skip
        return new, metrics

    return init, train_step, ppo


def llc_policy_fn(ppo: GaussianPPO) -> Callable[[Any, jax.Array, jax.Array, bool], Any]:
    """(learner, obs [B,Do], key, deterministic) -> (action [B,Da], log_prob [B])."""
    return ppo.act
