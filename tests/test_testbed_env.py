"""The pick-and-place testbed: contract shapes, known answers for the planner, the gripper, the
success and failure tests, the non-finite guard and the config checks.

Fixed seeds, one batch size. To keep compile time down every test drives the same few jitted
functions (vmapped reset, step, command setters) from short host loops; only the step contains
physics, so MJX compiles once per module.
"""

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refine_dp_jax import envs
from refine_dp_jax.envs.testbed import TestbedConfig, TestbedEnv
from refine_dp_jax.errors import ConfigError

B = 16  # environments in every batch
RANDOM_STEPS = 200
METRICS = {"vel_err", "yaw_rate_err", "hand_err", "box_goal_dist", "holding"}


@dataclass(frozen=True)
class Fns:
    """Compiled functions over a batch of B environments."""

    reset: Any  # (keys [B], curriculum []) -> state
    step: Any  # (state, action [B, Da], use_reference [], freeze []) -> state
    with_command: Any  # (state, command [B, Dc]) -> state
    sample_command: Any  # (key, state) -> [B, Dc]
    expert_command: Any  # state -> [B, Dc]
    dp_observation: Any  # state -> [B, Ds]


@pytest.fixture(scope="module")
def env():
    return envs.make("testbed_pick_place")


@pytest.fixture(scope="module")
def fns(env):
    @jax.jit
    def step(s, a, use_reference, freeze):
        """``env.step`` with the action given or from the reference controller; with
        ``freeze``, finished envs keep their state (as the hierarchical rollout does)."""
        a = jnp.where(use_reference, jax.vmap(env.reference_action)(s), a)
        nxt = jax.vmap(env.step)(s, a)
        keep = (s.done > 0.5) & freeze
        return jax.tree.map(
            lambda n, o: jnp.where(keep.reshape(keep.shape + (1,) * (n.ndim - 1)), o, n), nxt, s
        )

    return Fns(
        reset=jax.jit(jax.vmap(env.reset, in_axes=(0, None))),
        step=step,
        with_command=jax.jit(jax.vmap(env.with_command)),
        sample_command=jax.jit(
            lambda k, s: jax.vmap(env.sample_command)(jax.random.split(k, B), s)
        ),
        expert_command=jax.jit(jax.vmap(env.expert_command)),
        dp_observation=jax.jit(jax.vmap(env.dp_observation)),
    )


@pytest.fixture(scope="module")
def start(fns):
    """B fresh episodes at curriculum 1."""
    return fns.reset(jax.random.split(jax.random.PRNGKey(0), B), jnp.float32(1.0))


def _get(batch, i):
    return jax.tree.map(lambda b: b[i], batch)


def _zeros(env):
    return jnp.zeros((B, env.action_size))


# -- sizes and random rollouts -------------------------------------------------------------


@pytest.fixture(scope="module")
def random_rollout(env, fns, start):
    """Random actions in [-1, 1] and a fresh random command every 10 steps."""
    rng = np.random.default_rng(0)
    key = jax.random.PRNGKey(1)
    s, outs = start, []
    for i in range(RANDOM_STEPS):
        if i % 10 == 0:
            key, k = jax.random.split(key)
            s = fns.with_command(s, fns.sample_command(k, s))
        a = jnp.asarray(rng.uniform(-1.0, 1.0, (B, env.action_size)), jnp.float32)
        s = fns.step(s, a, False, False)
        outs.append((s.obs, s.privileged_obs, s.reward, s.done, s.nonfinite,
                     fns.dp_observation(s), s.metrics))  # fmt: skip
    return s, jax.tree.map(lambda *x: np.stack(x), *outs)


