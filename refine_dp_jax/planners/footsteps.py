"""Velocity -> footstep planner: turns the DP's base-velocity command into the LLC's
foot-placement command (swing-foot flag, countdown, target swing-foot pose in the stance-foot
frame), as in REFINE-DP's lower-body interface.

A fixed-period alternating gait. The gait clock is time: step k = floor(t / T) swings the left
foot when k is even and the right foot when k is odd; the other foot is the stance foot. In
steady walking at body velocity v each landing foot ends v*T ahead of the other one, so the
target of the swing foot in the stance-foot frame is

    x = vx * T,   y = +-nominal_width + vy * T  (never narrower than min_width),
    yaw = wz * T, the position turned by yaw / 2 (a turning stride),

each step clipped to ``max_step``. Below ``stand_speed`` the robot stands: no foot swings and
the target is the swing foot's own current pose (the feet stay). Everything is a pure
function of its arguments: jittable, vmappable, no state.

Terrain: with a ``terrain(xy) -> z`` height function (the task's: a platform), the command
also carries the target's height above the stance foot's ground (``target_z``), and the
reference swing clears the higher of the two grounds by ``swing_height``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import struct

from refine_dp_jax.robots.spatial import rot2d, wrap_angle


@dataclass(frozen=True)
class FootstepParams:
    """Gait parameters of the planner."""

    step_period: float = 0.4  # s per step (one swing); the paper's air-time target is 0.4 s
    nominal_width: float = 0.233  # m, lateral foot distance when walking straight (hip width)
    min_width: float = 0.16  # m, feet never closer laterally (no crossing)
    max_step_x: float = 0.35  # m, longest forward/backward displacement per step
    max_step_y: float = 0.15  # m, largest extra lateral displacement per step
    max_step_yaw: float = 0.5  # rad, largest turn per step
    stand_speed: float = 0.05  # m/s (rad/s for yaw): below this the robot stands
    swing_height: float = 0.08  # m, apex of the reference swing trajectory


@struct.dataclass
class FootstepCommand:
    """The LLC's foot-placement command (one robot; vmap adds a leading B)."""

    swing: jax.Array  # [2] 1.0 on the swinging foot (left, right); zeros while standing
    countdown: jax.Array  # [] s until the end of the current step
    target: jax.Array  # [3] swing-foot target (x, y, yaw) in the stance-foot frame
    target_world: jax.Array  # [3] the same target in the world (x, y, yaw)
    target_z: jax.Array  # [] ground height at the target above the stance foot's ground
    phase: jax.Array  # [] progress through the current step, in [0, 1)
    stance: jax.Array  # [] int32 index of the stance foot (0 left, 1 right)

    def observation(self) -> jax.Array:
        """[7] what the LLC sees: swing flags (2), countdown (1), target (x, y, yaw) (3), target
        height (1)."""
        return jnp.concatenate([self.swing, self.countdown[None], self.target, self.target_z[None]])


def step_index(time: jax.Array, p: FootstepParams) -> jax.Array:
    """[] int32 index of the step running at ``time`` (s)."""
    return jnp.floor(time / p.step_period + 1e-6).astype(jnp.int32)


def flat(xy: jax.Array) -> jax.Array:
    """Flat ground: height 0 everywhere."""
    return jnp.zeros(())


def plan(velocity: jax.Array, feet: jax.Array, time: jax.Array,
         p: FootstepParams = FootstepParams(), terrain=flat) -> FootstepCommand:  # fmt: skip
    """Footstep command for the current instant.

    velocity: [3] commanded (vx, vy, yaw rate) in the body frame.
    feet: [2, 3] current (x, y, yaw) of the left and right foot in the world.
    time: [] gait clock (s).
    terrain: ground height (m) at a world (x, y).
    """
    k = step_index(time, p)
    phase = jnp.clip(time / p.step_period - k, 0.0, 1.0 - 1e-6)
    swing_idx = k % 2  # 0: left swings
    stance_idx = 1 - swing_idx
    stance = feet[stance_idx]
    swing_now = feet[swing_idx]
    side = jnp.where(swing_idx == 0, 1.0, -1.0)  # the left foot lands at +y of the right one

    vx, vy, wz = velocity[0], velocity[1], velocity[2]
    moving = (
        (jnp.abs(vx) > p.stand_speed)
        | (jnp.abs(vy) > p.stand_speed)
        | (jnp.abs(wz) > p.stand_speed)
    )
    dyaw = jnp.clip(wz * p.step_period, -p.max_step_yaw, p.max_step_yaw)
    dx = jnp.clip(vx * p.step_period, -p.max_step_x, p.max_step_x)
    dy = jnp.clip(vy * p.step_period, -p.max_step_y, p.max_step_y)
    y = side * p.nominal_width + dy
    y = side * jnp.maximum(side * y, p.min_width)
    walk_xy = rot2d(0.5 * dyaw) @ jnp.array([dx, y])
    walk = jnp.concatenate([walk_xy, dyaw[None]])

    # Standing: the swing foot's own pose in the stance frame (the feet stay where they are).
    rel = rot2d(stance[2]).T @ (swing_now[:2] - stance[:2])
    stay = jnp.concatenate([rel, wrap_angle(swing_now[2] - stance[2])[None]])

    target = jnp.where(moving, walk, stay)
    world_xy = stance[:2] + rot2d(stance[2]) @ target[:2]
    target_world = jnp.concatenate([world_xy, wrap_angle(stance[2] + target[2])[None]])
    swing = jnp.where(moving, jax.nn.one_hot(swing_idx, 2), jnp.zeros(2))
    target_z = terrain(world_xy) - terrain(stance[:2])
    return FootstepCommand(
        swing=swing, countdown=p.step_period * (1.0 - phase), target=target,
        target_world=target_world, target_z=target_z, phase=phase,
        stance=stance_idx.astype(jnp.int32),
    )  # fmt: skip


def feet_reference(
    cmd: FootstepCommand, start: jax.Array, p: FootstepParams = FootstepParams(), terrain=flat
) -> tuple[jax.Array, jax.Array]:
    """Reference (x, y, yaw) and sole height (world z) of both feet at this instant.

    start: [2, 3] (x, y, yaw) of both feet latched at the beginning of the current step.
    The stance foot stays at its start pose on its ground; the swinging one moves from its
    start pose to ``cmd.target_world`` along a smoothstep, its height from its start ground
    to the target's ground plus a sine bump that clears the higher one by ``swing_height``.
    Returns (ref [2, 3], z [2]).
    """
    s = cmd.phase * cmd.phase * (3.0 - 2.0 * cmd.phase)
    d = cmd.target_world - start
    d = d.at[:, 2].set(wrap_angle(d[:, 2]))
    moving_ref = start + s * d
    ref = jnp.where(cmd.swing[:, None] > 0.5, moving_ref, start)
    z0 = jax.vmap(terrain)(start[:, :2])  # [2] ground under each foot's start
    z1 = terrain(cmd.target_world[:2])
    bump = jnp.maximum(z0, z1) + p.swing_height - (z0 + s * (z1 - z0))
    bump = jnp.maximum(bump, 0.0) * jnp.sin(jnp.pi * cmd.phase)
    z_swing = z0 + s * (z1 - z0) + bump
    z = jnp.where(cmd.swing > 0.5, z_swing, z0)
    return ref, z
