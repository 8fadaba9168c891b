"""One test parameterized over every registered environment: the contract holds.

Each environment compiles ONE program (reset + a 200-step rollout with random commands, the
stage planner and the reference controller evaluated along the way); every check on that
environment reuses its output. Env 0 of the batch keeps its reset command and applies zero
actions (for the humanoids: the PD servos hold the default legs and the reset arm pose), the
others random commands every step and uniform random actions in [-1, 1].
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refine_dp_jax import envs
from refine_dp_jax.envs.base import denormalize_command, normalize_command

B = 3
STEPS = 200
# One xdist work unit per environment (each compiles its own rollout program).
pytestmark = pytest.mark.per_param("env_and_rollout")


def _rollout_fn(env):
    @jax.jit
    def rollout(key, curriculum):
        k_reset, k_run = jax.random.split(key)
        s = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, B), curriculum)
        s0 = s
        expert0 = jax.vmap(env.expert_command)(s)

        def body(s, k):
            kc, ka = jax.random.split(k)
            cmd = jax.vmap(env.sample_command)(jax.random.split(kc, B), s)
            cmd = cmd.at[0].set(s.command[0])  # env 0 keeps its reset command (hold still)
            s = jax.vmap(env.with_command)(s, cmd)
            ref = jax.vmap(env.reference_action)(s)
            expert = jax.vmap(env.expert_command)(s)
            a = jax.random.uniform(ka, (B, env.action_size), minval=-1.0, maxval=1.0)
            a = a.at[0].set(0.0)
            s = jax.vmap(env.step)(s, a)
            return s, dict(obs=s.obs, priv=s.privileged_obs, reward=s.reward, done=s.done,
                           task_reward=s.task_reward, nonfinite=s.nonfinite,
                           dp=jax.vmap(env.dp_observation)(s), cmd=cmd, ref=ref,
                           expert=expert, metrics=s.metrics)  # fmt: skip

        s, outs = jax.lax.scan(body, s, jax.random.split(k_run, STEPS))
        return s0, expert0, s, outs

    return rollout


_BUILT = {}  # per worker process: pytest-xdist may tear a module fixture down between items


# The four walking tasks' rollouts run in `make test-all` only (marked slow): none of them can
# succeed before a walking LLC exists (docs/humanoid.md), and each compiles its own physics.
WALKING = ("humanoid_box_pickup", "humanoid_pick_place", "humanoid_door", "humanoid_platform")
PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n in WALKING else n for n in envs.names()]


@pytest.fixture(scope="module", params=PARAMS)
def env_and_rollout(request):
    if request.param not in _BUILT:
        env = envs.make(request.param)
        run = _rollout_fn(env)
        _BUILT[request.param] = env, run, jax.device_get(run(jax.random.PRNGKey(0), 1.0))
    return _BUILT[request.param]


def test_registry_and_sizes(env_and_rollout):
    env, _, (s0, expert0, s, outs) = env_and_rollout
    assert env.name in envs.names()
    assert outs["obs"].shape == (STEPS, B, env.observation_size)
    assert outs["priv"].shape == (STEPS, B, env.privileged_observation_size)
    assert outs["dp"].shape == (STEPS, B, env.dp_observation_size)
    assert outs["cmd"].shape == outs["expert"].shape == (STEPS, B, env.command_size)
    assert expert0.shape == s0.command.shape == (B, env.command_size)
    assert outs["ref"].shape == (STEPS, B, env.action_size)
    assert s0.last_action.shape == (B, env.action_size)
    assert outs["reward"].shape == outs["done"].shape == (STEPS, B)
    assert env.command_low.shape == env.command_high.shape == (env.command_size,)
    low, high = np.asarray(env.command_low), np.asarray(env.command_high)
    assert np.all(low < high)
    for x in (outs["cmd"], outs["expert"], expert0):
        assert np.all(x >= low - 1e-5) and np.all(x <= high + 1e-5)
    assert env.dt > 0 and env.episode_steps > 0


def test_no_nan_over_200_random_steps(env_and_rollout):
    env, _, (s0, _, s, outs) = env_and_rollout
    for k, x in jax.tree_util.tree_leaves_with_path(outs):
        assert np.isfinite(np.asarray(x)).all(), jax.tree_util.keystr(k)
    assert np.isfinite(np.asarray(s.data.qpos)).all()
    assert np.isfinite(np.asarray(s0.obs)).all()
    assert outs["nonfinite"][:, 0].sum() == 0  # zero actions never explode


# -- humanoid behaviour on the same rollout ---------------------------------------------------
def _humanoid(env):
    if not env.name.startswith("humanoid_"):
        pytest.skip("humanoid only")


def test_humanoid_pd_default_pose_stands(env_and_rollout):
    """Zero offsets: the PD servos hold the default stance (with the env's default domain
    randomization: payloads, random initial arm configuration, pushes after 3 s or more):
    upright and at standing height for the whole 4 s, nothing ends in the first 2 s."""
    env, _, (_, _, _, outs) = env_and_rollout
    _humanoid(env)
    h, up = outs["metrics"]["base_height"][:, 0], outs["metrics"]["upright"][:, 0]
    assert env.episode_steps * env.dt >= 2.0
    assert h.min() > 0.7 and up.min() > 0.95, (h.min(), up.min())
    assert outs["done"][: int(2.0 / env.dt), 0].sum() == 0


def test_humanoid_expert_starts_by_walking(env_and_rollout):
    """At reset the robot is away from its work place: the stage planner commands motion
    (walking tasks); the standing tasks' planners never command a base velocity."""
    env, _, (_, expert0, _, outs) = env_and_rollout
    _humanoid(env)
    if not env.task_spec.walks:  # standing tasks: the planner never commands a base velocity
        assert np.all(outs["expert"][..., :3] == 0.0) and np.all(expert0[:, :3] == 0.0)
        return
    assert np.all(np.abs(expert0[:, :3]).max(axis=1) > 0.05)