def test_sizes_of_vmapped_reset_and_step(env, start, random_rollout):
    s, (obs, priv, reward, done, _, dp_obs, metrics) = random_rollout
    t = RANDOM_STEPS
    assert (env.action_size, env.observation_size, env.privileged_observation_size,
            env.command_size, env.dp_observation_size) == (5, 26, 34, 6, 12)  # fmt: skip
    assert obs.shape == (t, B, env.observation_size)
    assert priv.shape == (t, B, env.privileged_observation_size)
    assert dp_obs.shape == (t, B, env.dp_observation_size)
    assert reward.shape == done.shape == (t, B)
    assert start.obs.shape == (B, env.observation_size)
    assert start.privileged_obs.shape == (B, env.privileged_observation_size)
    assert start.command.shape == (B, env.command_size)
    assert s.last_action.shape == (B, env.action_size)
    assert s.step_count.dtype == jnp.int32 and int(s.step_count[0]) == t
    assert set(metrics) == set(start.metrics) == METRICS
    assert all(m.shape == (t, B) for m in metrics.values())
    assert env.command_low.shape == env.command_high.shape == (env.command_size,)
    assert np.isclose(env.dt, 0.05) and env.episode_steps == 280
    # The command starts at "hold": base still, gripper open.
    np.testing.assert_allclose(np.asarray(start.command[:, :3]), 0.0)
    assert np.all(np.asarray(start.command[:, 5]) < 0)


def test_no_nan_over_200_random_steps(env, random_rollout):
    s, (obs, priv, reward, done, nonfinite, dp_obs, metrics) = random_rollout
    for x in (obs, priv, reward, dp_obs, *metrics.values(), s.data.qpos, s.data.qvel):
        assert np.isfinite(np.asarray(x)).all()
    assert nonfinite.sum() == 0.0
    c = env.cfg
    assert reward.max() <= c.w_vel + c.w_yaw + c.w_hand + 1e-5
    assert reward.min() >= -c.w_action_rate * 4.0 * env.action_size - 1e-5  # |da|^2 <= 4/dim


def test_curriculum_scales_start_ranges(env, fns):
    keys = jax.random.split(jax.random.PRNGKey(3), B)

    def spread(c):
        q = np.asarray(fns.reset(keys, jnp.float32(c)).data.qpos[:, :3])
        facing = np.arctan2(-q[:, 1], -q[:, 0])  # the yaw facing the box
        off = np.abs((q[:, 2] - facing + np.pi) % (2 * np.pi) - np.pi)
        return np.linalg.norm(q[:, :2], axis=-1).max(), off.max()

    (d0, h0), (d1, h1), (d2, h2) = spread(0.0), spread(1.0), spread(2.0)
    assert d2 > d1 > d0 and h2 > h1 > h0
    assert h0 < 1e-5 and np.isclose(d0, env.cfg.start_distance[0])


# -- the scripted planner ------------------------------------------------------------------


def test_expert_planner_with_reference_controller_succeeds(env, fns, start):
    """Scripted planner (a command every 2 LLC steps) executed by the reference controller.
    A finished env stays frozen (as the hierarchical rollout does until its decision ends)."""
    s, holding, box_z, task_reward = start, [], [], []
    for i in range(env.episode_steps):
        if i % 2 == 0:
            s = fns.with_command(s, fns.expert_command(s))
        live = 1.0 - s.done
        s = fns.step(s, _zeros(env), True, True)
        holding.append(s.metrics["holding"])
        box_z.append(s.data.qpos[:, 7])
        task_reward.append(s.task_reward * live)
    holding, box_z, task_reward = (np.stack(x) for x in (holding, box_z, task_reward))
    success = np.asarray(s.success)
    assert success.mean() >= 0.9
    assert float(s.nonfinite.sum()) == 0
    assert np.all(holding.max(0) > 0)  # every env grasped
    assert box_z.max() > 0.2  # the box was lifted, not pushed
    # Success ends the episode before the time limit and gives the sparse reward exactly once.
    assert np.all(np.asarray(s.step_count)[success > 0] < env.episode_steps)
    np.testing.assert_allclose(task_reward.sum(0), success)
    assert np.all(np.asarray(s.truncated)[success > 0] == 0)


# -- success, failure and non-finite states ------------------------------------------------


def _at_rest_in_goal(env, s):
    """One env's state with the box at rest in the middle of the goal disc, released."""
    q = s.data.qpos.at[5:7].set(s.task.goal).at[7].set(env.cfg.box_half)
    return s.replace(data=s.data.replace(qpos=q, qvel=jnp.zeros_like(s.data.qvel)))


