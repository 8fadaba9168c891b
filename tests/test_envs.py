"""One test parameterized over every registered environment: the contract holds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refine_dp_jax import envs
from refine_dp_jax.envs.base import denormalize_command, normalize_command

B = 4
STEPS = 200


@pytest.fixture(scope="module", params=envs.names())
def env_and_rollout(request):
    env = envs.make(request.param)

    @jax.jit
    def rollout(key):
        k_reset, k_run = jax.random.split(key)
        s = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, B), 1.0)
        s0 = s

        def body(s, k):
            kc, ka = jax.random.split(k)
            cmd = jax.vmap(env.sample_command)(jax.random.split(kc, B), s)
            s = jax.vmap(env.with_command)(s, cmd)
            a = jax.random.uniform(ka, (B, env.action_size), minval=-1.0, maxval=1.0)
            s = jax.vmap(env.step)(s, a)
            return s, (s.obs, s.privileged_obs, s.reward, s.done, s.task_reward,
                       jax.vmap(env.dp_observation)(s))  # fmt: skip

        s, outs = jax.lax.scan(body, s, jax.random.split(k_run, STEPS))
        return s0, s, outs

    return env, rollout(jax.random.PRNGKey(0))


def test_registry_and_sizes(env_and_rollout):
    env, (s0, s, outs) = env_and_rollout
    assert env.name in envs.names()
    obs, priv, reward, done, task_reward, dp_obs = outs
    assert obs.shape == (STEPS, B, env.observation_size)
    assert priv.shape == (STEPS, B, env.privileged_observation_size)
    assert dp_obs.shape == (STEPS, B, env.dp_observation_size)
    assert s0.command.shape == (B, env.command_size)
    assert s0.last_action.shape == (B, env.action_size)
    assert reward.shape == done.shape == (STEPS, B)
    assert env.command_low.shape == env.command_high.shape == (env.command_size,)
    assert np.all(np.asarray(env.command_low) < np.asarray(env.command_high))
    assert env.dt > 0 and env.episode_steps > 0


def test_no_nan_over_200_random_steps(env_and_rollout):
    env, (_, s, outs) = env_and_rollout
    for x in outs:
        assert np.isfinite(np.asarray(x)).all()
    assert np.isfinite(np.asarray(s.data.qpos)).all()


def test_command_normalization_round_trip(env_and_rollout):
    env, _ = env_and_rollout
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
