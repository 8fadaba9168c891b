"""Configuration of the humanoid environments (one frozen dataclass for all four tasks; each
task supplies its own defaults for the task-specific fields, see ``humanoid_tasks``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from refine_dp_jax.envs.base import coerce_float_fields
from refine_dp_jax.errors import ConfigError

# Fields that define what an LLC's observations and actions mean: an LLC trained with one
# value does not fit an env with another (``refine_dp_jax.policy_store`` checks them).
INTERFACE_FIELDS = (
    "physics_dt", "substeps", "hard_joint_limits", "leg_action_scale", "arm_prior",
    "arm_action_scale", "ik_iterations", "ik_damping", "ik_max_step", "vx_range", "vy_range",
    "yaw_rate_range", "hand_x_range", "hand_y_range", "hand_z_range", "hand_rot_range",
    "step_period", "nominal_foot_width", "min_foot_width", "swing_height", "actor_history",
)  # fmt: skip


@dataclass(frozen=True)
class HumanoidConfig:
    """Physics, LLC interface, rewards (paper weights), termination, domain randomization and
    task geometry. Every reward weight is a field; signs are part of the weights."""

    # -- physics ------------------------------------------------------------------------------
    physics_dt: float = 0.005  # s per MJX step
    substeps: int = 4  # MJX steps per LLC step (LLC at 1 / (0.005 * 4) = 50 Hz)
    solver_iterations: int = 1  # Newton iterations (measured: see benchmarks/physics_cost.py)
    ls_iterations: int = 4  # line-search iterations
    hard_joint_limits: bool = False  # limit constraints; off: PD targets clamped to the ranges
    max_qvel: float = 100.0  # rad/s or m/s: beyond this the state counts as exploded
    episode_seconds: float = 20.0  # time limit (each task sets its own)

    # -- LLC observation -----------------------------------------------------------------------
    # Not in the paper (0 = its actor inputs): the proprioception (projected gravity, joint
    # positions and velocities, base angular velocity: 64 numbers) of this many earlier LLC
    # steps, newest first, appended to the actor's observation (and the critic's)
    actor_history: int = 0

    # -- LLC action ---------------------------------------------------------------------------
    leg_action_scale: float = 0.25  # rad per unit leg action (unitree_rl_gym G1 uses 0.25)
    # Arm prior: "ik" = the arm PD targets are the damped-least-squares IK solution of the
    # commanded hand poses (recomputed at every command, warm-started from the last one) plus
    # the LLC's residual; "none" = the default pose plus the LLC's offset (then the arms must
    # learn to reach the workspace: use an arm_action_scale near 1 rad).
    arm_prior: str = "ik"
    arm_action_scale: float = 0.3  # rad per unit arm action (residual around the prior)
    ik_iterations: int = 6  # IK iterations per command (warm-started)
    # Damped least squares: damping (lambda^2, m^2) and the largest change of any arm joint per
    # iteration (rad). At 1e-3 and no bound (before 2026-12-05) the solution jumped by 2-4 rad
    # in one command near singular or out-of-reach targets (shoulder yaw / wrist roll flipping)
    # and the arm PD servos then shook the arms at 30-120 rad/s: with the planner on
    # table_lift and DPPO's command noise (0.03) a third of the episodes, most of which failed
    # (measured, docs/humanoid.md). 1e-2 and 0.1 rad: none.
    ik_damping: float = 1e-2
    ik_max_step: float = 0.1

    # -- command range (the DP's action space), body (heading) frame --------------------------
    vx_range: tuple[float, float] = (-0.4, 0.8)  # m/s
    vy_range: tuple[float, float] = (-0.4, 0.4)  # m/s
    yaw_rate_range: tuple[float, float] = (-1.0, 1.0)  # rad/s
    hand_x_range: tuple[float, float] = (-0.1, 0.65)  # m, hand position relative to the pelvis
    hand_y_range: tuple[float, float] = (-0.3, 0.6)  # m, left hand; mirrored for the right
    hand_z_range: tuple[float, float] = (-0.45, 0.6)  # m
    hand_rot_range: float = 1.6  # rad, bound of each hand rotation-vector component
    command_stand_prob: float = 0.25  # sample_command: share of zero base-velocity commands
    command_arm_spread: float = 0.8  # sample_command: joint-space spread of hand targets (rad)
    # sample_command: share of hand targets drawn uniformly in a reach box in front of the
    # robot (left hand; mirrored for the right), orientation within +-command_reach_rot of
    # the identity (the tasks' grasp poses); the rest from random arm joints (above)
    command_reach_prob: float = 0.5
    command_reach_box: tuple[tuple[float, float], ...] = ((0.15, 0.5), (-0.15, 0.4), (-0.2, 0.25))
    command_reach_rot: float = 0.6  # rad, per rotation-vector component
    # LLC training moves the hand commands toward each new random target at these rates (the
    # DP plans smooth hand paths; a jump would train on accelerations no task asks for)
    command_hand_speed: float = 0.5  # m/s
    command_hand_turn_rate: float = 2.0  # rad/s per rotation-vector component

    # -- footstep planner (refine_dp_jax.planners.footsteps) ----------------------------------
    step_period: float = 0.4  # s per step
    nominal_foot_width: float = 0.233  # m (hip width of the robot)
    min_foot_width: float = 0.16  # m
    swing_height: float = 0.08  # m

    # -- lower-body rewards (PAPER.md table; weight, kernel width) -----------------------------
    w_foot_pos: float = 5.0  # exp(-|p - p_ref|^2 / s^2) on the feet's ground positions
    sigma_foot_pos: float = 0.05  # m
    w_foot_yaw: float = 3.0
    sigma_foot_yaw: float = 0.1  # rad
    w_base_vel: float = 1.0  # base linear velocity (body frame xy) vs command
    sigma_base_vel: float = 0.25  # m/s
    w_leg_pos: float = 0.5  # leg joints vs the default pose (no gait reference in this repo)
    sigma_leg_pos: float = 0.3  # rad (norm over the 12 joints)
    w_leg_vel: float = 0.3  # leg joint velocities vs zero reference
    sigma_leg_vel: float = 1.0  # rad/s
    w_leg_action_rate: float = -0.001  # paper: -0.001 -> -0.5 by curriculum (reward_curriculum)
    w_leg_action_rate_final: float = -0.5
    w_leg_acc: float = -1e-7  # paper: -1e-7 -> -1e-5
    w_leg_acc_final: float = -1e-5
    w_leg_torque_limit: float = -0.5  # sum of the excess of |PD torque| over the limit
    w_leg_joint_limit: float = -1e-4  # sum of the excess over the soft joint range
    w_ankle_posture: float = -2.0  # |q_ankle - q_default|^2
    w_orientation: float = 3.0  # exp(-|g_xy|^2 / s^2), projected gravity
    sigma_orientation: float = 0.2
    w_air_time: float = 20.0  # sum over touchdowns of (air time - tau), when walking
    air_time_target: float = 0.4  # s (tau)
    w_base_height: float = -3.0  # squared distance of the base height outside the band
    # Not in the paper (0 = off): exp(-|capture point - centre of the soles|^2 / s^2), the
    # horizontal capture point (``HumanoidEnv.capture_point``) over the middle of the feet,
    # a dense signal for push recovery (docs/results/llc_falls)
    w_capture_point: float = 0.0
    sigma_capture_point: float = 0.05  # m
    base_height_band: tuple[float, float] = (0.68, 0.82)  # m, pelvis above the soles

    # -- upper-body rewards (PAPER.md table) --------------------------------------------------
    w_hand_pos: float = 2.0  # per kernel width, averaged over both hands
    sigma_hand_pos: tuple[float, ...] = (0.4, 0.1, 0.08)  # m
    w_hand_rot: float = 1.0  # per kernel width, averaged over both hands
    sigma_hand_rot: tuple[float, ...] = (0.8, 0.5, 0.3)  # rad
    w_arm_posture: float = -0.2  # |q_arm - q_nominal|_1
    w_arm_action_rate: float = -0.01  # paper: -0.01 -> -0.1
    w_arm_action_rate_final: float = -0.1
    w_arm_vel: float = -1e-3  # paper: -1e-3 -> -2e-3
    w_arm_vel_final: float = -2e-3
    w_arm_acc: float = -1e-6  # paper: -1e-6 -> -3e-6
    w_arm_acc_final: float = -3e-6
    w_hand_acc: float = -1.4e-2  # |hand linear acceleration|^2 (m/s^2)
    w_arm_torque_limit: float = -0.1
    w_arm_joint_limit: float = -4.0
    soft_limit_fraction: float = 0.95  # joint-limit penalties start at this share of the range
    reward_scale: float = 0.05  # overall multiplier of the summed reward (legged_gym uses dt)
    # Clip the summed reward at 0 (legged_gym's only_positive_rewards): early in training the
    # penalties (hand acceleration from exploration noise above all) outweigh the tracking
    # terms, and a negative reward per step would make falling (ending the episode) pay.
    only_positive_rewards: bool = True

    # -- termination --------------------------------------------------------------------------
    min_base_height: float = 0.45  # m, pelvis above the mean sole height: below = fallen
    max_tilt: float = 1.0  # rad, pelvis tilt from upright beyond which the robot has fallen

    # -- domain randomization (applied at reset) ----------------------------------------------
    payload_mass: tuple[float, float] = (0.0, 1.0)  # kg added to each hand, when drawn
    payload_prob: float = 0.3  # share of episodes with hand payloads
    push_force: float = 60.0  # N, largest horizontal push on the torso
    # N, smallest one: magnitudes are uniform in [push_force_min, push_force] (a training
    # focused on the hard pushes; evaluation keeps 0)
    push_force_min: float = 0.0
    push_interval: tuple[float, float] = (3.0, 7.0)  # s between pushes
    push_duration: float = 0.15  # s
    # rad, direction of the push in the world frame, uniform in this range (the LLC scene's
    # robot faces +x when start_angle = start_heading = 0): experiments/llc_falls.py
    push_angle: tuple[float, float] = (-math.pi, math.pi)
    floor_friction: tuple[float, float] = (0.6, 1.2)  # foot-floor friction range
    arm_randomization: float = 0.6  # rad, arm joints drawn around the default at reset
    arm_randomization_prob: float = 0.5  # share of episodes with a random arm configuration
    # left grasp site (x, y, z) in the pelvis frame at reset, the right one mirrored, the arms
    # solved by IK at construction (None: the default arm pose, hands at the ready poses,
    # 0.26 m ahead of the pelvis: inside a table task's box)
    start_hands: tuple[float, float, float] | None = None

    # -- task geometry (each task's defaults override these) ----------------------------------
    table_height: float = 0.70  # m (estimate: G1 hands reach 0.6-1.0 m comfortably)
    box_half: tuple[float, float, float] = (0.10, 0.15, 0.10)  # m, box_pickup's box
    box_mass: float = 1.0  # kg
    lift_height: float = 0.10  # m above the table (box_pickup success)
    lift_seconds: float = 1.0  # s held (box_pickup success)
    object_half: tuple[float, float, float] = (0.025, 0.025, 0.06)  # m, a graspable block
    object_mass: float = 0.3  # kg
    object_jitter: float = 0.05  # m, random object displacement on its support at reset
    place_distance: float = 3.0  # m between the two tables (pick_place)
    goal_radius: float = 0.10  # m, placement region radius (pick_place, table_place)
    place_offset: float = 0.22  # m, goal disc to the right of the block (table_place)
    door_width: float = 0.9  # m
    door_height: float = 2.0  # m
    door_damping: float = 3.0  # N m s / rad, hinge damping
    door_mass: float = 8.0  # kg
    handle_height: float = 0.95  # m
    pass_distance: float = 0.5  # m, torso past the door plane (door success)
    door_open_angle: float = 1.0  # rad, the door must be open this far (door success)
    latch_release_angle: float = 0.5  # rad of lever travel that releases the latch
    platform_height: float = 0.12  # m (task: 10-15 cm)
    platform_half: tuple[float, float] = (0.6, 0.6)  # m
    platform_front: float = 0.5  # m, x of the platform's front edge
    shelf_height: float = 0.85  # m above the platform top
    retrieve_height: float = 0.05  # m, object lifted off the shelf (platform success)
    # robot start relative to the task anchor (paper: radial distance, polar angle, heading);
    # the traced reset curriculum scales the width of each range
    start_distance: tuple[float, float] = (1.0, 2.0)  # m
    start_angle: float = 0.5  # rad, +- polar angle around the approach direction
    start_heading: float = 0.4  # rad, +- heading offset from facing the anchor

    def __post_init__(self):
        coerce_float_fields(self)
        if self.physics_dt <= 0 or self.substeps < 1 or self.episode_seconds <= 0:
            raise ConfigError("humanoid: physics_dt > 0, substeps >= 1, episode_seconds > 0")
        for name in ("vx_range", "vy_range", "yaw_rate_range", "hand_x_range", "hand_y_range",
                     "hand_z_range", "start_distance", "payload_mass", "floor_friction",
                     "push_interval", "push_angle", "base_height_band"):  # fmt: skip
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ConfigError(f"humanoid: {name} must be (low, high) with low <= high")
        if self.vx_range[0] >= self.vx_range[1] or self.hand_z_range[0] >= self.hand_z_range[1]:
            raise ConfigError("humanoid: command ranges must have low < high")
        probs = (self.payload_prob, self.arm_randomization_prob, self.command_reach_prob,
                 self.command_stand_prob)  # fmt: skip
        if not all(0.0 <= p <= 1.0 for p in probs):
            raise ConfigError("humanoid: probabilities must lie in [0, 1]")
        if min(self.command_hand_speed, self.command_hand_turn_rate, self.command_reach_rot) <= 0:
            raise ConfigError("humanoid: command_hand_speed, _turn_rate, _reach_rot must be > 0")
        if not 0.0 <= self.push_force_min <= self.push_force:
            raise ConfigError(
                f"humanoid: need 0 <= push_force_min ({self.push_force_min}) <= push_force "
                f"({self.push_force})"
            )
        if self.actor_history < 0:
            raise ConfigError(f"humanoid: actor_history = {self.actor_history}: must be >= 0")
        if self.sigma_capture_point <= 0:
            raise ConfigError("humanoid: sigma_capture_point must be > 0")
        if self.door_open_angle <= 0 or self.latch_release_angle <= 0:
            raise ConfigError("humanoid: door_open_angle and latch_release_angle must be > 0")
        if self.arm_prior not in ("ik", "none"):
            raise ConfigError(f"humanoid: arm_prior = {self.arm_prior!r}: one of 'ik', 'none'")
        if self.ik_iterations < 1 or self.arm_action_scale <= 0 or self.leg_action_scale <= 0:
            raise ConfigError("humanoid: ik_iterations >= 1, action scales > 0")
        if self.ik_damping <= 0 or self.ik_max_step <= 0:
            raise ConfigError("humanoid: ik_damping and ik_max_step must be > 0")
        if self.solver_iterations < 1 or self.ls_iterations < 1:
            raise ConfigError("humanoid: solver_iterations and ls_iterations must be >= 1")

    @property
    def dt(self) -> float:
        """s per LLC step."""
        return self.physics_dt * self.substeps