def test_success_and_failure_tests_on_constructed_states(env, start):
    c = env.cfg
    s = _at_rest_in_goal(env, _get(start, 0))
    data, released = s.data, s.task
    assert float(env.is_success(data, released)) == 1.0
    edge = data.replace(qpos=data.qpos.at[6].add(c.goal_radius * 0.9))
    outside = data.replace(qpos=data.qpos.at[5].add(c.goal_radius * 1.5))
    moving = data.replace(qvel=data.qvel.at[5].set(0.5))
    in_air = data.replace(qpos=data.qpos.at[7].set(0.3))
    held = released.replace(holding=jnp.ones(()), closed=jnp.ones(()))
    closed_only = released.replace(closed=jnp.ones(()))
    assert float(env.is_success(edge, released)) == 1.0
    assert float(env.is_success(outside, released)) == 0.0
    assert float(env.is_success(moving, released)) == 0.0
    assert float(env.is_success(in_air, released)) == 0.0
    assert float(env.is_success(data, held)) == 0.0
    assert float(env.is_success(data, closed_only)) == 0.0
    assert float(env.is_failure(data)) == 0.0
    away = data.replace(qpos=data.qpos.at[5:7].set(jnp.array([c.arena_radius + 0.1, 0.0])))
    assert float(env.is_failure(away)) == 1.0


