"""The hierarchical rollout: a planner (diffusion policy or baseline) picks a chunk of commands
every decision, the LLC tracks each command for ``hold`` LLC steps, physics runs underneath.

    scan over T decisions
      plan: cond = normalized DP observation history -> chunk [B, Ta, Dc] (+ learner aux)
      scan over Ta_exec commands: set command; scan over hold LLC steps: LLC act, env step
      (an env that finishes mid-chunk is frozen until the decision boundary, then reset)

It returns decision-level data for the planner's learner and, optionally, LLC-level data
(valid-masked) for PPO on the LLC's tracking rewards (joint optimization).

Shape legend: T decisions, B envs, To history, Ds DP observation, Ta chunk, Ta_exec executed
commands, Dc command dim.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from refine_dp_jax.envs.base import Env, EnvState, command_limiter, denormalize_command
from refine_dp_jax.envs.wrappers import history_init, history_push, reset_where, select
from refine_dp_jax.train.gaussian_ppo import GaussianLearner, GaussianPPO
from refine_dp_jax.train.llc import LLCTransition, with_reward_level


@struct.dataclass
class ObsNormalizer:
    """Fixed DP-observation normalization, computed from the demonstrations."""

    mean: jax.Array  # [Ds]
    std: jax.Array  # [Ds]

    def __call__(self, x):
        return (x - self.mean) / self.std


@struct.dataclass
class HierEnvState:
    env: EnvState  # [B]
    hist: jax.Array  # [B, To, Ds] raw DP observation history
    curriculum: jax.Array  # [] reset range scale


class Decision(NamedTuple):
    """One decision of B envs (leading [T, B] once stacked)."""

    cond: jax.Array  # [To, Ds] normalized history the planner saw
    next_cond: jax.Array  # [To, Ds] normalized history after the chunk (before any reset)
    aux: Any  # planner-specific (e.g. the denoising chain)
    reward: jax.Array  # task reward collected during the chunk
    done: jax.Array
    terminated: jax.Array
    success: jax.Array  # 1 where the episode ended in success during this chunk
    episode_steps: jax.Array  # LLC steps of the episode when it ended (else 0)
    hand_err: jax.Array  # mean hand tracking error over the chunk's live steps
    nonfinite: jax.Array
    ending: dict  # episode_ending of the chunk's last state: 0/1 per OUTCOMES (all 0 if alive)


# how an episode can end (episode_ending's keys; the evaluation's ``<key>_rate``)
OUTCOMES = ("success", "fell", "lost", "nonfinite", "timeout")


def episode_ending(s: EnvState) -> dict:
    """How the episode of ``s`` ended, as 0/1 floats per OUTCOMES: all 0 while it runs, one of
    them 1 once it is done: success (a success with the robot fallen counts as a success), the
    robot fell (envs whose metrics report ``fallen``), an exploded state, out of time, or
    another failure (``lost``: the task object lost)."""
    done = s.done
    success = done * s.success
    nonfinite = done * (1.0 - s.success) * s.nonfinite
    fell = done * (1.0 - s.success) * (1.0 - s.nonfinite) * s.metrics.get("fallen", 0.0 * done)
    timeout = done * s.truncated
    return {"success": success, "fell": fell, "nonfinite": nonfinite, "timeout": timeout,
            "lost": done - success - fell - nonfinite - timeout}  # fmt: skip


# plan(planner_params, cond [B,To,Ds], key, deterministic) -> (chunk [B,Ta,Dc] in [-1,1], aux)
PlanFn = Callable[[Any, jax.Array, jax.Array, bool], tuple[jax.Array, Any]]


def hier_init(env: Env, key: jax.Array, num_envs: int, obs_history: int, curriculum=1.0):
    """Fresh episodes for B envs with their DP observation histories."""
    s = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), curriculum)
    hist = jax.vmap(lambda st: history_init(env.dp_observation(st), obs_history))(s)
    return HierEnvState(s, hist, jnp.asarray(curriculum, jnp.float32))


def make_hier_rollout(
    env: Env,
    llc: GaussianPPO,
    plan: PlanFn,
    normalizer_of: Callable[[Any], ObsNormalizer],
    num_decisions: int,
    exec_steps: int,
    hold: int,
    record_llc: bool = False,
) -> Callable:
    """rollout(hstate, planner_params, llc_learner, key, deterministic, llc_stochastic)
    -> (hstate, decisions [T,B], llc_transitions [T*Ta_exec*hold, B] or None)."""
    v_step = jax.vmap(env.step)
    v_with = jax.vmap(env.with_command)
    limit = command_limiter(env, hold)
    v_level = with_reward_level(env)  # the LLC's rewards at the curriculum's final weights
    v_dpobs = jax.vmap(env.dp_observation)
    v_reset_where = jax.vmap(lambda s, m, c: reset_where(env, s, m, c), in_axes=(0, 0, None))
    hand_key = "hand_err"

    def rollout(
        hs: HierEnvState,
        planner_params,
        llc_learner: GaussianLearner,
        key,
        deterministic: bool = False,
        llc_stochastic: bool = False,
    ):
        norm = normalizer_of(planner_params)

        def decision(hs: HierEnvState, k):
            k_plan, k_exec = jax.random.split(k)
            cond = norm(hs.hist)
            chunk, aux = plan(planner_params, cond, k_plan, deterministic)
            cmds = jax.vmap(lambda c: denormalize_command(env, c))(chunk[:, :exec_steps])
            alive0 = jnp.ones_like(hs.env.reward)  # every env starts the chunk alive

            def command_step(carry, inp):
                s, alive, hist, acc = carry
                cmd, kc = inp
                s = v_level(v_with(s, limit(s.command, cmd)), 1.0)

                def llc_step(carry, kl):
                    s, alive, acc = carry
                    a, logp = llc.act(llc_learner, s.obs, kl, not llc_stochastic)
                    nxt = v_step(s, a)
                    nxt = jax.vmap(select)(alive, nxt, s)
                    tr = None
                    if record_llc:
                        tr = LLCTransition(
                            obs=s.obs, privileged_obs=s.privileged_obs, action=a, log_prob=logp,
                            reward=nxt.reward * alive,
                            done=jnp.maximum(nxt.done, 1.0 - alive),
                            terminated=jnp.maximum(nxt.done * (1.0 - nxt.truncated), 1.0 - alive),
                            value=llc.value(llc_learner, s.privileged_obs),
                            next_value=llc.value(llc_learner, nxt.privileged_obs),
                            valid=alive,
                        )  # fmt: skip
                    acc = {
                        "reward": acc["reward"] + alive * nxt.task_reward,
                        "hand_err": acc["hand_err"] + alive * nxt.metrics.get(hand_key, 0.0),
                        "live": acc["live"] + alive,
                        "nonfinite": jnp.maximum(acc["nonfinite"], alive * nxt.nonfinite),
                    }
                    alive = alive * (1.0 - nxt.done)
                    return (nxt, alive, acc), tr

                (s, alive, acc), trs = jax.lax.scan(
                    llc_step, (s, alive, acc), jax.random.split(kc, hold)
                )
                hist = jax.vmap(history_push)(hist, v_dpobs(s))
                return (s, alive, hist, acc), trs

            zeros = jnp.zeros_like(hs.env.reward)
            acc0 = {"reward": zeros, "hand_err": zeros, "live": zeros, "nonfinite": zeros}
            (s, alive, hist, acc), trs = jax.lax.scan(
                command_step,
                (hs.env, alive0, hs.hist, acc0),
                (jnp.swapaxes(cmds, 0, 1), jax.random.split(k_exec, exec_steps)),
            )
            done = 1.0 - alive
            dec = Decision(
                cond=cond, next_cond=norm(hist), aux=aux, reward=acc["reward"], done=done,
                terminated=done * (1.0 - s.truncated), success=done * s.success,
                episode_steps=done * s.step_count, nonfinite=acc["nonfinite"],
                hand_err=acc["hand_err"] / jnp.maximum(acc["live"], 1.0),
                ending=episode_ending(s),
            )  # fmt: skip
            s = v_reset_where(s, done, hs.curriculum)
            fresh_hist = jax.vmap(lambda st: history_init(env.dp_observation(st), hist.shape[1]))(s)
            hist = jnp.where(done[:, None, None] > 0.5, fresh_hist, hist)
            return HierEnvState(s, hist, hs.curriculum), (dec, trs)

        hs, (decs, trs) = jax.lax.scan(decision, hs, jax.random.split(key, num_decisions))
        if record_llc:  # [T, Ta_exec, hold, B, ...] -> [T * Ta_exec * hold, B, ...]
            trs = jax.tree.map(lambda x: merge_leading(x, 3), trs)
        return hs, decs, trs

    return rollout


def make_qpos_rollout(
    env: Env,
    llc: GaussianPPO,
    plan: PlanFn,
    normalizer_of: Callable[[Any], ObsNormalizer],
    num_decisions: int,
    exec_steps: int,
    hold: int,
    record: Callable[[EnvState], Any] | None = None,
) -> Callable:
    """Deterministic rollout that records the pose at every LLC step (for videos); envs that finish
    keep their final state. rollout(hstate, planner_params, llc_learner, key)
    -> (qpos [frames, B, nq], mocap_pos [frames, B, nmocap, 3]) (mocap bodies: goal markers).
    ``record(states [B]) -> pytree`` replaces what is recorded (diagnostics: leaves [frames, B,
    ...]); a finished env's last frames repeat its final state's."""
    if record is None:
        record = lambda s: (s.data.qpos, s.data.mocap_pos)  # noqa: E731
    v_step = jax.vmap(env.step)
    v_with = jax.vmap(env.with_command)
    limit = command_limiter(env, hold)
    v_dpobs = jax.vmap(env.dp_observation)

    def rollout(hs: HierEnvState, planner_params, llc_learner, key):
        norm = normalizer_of(planner_params)

        def decision(carry, k):
            s, hist, alive = carry
            # the planner's key as make_hier_rollout derives it: with the same key the same
            # chains (x_K) as the evaluation's, so the same episodes
            chunk, _ = plan(planner_params, norm(hist), jax.random.split(k)[0], True)
            cmds = jax.vmap(lambda c: denormalize_command(env, c))(chunk[:, :exec_steps])

            def command_step(carry, cmd):
                s, hist, alive = carry
                s = v_with(s, limit(s.command, cmd))

                def llc_step(carry, _):
                    s, alive = carry
                    a, _ = llc.act(llc_learner, s.obs, key, True)
                    nxt = jax.vmap(select)(alive, v_step(s, a), s)
                    return (nxt, alive * (1.0 - nxt.done)), record(nxt)

                (s, alive), qpos = jax.lax.scan(llc_step, (s, alive), None, length=hold)
                return (s, jax.vmap(history_push)(hist, v_dpobs(s)), alive), qpos

            carry, qpos = jax.lax.scan(command_step, (s, hist, alive), jnp.swapaxes(cmds, 0, 1))
            return carry, qpos

        alive = jnp.ones_like(hs.env.reward)
        _, qpos = jax.lax.scan(
            decision, (hs.env, hs.hist, alive), jax.random.split(key, num_decisions)
        )
        return jax.tree.map(lambda x: merge_leading(x, 3), qpos)

    return rollout


def merge_leading(x: jax.Array, n: int) -> jax.Array:
    """``x`` with its first ``n`` axes merged into one. Spelled out rather than with -1, which
    cannot be inferred when another axis is empty: a scene without mocap bodies records
    mocap_pos [.., 0, 3], and reshape(-1, ...) raised ZeroDivisionError (the table-lift
    pipeline lost its video to it)."""
    lead = 1
    for size in x.shape[:n]:
        lead *= size
    return x.reshape((lead,) + x.shape[n:])
