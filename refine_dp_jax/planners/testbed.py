"""The testbed's scripted stage planner (the demonstrator of ``testbed_pick_place``).

Stateless: the stage follows from the privileged state each time it is called, so the planner
recovers by itself when the LLC drifts, drops the box or overshoots.

  approach  drive until the box lies ``reach`` ahead of the base, facing it; cup hovering
  reach     lower the cup onto the box top (base still)
  grasp     close once the cup sits on the box top
  lift      raise the box in place to the carry height
  carry     drive until the hanging box is over the goal disc
  place     lower the box to the floor (base still while it stays over the goal)
  release   open once the box is down inside the goal
  back off  stay, raise the cup, gripper open
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from refine_dp_jax.envs.base import EnvState

if TYPE_CHECKING:
    from refine_dp_jax.envs.testbed import TestbedEnv


@dataclass(frozen=True)
class PlannerConfig:
    """Gains and thresholds of the stage planner (lengths in m, angles in rad)."""

    __test__ = False  # not a pytest class

    reach: float = 0.5  # base-frame x of the box while grasping and placing
    carry_height: float = 0.35  # hand height while carrying
    drive_gain: float = 1.5  # 1/s, body-frame velocity per metre of position error
    speed_fraction: float = 0.9  # of the command range's max speed
    heading_slowdown: float = 0.6  # translation fades to 0 at this heading error
    yaw_gain: float = 2.5  # 1/s, yaw rate per radian of heading error
    turn_min_distance: float = 0.25  # no turning closer than this to the target
    align_tolerance: float = 0.04  # position error below which the base is at the box
    heading_tolerance: float = 0.15  # heading error below which the base faces the box
    above_tolerance: float = 0.03  # cup-to-box-top distance at which the gripper closes
    press_depth: float = 0.005  # the cup target lies this far below the box top
    hover_height: float = 0.12  # cup height above the box top while approaching
    lifted_margin: float = 0.15  # "lifted" once the box is above carry_height - this
    over_tolerance: float = 0.05  # base-position error at which the box is over the goal
    over_box_goal: float = 0.06  # ... or box-to-goal distance below this
    lowering_margin: float = 0.05  # "lowering" once the hand is below carry_height - this
    keep_lowering_box_goal: float = 0.11  # keep lowering while the box is this close to goal
    place_height: float = 0.005  # cup target above the floor-resting box top when placing
    release_height: float = 0.03  # open once the box centre is below box_half + this ...
    release_box_goal: float = 0.11  # ... and this close to the goal centre
    placed_fraction: float = 0.6  # "placed" inside this fraction of the goal radius ...
    placed_height: float = 0.02  # ... with the box centre below box_half + this
    retreat_height: float = 0.15  # cup height above the box top after placing
    hand_rate: float = 0.05  # max hand-target change per command (keeps a held box under it)


def expert_command(env: TestbedEnv, state: EnvState, cfg: PlannerConfig) -> jax.Array:
    """[Dc] command (vx, vy, yaw rate, hand x, hand z, gripper) for one environment."""
    c = env.cfg
    v = env.task_view(state)
    top_z = 2 * c.box_half
    max_speed, max_yaw = c.max_speed, c.max_yaw_rate

    def drive_to(target_b):
        """Body-frame velocity and yaw rate bringing ``target_b`` to (reach, 0): turn toward
        it first, translate once roughly facing it."""
        heading_err = jnp.arctan2(target_b[1], target_b[0])
        dist = jnp.linalg.norm(target_b[:2])
        err = jnp.array([target_b[0] - cfg.reach, target_b[1]])
        vel = cfg.drive_gain * err
        cap = cfg.speed_fraction * max_speed
        vel = vel * jnp.minimum(1.0, cap / jnp.maximum(jnp.linalg.norm(vel), 1e-6))
        vel = vel * jnp.clip(1.0 - jnp.abs(heading_err) / cfg.heading_slowdown, 0.0, 1.0)
        wz = jnp.clip(cfg.yaw_gain * heading_err, -max_yaw, max_yaw)
        wz = jnp.where(dist < cfg.turn_min_distance, 0.0, wz)
        return vel, wz, jnp.linalg.norm(err), jnp.abs(heading_err)

    box_z = v.box_pos[2]
    holding = v.holding > 0.5

    # Not holding: approach the box, then lower the cup onto it and close.
    v_a, w_a, e_a, h_a = drive_to(v.box_base)
    aligned = (e_a < cfg.align_tolerance) & (h_a < cfg.heading_tolerance)
    above = jnp.linalg.norm(v.hand - jnp.array([v.box_base[0], top_z])) < cfg.above_tolerance
    hand_a = jnp.where(
        aligned,
        jnp.array([v.box_base[0], top_z - cfg.press_depth]),
        jnp.array([cfg.reach, top_z + cfg.hover_height]),
    )
    grip_a = jnp.where(aligned & above, 1.0, -1.0)

    # Holding: lift in place, carry until the box hangs over the goal, lower, release. Judged
    # on the box itself, so that base drift while placing does not restart the carry.
    lifted = box_z > cfg.carry_height - cfg.lifted_margin
    v_c, w_c, e_c, _ = drive_to(v.goal_base)
    lowering = v.hand[1] < cfg.carry_height - cfg.lowering_margin
    over = (
        (e_c < cfg.over_tolerance)
        | (v.box_goal_dist < cfg.over_box_goal)
        | (lowering & (v.box_goal_dist < cfg.keep_lowering_box_goal))
    )
    moving = lifted & ~over
    v_c = jnp.where(moving, v_c, 0.0)
    w_c = jnp.where(moving, w_c, 0.0)
    hand_c = jnp.where(
        over,
        jnp.array([cfg.reach, top_z + cfg.place_height]),
        jnp.array([cfg.reach, cfg.carry_height]),
    )
    down = (box_z < c.box_half + cfg.release_height) & (v.box_goal_dist < cfg.release_box_goal)
    grip_c = jnp.where(down, -1.0, 1.0)

    vel = jnp.where(holding, v_c, v_a)
    wz = jnp.where(holding, w_c, w_a)
    hand = jnp.where(holding, hand_c, hand_a)
    grip = jnp.where(holding, grip_c, grip_a)

    # Placed and released: stay, cup up, gripper open.
    placed = (v.box_goal_dist < c.goal_radius * cfg.placed_fraction) & (
        box_z < c.box_half + cfg.placed_height
    )
    finished = placed & ~holding
    vel = jnp.where(finished, 0.0, vel)
    wz = jnp.where(finished, 0.0, wz)
    hand = jnp.where(finished, jnp.array([cfg.reach, top_z + cfg.retreat_height]), hand)
    grip = jnp.where(finished, -1.0, grip)

    # Rate-limit the hand target relative to the previous command (so that a tracking offset of
    # the LLC cannot stall it), so that the cup never outruns a held box.
    prev = state.command[3:5]
    delta = hand - prev
    hand = prev + delta * jnp.minimum(
        1.0, cfg.hand_rate / jnp.maximum(jnp.linalg.norm(delta), 1e-6)
    )
    cmd = jnp.concatenate([vel, wz[None], hand, grip[None]])
    return jnp.clip(cmd, env.command_low, env.command_high)
