"""``point_reach``: the smallest environment of the contract, a probe for the pipeline.

A puck (mass, floor friction as joint damping) on two slide joints driven by force motors.
Command (the DP's action): desired planar velocity (vx, vy). LLC action: the two forces.
Task: come to rest inside a goal disc. Known answers: the expert command (a P-controller on the
goal) with the reference action (force proportional to the velocity error) succeeds; a zero
command never does. Everything is so small that the full pipeline runs in seconds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import mujoco
from mujoco import mjx

from refine_dp_jax.envs.base import EnvState, coerce_float_fields, put_model, register
from refine_dp_jax.errors import ConfigError

_XML = """
<mujoco model="point_reach">
  <option timestep="{dt}" iterations="1" ls_iterations="4"><flag contact="disable"/></option>
  <worldbody>
    <geom name="floor" type="plane" size="3 3 0.1" rgba=".8 .8 .8 1"/>
    <site name="goal" pos="0 0 0.001" size="{radius} 0.001" type="cylinder" rgba="0 .8 0 .4"/>
    <body name="puck" pos="0 0 0.05">
      <joint name="x" type="slide" axis="1 0 0" damping="{damping}"/>
      <joint name="y" type="slide" axis="0 1 0" damping="{damping}"/>
      <geom type="cylinder" size="0.08 0.04" mass="{mass}" rgba=".2 .4 .9 1"/>
    </body>
  </worldbody>
  <actuator>
    <motor joint="x" gear="{force}" ctrlrange="-1 1" ctrllimited="true"/>
    <motor joint="y" gear="{force}" ctrlrange="-1 1" ctrllimited="true"/>
  </actuator>
