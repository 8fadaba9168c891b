"""The evaluation's account of how episodes ended (``evaluate.make_evaluate``)."""

import jax
import jax.numpy as jnp
import numpy as np

import experiments
from refine_dp_jax import pipeline
from refine_dp_jax.evaluate import make_evaluate


class _ScriptedOutcomes:
    """``point_reach`` whose episodes end at their 5th LLC step by a rule on the goal's
    direction g (drawn at reset): g_x > 0.5 the robot "fell", g_x < -0.5 the object is "lost",
    otherwise g_y > 0 a success (reported with the fallen flag up too: a success counts as a
    success), the rest run out of time (the puck's own success test is switched off)."""

    def __init__(self, env):
        self._env = env

    def __getattr__(self, name):
        return getattr(self._env, name)

    def reset(self, key, curriculum=1.0):
        s = self._env.reset(key, curriculum)
        return s.replace(metrics={**s.metrics, "fallen": jnp.zeros(())})

    def step(self, s, action):
        n = self._env.step(s, action)
        g = s.task / jnp.linalg.norm(s.task)
        at = n.step_count == 5
        fell, lost = at & (g[0] > 0.5), at & (g[0] < -0.5)
        win = (at & (jnp.abs(g[0]) <= 0.5) & (g[1] > 0)).astype(jnp.float32)
        success = jnp.maximum(s.success, win)
        failed = (fell | lost).astype(jnp.float32)
        timeout = (n.step_count >= self._env.episode_steps).astype(jnp.float32)
        return n.replace(
            success=success, task_reward=success * (1.0 - s.success),
            done=jnp.maximum(jnp.maximum(success, timeout), failed),
            truncated=timeout * (1.0 - success) * (1.0 - failed),
            metrics={**n.metrics, "fallen": (fell | (win > 0)).astype(jnp.float32)},
        )  # fmt: skip


def test_evaluation_counts_how_first_episodes_ended():
    """success / fell / lost / timeout shares equal the counts of the scripted rule on the
    evaluation's own initial states (the oracle), add up to 1, and a success with the fallen
    flag up counts once, as a success. Only first episodes count: the envs that end at step 5
    start new episodes that are ignored."""
    parts = pipeline.build(experiments.get("point_reach_tiny"))
    env = _ScriptedOutcomes(parts.env)
    n = 96

    def plan(params, cond, key, deterministic):  # a zero command: the puck never gets anywhere
        return jnp.zeros((cond.shape[0], 4, env.command_size)), None

    evaluate = jax.jit(make_evaluate(env, parts.llc_ppo, plan, n, obs_history=2, exec_steps=4,
                                     hold=2))  # fmt: skip
    key = jax.random.PRNGKey(7)
    params = (None, pipeline.normalizer_template(parts))  # (planner, its observation normalizer)
    r = jax.device_get(evaluate(params, parts.llc_ppo.init(jax.random.PRNGKey(0)), key))

    k_init = jax.random.split(key)[0]  # evaluate's split; hier_init's per-env keys
    goals = np.asarray(jax.vmap(parts.env.reset)(jax.random.split(k_init, n)).task)
    g = goals / np.linalg.norm(goals, axis=1, keepdims=True)
    fell, lost = g[:, 0] > 0.5, g[:, 0] < -0.5
    win = ~fell & ~lost & (g[:, 1] > 0)
    want = {"success_rate": win.mean(), "fell_rate": fell.mean(), "lost_rate": lost.mean(),
            "timeout_rate": (~fell & ~lost & ~win).mean(), "nonfinite_rate": 0.0}  # fmt: skip
    assert min(fell.sum(), lost.sum(), win.sum(), (~fell & ~lost & ~win).sum()) > 5
    for k, v in want.items():
        np.testing.assert_allclose(r[k], v, atol=1e-6, err_msg=k)
    assert r["unfinished"] == 0.0