def test_humanoid_contact_layout_matches_mjx(env_and_rollout):
    """The env's static map of MJX's contact rows (foot forces) is MJX's own."""
    env, _, (_, _, s, _) = env_and_rollout
    _humanoid(env)
    np.testing.assert_array_equal(np.asarray(s.data._impl.contact.geom)[0], env._contact_geoms)


def test_humanoid_reset_curriculum_scales_start_range(env_and_rollout):
    """Curriculum 0 puts the robot at the inner radius on the approach axis; curriculum 1
    spreads it over the configured ranges (radial distance, polar angle, heading)."""
    env, run, (s1, _, _, _) = env_and_rollout
    _humanoid(env)
    c, t = env.cfg, env.task_spec
    anchor = np.asarray(t.anchor(c))
    s0 = jax.device_get(run(jax.random.PRNGKey(1), 0.0)[0])
    xy = s0.data.qpos[:, :2]
    np.testing.assert_allclose(np.linalg.norm(xy - anchor, axis=1), c.start_distance[0], atol=1e-4)
    np.testing.assert_allclose(xy[:, 1], anchor[1], atol=1e-4)
    r1 = np.linalg.norm(s1.data.qpos[:, :2] - anchor, axis=1)
    assert np.all((r1 >= c.start_distance[0] - 1e-4) & (r1 <= c.start_distance[1] + 1e-4))
    assert np.ptp(r1) > 0 or c.start_distance[0] == c.start_distance[1]


def test_command_normalization_round_trip(env_and_rollout):
    env, _, _ = env_and_rollout
    c = jax.random.uniform(jax.random.PRNGKey(1), (16, env.command_size))
    c = env.command_low + c * (env.command_high - env.command_low)
    a = jax.vmap(lambda x: normalize_command(env, x))(c)
    assert np.all(np.abs(np.asarray(a)) <= 1.0 + 1e-5)
    back = jax.vmap(lambda x: denormalize_command(env, x))(a)
    np.testing.assert_allclose(np.asarray(back), np.asarray(c), rtol=1e-4, atol=1e-4)