</mujoco>
"""


@dataclass(frozen=True)
class PointReachConfig:
    physics_dt: float = 0.02  # s per physics step
    substeps: int = 2  # physics steps per LLC step
    episode_steps: int = 60  # LLC steps per episode
    mass: float = 1.0  # kg
    damping: float = 2.0  # N s / m, stands in for floor friction
    force_scale: float = 4.0  # N per unit action
    max_speed: float = 1.0  # m/s, command range
    goal_radius: float = 0.1  # m
    rest_speed: float = 0.1  # m/s: "at rest"
    start_distance: tuple[float, float] = (0.5, 1.0)  # m, scaled by the curriculum
    vel_sigma: float = 0.25  # tracking reward exp(-|v - v_cmd|^2 / sigma^2)
    action_rate_weight: float = 0.01

    def __post_init__(self):
        coerce_float_fields(self)
        if self.physics_dt <= 0 or self.substeps < 1 or self.episode_steps < 1:
            raise ConfigError("point_reach: physics_dt > 0, substeps >= 1, episode_steps >= 1")
        if not 0 < self.start_distance[0] <= self.start_distance[1]:
            raise ConfigError("point_reach: start_distance must be 0 < low <= high")


class PointReachEnv:
    name = "point_reach"
    action_size = 2
    command_size = 2
    dp_observation_size = 4  # goal offset (2), velocity (2)
    observation_size = 8  # velocity (2), command (2), velocity error (2), last action (2)
    privileged_observation_size = 10  # + goal offset

    def __init__(self, cfg: PointReachConfig = PointReachConfig()):
        self.cfg = cfg
        self.mj_model = mujoco.MjModel.from_xml_string(
            _XML.format(
                dt=cfg.physics_dt,
                radius=cfg.goal_radius,
                damping=cfg.damping,
                mass=cfg.mass,
                force=cfg.force_scale,
            )  # fmt: skip
        )
        self.mjx_model = put_model(self.mj_model)
        self.dt = cfg.physics_dt * cfg.substeps
        self.episode_steps = cfg.episode_steps
        self.render_camera = (3.0, -60.0, 90.0)

    @property
    def command_low(self):
        return -jnp.full((2,), self.cfg.max_speed)

    @property
    def command_high(self):
        return jnp.full((2,), self.cfg.max_speed)

    def _obs(self, data, command, last_action, goal):
        vel = data.qvel[:2]
        obs = jnp.concatenate([vel, command, command - vel, last_action])
        priv = jnp.concatenate([obs, goal - data.qpos[:2]])
        return jnp.nan_to_num(obs), jnp.nan_to_num(priv)

    def reset(self, key, curriculum=1.0) -> EnvState:
        k_r, k_a, k_rng = jax.random.split(key, 3)
        lo, hi = self.cfg.start_distance
        r = jax.random.uniform(k_r, minval=lo, maxval=lo + (hi - lo) * curriculum)
        ang = jax.random.uniform(k_a, minval=-jnp.pi, maxval=jnp.pi)
        goal = r * jnp.array([jnp.cos(ang), jnp.sin(ang)])
        data = mjx.make_data(self.mjx_model)
        cmd = jnp.zeros((2,))
        obs, priv = self._obs(data, cmd, jnp.zeros((2,)), goal)
        zero = jnp.zeros(())
        return EnvState(
            data=data, obs=obs, privileged_obs=priv, reward=zero, done=zero, truncated=zero,
            command=cmd, task_reward=zero, success=zero, nonfinite=zero,
            step_count=jnp.zeros((), jnp.int32), last_action=jnp.zeros((2,)), task=goal,
            metrics={"vel_err": zero, "hand_err": zero, "goal_dist": r}, rng=k_rng,
        )  # fmt: skip

    def is_success(self, data, goal) -> jax.Array:
        near = jnp.linalg.norm(goal - data.qpos[:2]) < self.cfg.goal_radius
        still = jnp.linalg.norm(data.qvel[:2]) < self.cfg.rest_speed
        return (near & still).astype(jnp.float32)

    def physics_step(self, data):
        """One physics step (``mjx.step``; see ``TestbedEnv.physics_step``)."""
        return mjx.step(self.mjx_model, data)

    def step(self, state: EnvState, action) -> EnvState:
        a = jnp.clip(jnp.nan_to_num(action), -1.0, 1.0)
        data = state.data.replace(ctrl=a)
        data = jax.lax.fori_loop(0, self.cfg.substeps, lambda _, d: self.physics_step(d), data)
        bad = ~(jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel)))
        bad = bad | (jnp.max(jnp.abs(data.qvel)) > 100.0)
        data = jax.tree.map(lambda x: jnp.nan_to_num(x) if jnp.issubdtype(x.dtype, jnp.floating)
                            else x, data)  # fmt: skip
        goal = state.task
        vel_err = jnp.linalg.norm(state.command - data.qvel[:2])
        reward = jnp.exp(-(vel_err**2) / self.cfg.vel_sigma**2) - self.cfg.action_rate_weight * (
            jnp.sum(jnp.square(a - state.last_action))
        )
        success = jnp.maximum(state.success, self.is_success(data, goal))
        newly = success * (1.0 - state.success)
        steps = state.step_count + 1
        timeout = (steps >= self.episode_steps).astype(jnp.float32)
        nonfinite = bad.astype(jnp.float32)
        done = jnp.maximum(jnp.maximum(success, timeout), nonfinite)
        obs, priv = self._obs(data, state.command, a, goal)
        return state.replace(
            data=data, obs=obs, privileged_obs=priv,
            reward=jnp.where(bad, 0.0, reward), done=done,
            truncated=timeout * (1.0 - success) * (1.0 - nonfinite),
            task_reward=newly, success=success, nonfinite=nonfinite, step_count=steps,
            last_action=a,
            metrics={"vel_err": vel_err, "hand_err": vel_err,
                     "goal_dist": jnp.linalg.norm(goal - data.qpos[:2])},
        )  # fmt: skip

    def with_command(self, state: EnvState, command) -> EnvState:
        obs, priv = self._obs(state.data, command, state.last_action, state.task)
        return state.replace(command=command, obs=obs, privileged_obs=priv)

    def sample_command(self, key, state: EnvState):
        k1, k2 = jax.random.split(key)
        v = jax.random.uniform(k1, (2,), minval=-1.0, maxval=1.0) * self.cfg.max_speed
        return jnp.where(jax.random.bernoulli(k2, 0.2), 0.0, v)

    def expert_command(self, state: EnvState):
        offset = state.task - state.data.qpos[:2]
        v = 2.0 * offset
        speed = jnp.linalg.norm(v)
        cap = 0.8 * self.cfg.max_speed
        return v * jnp.minimum(1.0, cap / jnp.maximum(speed, 1e-6))

    def reference_action(self, state: EnvState):
        err = state.command - state.data.qvel[:2]
        force = self.cfg.damping * state.command + 8.0 * err
        return jnp.clip(force / self.cfg.force_scale, -1.0, 1.0)

    def dp_observation(self, state: EnvState):
        return jnp.concatenate([state.task - state.data.qpos[:2], state.data.qvel[:2]])


def make_point_reach(**overrides) -> PointReachEnv:
    names = {f.name for f in dataclasses.fields(PointReachConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise ConfigError(f"point_reach has no config field(s) {sorted(unknown)}")
    return PointReachEnv(PointReachConfig(**overrides))


register("point_reach", make_point_reach)