def test_step_flags_on_constructed_states(env, fns, start):
    """One step from constructed states: success ends the episode with the task reward once;
    variants do not succeed; a lost box fails; NaN / exploding states are flagged non-finite,
    end the episode, and never leak into observations, rewards or metrics."""
    c = env.cfg
    rest = jax.vmap(lambda s: _at_rest_in_goal(env, s))(start)
    q, v = rest.data.qpos, rest.data.qvel
    q = q.at[1, 6].add(c.goal_radius * 0.8)  # near the edge, inside: success
    q = q.at[2, 5].add(c.goal_radius * 1.5)  # outside
    v = v.at[3, 5].set(1.0)  # sliding
    q = q.at[4, 7].set(0.3)  # in the air
    q = q.at[6, 5:7].set(jnp.array([c.arena_radius + 0.1, 0.0]))  # lost: failure
    v = v.at[7, 0].set(jnp.nan)  # non-finite
    v = v.at[8, 8].set(1e4)  # exploding
    s = rest.replace(data=rest.data.replace(qpos=q, qvel=v))
    closed = s.command.at[5, 5].set(1.0)  # gripper still closed: not released
    s = fns.with_command(s, closed)
    out = fns.step(s, _zeros(env), False, False)
    success, done, tr = (np.asarray(x) for x in (out.success, out.done, out.task_reward))
    truncated, nonfinite = np.asarray(out.truncated), np.asarray(out.nonfinite)
    np.testing.assert_array_equal(success[:9], [1, 1, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(done[:9], [1, 1, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(nonfinite[:9], [0, 0, 0, 0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(tr, success)
    assert truncated.sum() == 0
    for x in (out.obs, out.privileged_obs, out.reward, fns.dp_observation(out),
              *out.metrics.values()):  # fmt: skip
        assert np.isfinite(np.asarray(x)).all()
    # Stepped on, the finished envs stay successful and get no second task reward.
    again = fns.step(out, _zeros(env), False, False)
    assert float(again.task_reward.sum()) == 0.0
    np.testing.assert_array_equal(np.asarray(again.success), success)
    # A NaN command or action never reaches the physics or the observations.
    fresh = fns.with_command(start, jnp.full((B, env.command_size), jnp.nan, jnp.float32))
    assert np.isfinite(np.asarray(fresh.command)).all() and np.isfinite(np.asarray(fresh.obs)).all()
    out = fns.step(fresh, jnp.full((B, env.action_size), jnp.nan, jnp.float32), False, False)
    assert float(out.nonfinite.sum()) == 0.0 and np.isfinite(np.asarray(out.data.qpos)).all()


# -- the gripper ---------------------------------------------------------------------------


def test_gripper_lifts_when_closed_and_drops_when_open(env, fns, start):
    """Box right under the cup. Closed + lift raises it (even envs); open + lift leaves it down
    (odd envs). Then: opening drops it to the floor (envs 0 mod 4); a held box turned upside
    down and spinning slows down (envs 2 mod 4: the cup's spin damping acts in the world frame;
    in the box frame it would speed this box up)."""
    c = env.cfg
    q = start.data.qpos
    hand = jax.vmap(env.hand_in_base)(q[:, 3:5])  # [B, 2]
    yaw = q[:, 2]
    xy = q[:, :2] + hand[:, :1] * jnp.stack([jnp.cos(yaw), jnp.sin(yaw)], -1)
    q = q.at[:, 5:7].set(xy).at[:, 7].set(hand[:, 1] - c.box_half)
    s = start.replace(data=start.data.replace(qpos=q))
    even = (jnp.arange(B) % 2 == 0)[:, None]
    lift = jnp.concatenate([jnp.zeros((B, 3)), hand.at[:, 1].add(0.25), jnp.ones((B, 1))], -1)

    def run(s, cmd, n=30):
        s = fns.with_command(s, cmd)
        for _ in range(n):
            s = fns.step(s, _zeros(env), True, False)
        return s

    s1 = run(s, jnp.where(even, lift, lift.at[:, 5].set(-1.0)))
    holding, box_z = np.asarray(s1.task.holding), np.asarray(s1.data.qpos[:, 7])
    assert np.all(holding[::2] == 1) and np.all(holding[1::2] == 0)
    assert np.all(box_z[::2] > np.asarray(hand[::2, 1]) + 0.1)
    assert np.all(box_z[1::2] < c.box_half + 0.01)

    drop = (jnp.arange(B) % 4 == 0)[:, None]
    flip = jnp.arange(B) % 4 == 2
    spin = jnp.array([3.0, 2.0, 4.0])
    upside_down = jnp.array([0.0, 1.0, 0.0, 0.0])
    q = jnp.where(flip[:, None], s1.data.qpos.at[:, 8:12].set(upside_down), s1.data.qpos)
    v = jnp.where(flip[:, None], s1.data.qvel.at[:, 8:11].set(spin), s1.data.qvel)
    s2 = run(
        s1.replace(data=s1.data.replace(qpos=q, qvel=v)),
        jnp.where(drop, lift.at[:, 5].set(-1.0), lift),
    )
    holding, box_z = np.asarray(s2.task.holding), np.asarray(s2.data.qpos[:, 7])
    box_speed = np.linalg.norm(np.asarray(s2.data.qvel[:, 5:8]), axis=-1)
    assert np.all(holding[0::4] == 0) and np.all(box_z[0::4] < c.box_half + 0.02)
    assert np.all(box_speed[0::4] < c.rest_speed)  # fell and rests on the floor
    spin_after = np.linalg.norm(np.asarray(s2.data.qvel[2::4, 8:11]), axis=-1)
    assert np.all(holding[2::4] == 1) and np.all(spin_after < 0.9 * float(jnp.linalg.norm(spin)))
    assert np.all(box_z[1::2] < c.box_half + 0.01)  # never grasped: still down
    assert float(s2.nonfinite.sum()) == 0.0


# -- config --------------------------------------------------------------------------------


def test_config_checks_and_overrides():
    with pytest.raises(ValueError, match="no_such_field"):
        envs.make("testbed_pick_place", no_such_field=1.0)
    for bad in ({"physics_dt": 0.0}, {"substeps": 0}, {"hand_x": (0.7, 0.2)},
                {"capture_radius": 0.2, "release_radius": 0.1}, {"sigma_vel": -1.0},
                {"arena_radius": 0.5}):  # fmt: skip
        with pytest.raises(ConfigError):
            TestbedConfig(**bad)
    env = TestbedEnv(TestbedConfig(substeps=4, episode_seconds=10.0))
    assert np.isclose(env.dt, 0.04) and env.episode_steps == 250


def test_curriculum_spans_reach_the_papers_widened_ranges(env):
    """Up to 1 the spans scale linearly; at 2 they are the paper's 320 %, 125 %, 600 %."""
    np.testing.assert_allclose(np.asarray(env.curriculum_spans(0.5)), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(np.asarray(env.curriculum_spans(1.0)), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(np.asarray(env.curriculum_spans(2.0)), [3.2, 1.25, 6.0], rtol=1e-6)
