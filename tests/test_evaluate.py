"""The evaluation's account of how episodes ended (``evaluate.make_evaluate``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiments
from refine_dp_jax import pipeline
from refine_dp_jax.evaluate import make_evaluate


class _ScriptedOutcomes:
    """``point_reach`` whose episodes end at their 5th LLC step by a rule on the goal's
    direction g (drawn at reset): g_x > 0.5 the robot "fell", g_x < -0.5 the object is "lost",
    otherwise g_y > 0 a success (reported with the fallen flag up too: a success counts as a
    success), the rest run out of time (the puck's own success test is switched off).
    ``by_command``: instead, a success at the 5th step where the command's x is positive, out
    of time otherwise."""

    def __init__(self, env, by_command=False):
        self._env, self._by_command = env, by_command

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
        if self._by_command:
            fell = lost = jnp.zeros((), bool)
            win = (at & (s.command[0] > 0)).astype(jnp.float32)
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


def test_outcomes_classify_first_episodes_by_hand_made_traces():
    """experiments/outcomes.classify on five envs whose traces are written out by hand: a
    success (with the fallen flag up: counts as a success), a fall, a lost object, a timeout
    that missed "released" only and one that missed both parts, each read at the first
    episode's end (frames after it repeat the final state, as a finished env's do). The
    states' flags go through hierarchy.episode_ending, as record_fn's do."""
    import types

    from experiments.outcomes import classify
    from refine_dp_jax.train.hierarchy import episode_ending

    f, n = 6, 5
    z = lambda: np.zeros((f, n))  # noqa: E731
    rec = {"done": z(), "success": z(), "truncated": z(), "nonfinite": z(), "fallen": z(),
           "obj_z": z() + 0.8, "goal_offset": np.zeros((f, n, 3)) + 0.3, "hold": z(),
           "parts": {"in_disc": z(), "released": z()}}  # fmt: skip
    rec["done"][2:, 0] = rec["success"][2:, 0] = rec["fallen"][2:, 0] = 1  # env 0: success
    rec["done"][1:, 1] = rec["fallen"][1:, 1] = 1  # env 1: fell at frame 1
    rec["done"][3:, 2] = 1  # env 2: ended early, not fallen: the object lost
    rec["done"][5:, 3] = rec["truncated"][5:, 3] = 1  # env 3: out of time, in the disc
    rec["parts"]["in_disc"][:, 3] = 1
    rec["obj_z"][2, 3] = 0.85  # rose 5 cm on the way
    rec["hold"][1:3, 3] = (0.1, 0.2)  # the test held for 0.2 s, then broke
    rec["goal_offset"][4:, 3] = (0.03, 0.04, 0.0)  # 5 cm from the goal's centre
    rec["done"][5:, 4] = rec["truncated"][5:, 4] = 1  # env 4: out of time, missed both
    rec["parts"]["released"][:5, 4] = 1  # released until the last frame
    state = types.SimpleNamespace(**{k: rec.pop(k) for k in
                                     ("done", "success", "truncated", "nonfinite")},
                                  metrics={"fallen": rec.pop("fallen")})  # fmt: skip
    r = classify({**rec, **episode_ending(state)}, goal_radius=0.1)
    want = {"success": 0.2, "fell": 0.2, "lost": 0.2, "nonfinite": 0.0, "timeout": 0.4}
    assert {k: r[k] for k in want} == pytest.approx(want)
    t = r["timed_out"]
    assert t["episodes"] == 2
    assert t["missed_at_end"] == {"in_disc": 0.5, "released": 1.0}
    assert t["missed_combinations"] == {"released": 1, "in_disc + released": 1}
    assert t["object_rose_2cm"] == 0.5 and t["object_entered_goal_disc"] == 0.5
    assert t["end_goal_offset_quartiles_m"]["y"] == pytest.approx([0.105, 0.17, 0.235])
    assert t["longest_hold_quartiles_s"] == pytest.approx([0.05, 0.1, 0.15])
    assert t["end_height_vs_goal"] == {"level": 0.5, "below": 0.0, "above": 0.5}


def test_trajectory_recorder_replays_the_evaluations_episodes():
    """With the same key the recorder (videos, experiments/outcomes) runs the evaluation's
    episodes: the same initial states and the same planner keys (a deterministic DP still
    draws its chains' x_K from them). The planner here commands a random sign from its key and
    the episode succeeds where it was positive: the recorder's count of successes equals the
    evaluation's. (It drew its planner keys differently before: 35 against 36 of 64.)"""
    from refine_dp_jax.evaluate import make_trajectory_recorder

    parts = pipeline.build(experiments.get("point_reach_tiny"))
    env = _ScriptedOutcomes(parts.env, by_command=True)
    n = 64

    def plan(params, cond, key, deterministic):
        sign = jnp.sign(jax.random.normal(key, (cond.shape[0], 1, 1)))
        return jnp.broadcast_to(sign, (cond.shape[0], 4, env.command_size)), None

    args = (env, parts.llc_ppo, plan)
    evaluate = jax.jit(make_evaluate(*args, n, obs_history=2, exec_steps=4, hold=2))
    record = jax.jit(make_trajectory_recorder(*args, obs_history=2, exec_steps=4, hold=2,
                                              num_envs=n, record=lambda s: s.success))  # fmt: skip
    params = (None, pipeline.normalizer_template(parts))
    llc = parts.llc_ppo.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(3)
    rate = float(evaluate(params, llc, key)["success_rate"])
    final = np.asarray(record(params, llc, key))[-1]  # [n]: finished envs keep their state
    assert 0.2 < rate < 0.8
    assert final.mean() == pytest.approx(rate)
