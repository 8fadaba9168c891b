"""The pick-and-place testbed: known answers for the planner, the gripper and the success test."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refine_dp_jax import envs

B = 16


@pytest.fixture(scope="module")
def env():
    return envs.make("testbed_pick_place")


@pytest.fixture(scope="module")
def reset(env):
    return jax.jit(env.reset)


@pytest.fixture(scope="module")
def expert_rollout(env):
    """Scripted planner (a command every 2 LLC steps) executed by the reference controller."""

    @jax.jit
    def run(key):
        s = jax.vmap(env.reset)(jax.random.split(key, B))

        def body(s, i):
            s = jax.lax.cond(
                i % 2 == 0,
                lambda s: jax.vmap(env.with_command)(s, jax.vmap(env.expert_command)(s)),
                lambda s: s,
                s,
            )
            nxt = jax.vmap(env.step)(s, jax.vmap(env.reference_action)(s))
            keep = s.done[:, None] > 0.5
            nxt = jax.tree.map(
                lambda a, b: jnp.where(keep.reshape((B,) + (1,) * (a.ndim - 1)), b, a), nxt, s
            )
            return nxt, (nxt.metrics["holding"], nxt.data.qpos[:, 7])

        return jax.lax.scan(body, s, jnp.arange(env.episode_steps))

    return run(jax.random.PRNGKey(0))


def test_expert_planner_with_reference_controller_succeeds(env, expert_rollout):
    s, (holding, box_z) = expert_rollout
    assert float(s.success.mean()) >= 0.9
    assert float(s.nonfinite.sum()) == 0
    assert np.all(np.asarray(holding).max(0) > 0)  # every env grasped
    assert float(np.asarray(box_z).max()) > 0.2  # the box was lifted, not pushed
    # Success ends the episode before the time limit and gives the sparse reward once.
    assert np.all(np.asarray(s.step_count) < env.episode_steps)


def _at_rest_in_goal(env, reset, key=0):
    s = reset(jax.random.PRNGKey(key))
    c = env.cfg
    q = s.data.qpos.at[5:7].set(s.task.goal).at[7].set(c.box_half)
    return s, s.data.replace(qpos=q, qvel=jnp.zeros_like(s.data.qvel))


def test_success_test_on_constructed_states(env, reset):
    s, data = _at_rest_in_goal(env, reset)
    released = s.task.replace(holding=jnp.zeros(()), closed=jnp.zeros(()))
    assert float(env.is_success(data, released)) == 1.0
    c = env.cfg
    outside = data.replace(qpos=data.qpos.at[5].add(c.goal_radius * 1.5))
    moving = data.replace(qvel=data.qvel.at[5].set(0.5))
    in_air = data.replace(qpos=data.qpos.at[7].set(0.3))
    held = released.replace(holding=jnp.ones(()), closed=jnp.ones(()))
    assert float(env.is_success(outside, released)) == 0.0
    assert float(env.is_success(moving, released)) == 0.0
    assert float(env.is_success(in_air, released)) == 0.0
    assert float(env.is_success(data, held)) == 0.0


def test_gripper_lifts_when_closed_and_drops_when_open(env, reset):
    """Cup placed on the box top: closed + lift raises the box; opening lets it fall."""
    s = reset(jax.random.PRNGKey(1))
    hand = env.hand_in_base(s.data.qpos[3:5])
    # Put the box right under the cup (base frame -> world).
    yaw, base = s.data.qpos[2], s.data.qpos[:2]
    c, sn = jnp.cos(yaw), jnp.sin(yaw)
    xy = base + jnp.array([c * hand[0], sn * hand[0]])
    q = s.data.qpos.at[5:7].set(xy).at[7].set(hand[1] - env.cfg.box_half)
    s = s.replace(data=s.data.replace(qpos=q))

    @jax.jit
    def run(s, cmd):
        s = env.with_command(s, cmd)
        body = lambda s, _: (env.step(s, env.reference_action(s)), None)
        return jax.lax.scan(body, s, None, length=30)[0]

    lift = jnp.array([0.0, 0.0, 0.0, hand[0], hand[1] + 0.25, 1.0])
    s1 = run(s, lift)
    assert float(s1.task.holding) == 1.0
    assert float(s1.data.qpos[7]) > hand[1] + 0.1
    s2 = run(s1, lift.at[5].set(-1.0))
    assert float(s2.task.holding) == 0.0
    assert float(s2.data.qpos[7]) < env.cfg.box_half + 0.02
    s3 = run(s, lift.at[5].set(-1.0))  # open from the start: the box stays down
    assert float(s3.data.qpos[7]) < hand[1]


def test_nonfinite_state_is_flagged_and_sanitized(env, reset):
    s = reset(jax.random.PRNGKey(2))
    bad = s.replace(data=s.data.replace(qvel=s.data.qvel.at[0].set(jnp.nan)))
    out = jax.jit(env.step)(bad, jnp.zeros(env.action_size))
    assert float(out.nonfinite) == 1.0 and float(out.done) == 1.0
    assert float(out.truncated) == 0.0
    assert np.isfinite(np.asarray(out.obs)).all()
    assert np.isfinite(np.asarray(out.privileged_obs)).all()
    assert np.isfinite(float(out.reward))


def test_curriculum_scales_start_ranges(env):
    keys = jax.random.split(jax.random.PRNGKey(3), 256)
    starts = jax.jit(jax.vmap(lambda k, c: env.reset(k, c).data.qpos[:2], in_axes=(0, None)))

    def spread(c):
        return float(jnp.linalg.norm(starts(keys, jnp.float32(c)), axis=-1).max())

    assert spread(2.0) > spread(1.0) > spread(0.0)