def test_unknown_env_and_override_are_clear_errors():
    with pytest.raises(ValueError, match="unknown environment"):
        envs.make("no_such_env")
    with pytest.raises(ValueError):
        envs.make(envs.names()[0], no_such_field=1.0)


def test_point_reach_known_answers():
    """Expert command + reference controller always succeeds; a zero command never does; the
    success test is true at rest in the goal and false when moving or away from it."""
    env = envs.make("point_reach")
    keys = jax.random.split(jax.random.PRNGKey(3), 32)

    def run(policy):
        def body(s, _):
            s = jax.vmap(env.with_command)(s, policy(s))
            return jax.vmap(env.step)(s, jax.vmap(env.reference_action)(s)), None

        s = jax.vmap(env.reset)(keys)
        return jax.lax.scan(body, s, None, length=env.episode_steps)[0]

    expert = jax.jit(lambda: run(jax.vmap(env.expert_command)))()
    idle = jax.jit(lambda: run(lambda s: jnp.zeros((32, 2))))()
    assert float(expert.success.mean()) == 1.0
    assert float(idle.success.mean()) == 0.0
    s = env.reset(jax.random.PRNGKey(0))
    goal = s.task
    at_goal = s.data.replace(qpos=goal, qvel=jnp.zeros(2))
    assert float(env.is_success(at_goal, goal)) == 1.0
    assert float(env.is_success(at_goal.replace(qvel=jnp.ones(2)), goal)) == 0.0
    assert float(env.is_success(at_goal.replace(qpos=goal + 0.5), goal)) == 0.0


def test_mujoco_physics_twin_steps_with_mj_step():
    """sim2sim's twin of an env: its step is MuJoCo's C ``mj_step`` (a plain numpy loop over
    mujoco.MjData is the oracle, to float32 rounding), batched under vmap, and stays close to
    MJX's step for the same actions; an env without a swappable physics step is refused."""
    import types

    import mujoco

    from refine_dp_jax.config import ConfigError
    from refine_dp_jax.sim2sim import with_mujoco_physics

    env = envs.make("point_reach")
    twin = with_mujoco_physics(env)
    states = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 3))
    actions = jnp.array([[0.8, -0.5], [-0.3, 0.9], [0.5, 0.5]])
    step, twin_step = jax.jit(jax.vmap(env.step)), jax.jit(jax.vmap(twin.step))
    s_mjx, s_c = states, states
    for _ in range(10):
        s_mjx, s_c = step(s_mjx, actions), twin_step(s_c, actions)
    m, d = env.mj_model, mujoco.MjData(env.mj_model)
    for b in range(3):  # the oracle: MuJoCo in a plain loop from the same start
        mujoco.mj_resetData(m, d)
        d.qpos[:], d.qvel[:] = np.asarray(states.data.qpos[b]), np.asarray(states.data.qvel[b])
        for _ in range(10 * env.cfg.substeps):
            d.ctrl[:] = np.asarray(actions[b])
            mujoco.mj_step(m, d)
        np.testing.assert_allclose(np.asarray(s_c.data.qpos[b]), d.qpos, atol=1e-5)
        np.testing.assert_allclose(np.asarray(s_c.data.qvel[b]), d.qvel, atol=1e-4)
    moved = np.abs(np.asarray(s_c.data.qpos - states.data.qpos)).max()
    assert moved > 1e-2, moved  # the actions did move the point
    np.testing.assert_allclose(np.asarray(s_c.data.qpos), np.asarray(s_mjx.data.qpos), atol=1e-3)
    with pytest.raises(ConfigError, match="no swappable physics step"):
        with_mujoco_physics(types.SimpleNamespace(name="humanoid_llc"))
