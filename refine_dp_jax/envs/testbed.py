"""``testbed_pick_place``: a small mobile manipulator that picks a box and places it in a goal
region. Built to run the whole REFINE-DP stack end to end in minutes on two CPU cores.

Robot
  * base: planar (slide x, slide y, hinge yaw) with force/torque motors, 12 kg, joint damping
    standing in for rolling friction. The LLC commands body-frame forces (omni wheels); the env
    rotates them into the world frame.
  * arm: two pitch joints (shoulder, elbow) in the base's x-z plane, position-controlled; the
    PD target is the analytic inverse kinematics of the commanded hand position plus the LLC's
    residual offsets (so PPO learns corrections, not IK from scratch).
  * gripper: a suction cup at the hand. When the gripper command is "closed" and the box top is
    within ``capture_radius`` of the cup, a bounded spring-damper force (``xfrc_applied``) pulls
    the box to the cup, with the opposite force on the base; a damping torque stops it spinning.
    Open: no force, the box falls and rests on the floor by contact.
Contacts: only box-floor (one explicit pair, 4 contact points); the robot has no collision
geometry (a base-box bumper halved the step rate). Solver: Newton, 2 iterations, 4 line-search
iterations (1 iteration let the held box explode now and then).

Command (the DP's action, Dc = 6): base velocity in the body frame (vx, vy, yaw rate), hand
target in the base frame (x forward, z up), gripper (> 0 closes).
LLC action (Da = 5, in [-1, 1]): body-frame base force x, y, yaw torque (x ``max_force``,
``max_torque``); shoulder and elbow target offsets around the IK solution (x ``arm_action_scale``).

Task: box on the floor at the origin; goal disc at a random place around it; the robot starts
at radial distance r, polar angle theta, heading offset psi from facing the box, all spans
scaled by the traced ``curriculum``. Success (``is_success``): box at rest in the goal disc, on
the floor, and released. Sparse task reward 1.0 on the success step; the episode ends there.
Failure: the box leaves the arena (farther than ``arena_radius`` from where it started).
The scripted stage planner lives in ``refine_dp_jax/planners/testbed.py``.

Sizes: Do = 26 (body-frame base velocity 2, yaw rate 1, arm angles 2 and velocities 2, hand 2,
command 6, tracking errors 5, last action 5, gripper closed 1); Dpriv = 34 (+ box position in
the base frame 3, box velocity 3, goal in the base frame 2); Ds = 12 (see ``dp_observation``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import mujoco
from flax import struct
from mujoco import mjx

from refine_dp_jax.envs.base import EnvState, coerce_float_fields, put_model, register
from refine_dp_jax.errors import ConfigError
from refine_dp_jax.planners import testbed as planner
from refine_dp_jax.planners.testbed import PlannerConfig

_XML = """
<mujoco model="testbed_pick_place">
  <compiler angle="radian"/>
  <option timestep="{dt}" iterations="{iterations}" ls_iterations="{ls_iterations}"/>
  <visual><global offwidth="640" offheight="480"/></visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1=".85 .85 .85" rgb2=".75 .75 .75"
             width="256" height="256"/>
    <material name="grid" texture="grid" texrepeat="8 8"/>
  </asset>
  <worldbody>
    <light pos="0 0 4" dir="0 0 -1" directional="true"/>
    <geom name="floor" type="plane" size="6 6 0.1" material="grid" contype="1" conaffinity="1"
          friction="{box_friction} 0.005 0.0001"/>
    <body name="goal" mocap="true" pos="1 0 0">
      <geom type="cylinder" size="{goal_radius} 0.002" rgba="0.1 0.8 0.1 0.5" contype="0"
            conaffinity="0"/>
    </body>
    <body name="base" pos="0 0 0">
      <joint name="base_x" type="slide" axis="1 0 0" damping="{base_damping}"/>
      <joint name="base_y" type="slide" axis="0 1 0" damping="{base_damping}"/>
      <joint name="base_yaw" type="hinge" axis="0 0 1" damping="{yaw_damping}"/>
      <geom type="box" size="0.2 0.15 0.08" pos="0 0 0.12" mass="{base_mass}" rgba=".3 .3 .35 1"
            contype="0" conaffinity="0"/>
      <geom type="cylinder" size="0.03 0.06" pos="0.15 0 0.26" mass="0.2" rgba=".4 .4 .45 1"
            contype="0" conaffinity="0"/>
      <body name="upper" pos="{sx} 0 {sz}">
        <joint name="shoulder" type="hinge" axis="0 -1 0" range="-1.6 1.6" damping="1.0"
               armature="0.01"/>
        <geom type="capsule" fromto="0 0 0 {l1} 0 0" size="0.025" mass="0.6" rgba=".9 .5 .1 1"
              contype="0" conaffinity="0"/>
        <body name="fore" pos="{l1} 0 0">
          <joint name="elbow" type="hinge" axis="0 -1 0" range="-2.7 0.3" damping="0.5"
                 armature="0.01"/>
          <geom type="capsule" fromto="0 0 0 {l2} 0 0" size="0.02" mass="0.4" rgba=".9 .6 .2 1"
                contype="0" conaffinity="0"/>
          <body name="hand" pos="{l2} 0 0">
            <geom type="cylinder" size="0.03 0.01" pos="0 0 -0.01" mass="0.1" rgba=".2 .2 .2 1"
                  contype="0" conaffinity="0"/>
            <site name="cup" pos="0 0 -0.02" size="0.01"/>
          </body>
        </body>
      </body>
    </body>
    <body name="box" pos="0 0 {box_half}">
      <freejoint name="box"/>
      <geom name="box" type="box" size="{box_half} {box_half} {box_half}" mass="{box_mass}"
            rgba=".8 .2 .2 1" contype="1" conaffinity="1" friction="{box_friction} 0.005 0.0001"/>
    </body>
  </worldbody>
  <contact><pair geom1="floor" geom2="box"/></contact>
  <actuator>
    <motor name="fx" joint="base_x" ctrlrange="-1 1" ctrllimited="true" gear="{max_force}"/>
    <motor name="fy" joint="base_y" ctrlrange="-1 1" ctrllimited="true" gear="{max_force}"/>
    <motor name="tz" joint="base_yaw" ctrlrange="-1 1" ctrllimited="true" gear="{max_torque}"/>
    <position name="shoulder" joint="shoulder" kp="{kp}" ctrlrange="-1.6 1.6" ctrllimited="true"/>
    <position name="elbow" joint="elbow" kp="{kp}" ctrlrange="-2.7 0.3" ctrllimited="true"/>
  </actuator>
</mujoco>
"""


@dataclass(frozen=True)
class TestbedConfig:
    """Physics, task, command-range and reward parameters of the testbed (SI units)."""

    __test__ = False  # not a pytest class

    # -- physics / timing
    physics_dt: float = 0.01  # s per physics step
    substeps: int = 5  # physics steps per LLC step (LLC at 20 Hz)
    solver_iterations: int = 2  # Newton iterations (1 is unstable with a held box)
    ls_iterations: int = 4  # line-search iterations per Newton iteration
    episode_seconds: float = 14.0  # time limit of an episode, s
    # -- robot
    base_mass: float = 12.0  # kg
    base_damping: float = 40.0  # N s/m on the planar slides (rolling friction)
    yaw_damping: float = 8.0  # N m s/rad on the yaw hinge
    max_force: float = 40.0  # N per unit base action
    max_torque: float = 12.0  # N m per unit yaw action
    kp: float = 60.0  # arm position gain, N m/rad
    shoulder: tuple[float, float] = (0.15, 0.35)  # shoulder (x, z) in the base frame, m
    link_lengths: tuple[float, float] = (0.35, 0.35)  # upper arm, forearm, m
    default_arm: tuple[float, float] = (0.3, -1.2)  # joint pose at reset (shoulder, elbow), rad
    arm_action_scale: float = 0.5  # rad per unit arm action (residual on the IK target)
    # -- box
    box_half: float = 0.04  # half edge of the cube, m
    box_mass: float = 0.3  # kg
    box_friction: float = 0.8  # sliding friction of box and floor
    # -- gripper (suction cup)
    capture_radius: float = 0.05  # m, cup to box top for the cup to engage
    release_radius: float = 0.15  # m, an engaged cup lets go beyond this
    cup_stiffness: float = 300.0  # N/m
    cup_damping: float = 13.0  # N s/m (about 0.7 of critical for the default box)
    cup_spin_damping: float = 5e-4  # N m s/rad on the held box's angular velocity
    cup_max_force: float = 20.0  # N, bound of the suction force
    # -- task and reset distribution (spans scaled by the curriculum)
    start_distance: tuple[float, float] = (0.9, 1.5)  # m from the box; upper end x curriculum
    start_angle: float = 0.6  # rad, +- polar angle of the start around the box (x curriculum)
    start_heading: float = 0.5  # rad, +- heading offset from facing the box (x curriculum)
    # Growth of each span (distance, angle, heading) with the curriculum scale c: the span is
    # base * c up to c = 1 (the demonstrations' range) and base * (1 + growth * (c - 1)) beyond.
    # The default puts c = 2 at the paper's widened ranges: 320 %, 125 % and 600 % of the base.
    curriculum_growth: tuple[float, float, float] = (2.2, 0.25, 5.0)
    goal_distance: tuple[float, float] = (0.6, 1.0)  # m, goal centre from the box
    goal_angle: float = 1.2  # rad, +- direction of the goal seen from the box, around +x
    goal_radius: float = 0.15  # m
    rest_speed: float = 0.08  # m/s: box "at rest" below this speed
    arena_radius: float = 4.0  # m: the box farther than this from its start is a failure
    # -- command range (the DP's action space)
    max_speed: float = 0.6  # m/s, body-frame vx and vy
    max_yaw_rate: float = 1.2  # rad/s
    hand_x: tuple[float, float] = (0.2, 0.75)  # m, hand target x in the base frame
    hand_z: tuple[float, float] = (0.0, 0.65)  # m, hand target height
    # -- LLC tracking reward: w * exp(-|e|^2 / sigma^2) per term, minus the action-rate penalty
    w_vel: float = 1.0  # body-frame linear velocity term
    sigma_vel: float = 0.2  # m/s
    w_yaw: float = 0.5  # yaw-rate term
    sigma_yaw: float = 0.4  # rad/s
    w_hand: float = 1.5  # hand-position term (mean of one kernel per sigma)
    sigma_hand: tuple[float, ...] = (0.4, 0.1, 0.04)  # m, coarse to fine (the paper's 3 terms)
    w_action_rate: float = 0.02  # x |a_t - a_{t-1}|^2
    max_qvel: float = 200.0  # beyond this |qvel| the physics counts as exploded (non-finite)
    # -- scripted demonstrator
    planner: PlannerConfig = PlannerConfig()  # stage planner gains and thresholds

    def __post_init__(self):
        coerce_float_fields(self)

        def need(ok, msg):
            if not ok:
                raise ConfigError(f"testbed_pick_place: {msg}")

        need(self.physics_dt > 0, f"physics_dt must be > 0, got {self.physics_dt}")
        need(self.substeps >= 1, f"substeps must be >= 1, got {self.substeps}")
        need(self.solver_iterations >= 1 and self.ls_iterations >= 1,
             "solver_iterations and ls_iterations must be >= 1")  # fmt: skip
        need(self.episode_seconds >= self.physics_dt * self.substeps,
             "episode_seconds must cover at least one LLC step")  # fmt: skip
        for name in ("base_mass", "max_force", "max_torque", "kp", "arm_action_scale",
                     "box_half", "box_mass", "box_friction", "cup_max_force", "goal_radius",
                     "rest_speed", "max_speed", "max_yaw_rate", "sigma_vel", "sigma_yaw",
                     "max_qvel"):  # fmt: skip
            need(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("base_damping", "yaw_damping", "cup_stiffness", "cup_damping",
                     "cup_spin_damping", "start_angle", "start_heading", "goal_angle", "w_vel",
                     "w_yaw", "w_hand", "w_action_rate"):  # fmt: skip
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(len(self.link_lengths) == 2 and min(self.link_lengths) > 0,
             "link_lengths must be two positive lengths")  # fmt: skip
        need(len(self.sigma_hand) >= 1 and min(self.sigma_hand) > 0,
             "sigma_hand must be one or more positive widths")  # fmt: skip
        for name in ("start_distance", "goal_distance", "hand_x", "hand_z"):
            lo, hi = getattr(self, name)
            need(lo < hi, f"{name} must be (low, high) with low < high, got {(lo, hi)}")
        need(self.start_distance[0] > 0, "start_distance must start above 0")
        need(len(self.curriculum_growth) == 3 and min(self.curriculum_growth) >= 0,
             "curriculum_growth must be three factors >= 0 (distance, angle, heading)")  # fmt: skip
        need(0 < self.capture_radius < self.release_radius,
             "need 0 < capture_radius < release_radius")  # fmt: skip
        need(self.arena_radius > self.goal_distance[1] + self.goal_radius,
             "arena_radius must contain every goal disc")  # fmt: skip
        need(isinstance(self.planner, PlannerConfig), "planner must be a PlannerConfig")


@struct.dataclass
class TaskState:
    """Env-specific part of the state (``EnvState.task``)."""

    goal: jax.Array  # [2] goal disc centre (world)
    holding: jax.Array  # [] 1.0 while the cup holds the box
    closed: jax.Array  # [] 1.0 while the gripper command is "closed"


@struct.dataclass
class TaskView:
    """Task-space quantities of one state (what planners and observations are made of)."""

    hand: jax.Array  # [2] cup (x, z) in the base frame (forward kinematics)
    box_base: jax.Array  # [3] box centre: x, y in the base frame, z = height above the floor
    goal_base: jax.Array  # [2] goal centre in the base frame
    box_pos: jax.Array  # [3] box centre (world)
    box_vel: jax.Array  # [3] box linear velocity (world)
    vel_body: jax.Array  # [2] base linear velocity in the body frame
    yaw_rate: jax.Array  # [] base yaw rate
    arm_q: jax.Array  # [2] shoulder, elbow angles
    arm_v: jax.Array  # [2] shoulder, elbow velocities
    holding: jax.Array  # [] 1.0 while the cup holds the box
    closed: jax.Array  # [] 1.0 while the gripper command is "closed"
    box_goal_dist: jax.Array  # [] horizontal box-to-goal distance


def _rot(yaw):
    """[2, 2] rotation by ``yaw`` (body -> world)."""
    c, s = jnp.cos(yaw), jnp.sin(yaw)
    return jnp.array([[c, -s], [s, c]])


# qpos layout: base x, y, yaw (0:3), shoulder, elbow (3:5), box position (5:8), box quat (8:12)
# qvel layout: base (0:3), arm (3:5), box linear (5:8, world), box angular (8:11, box frame)
_METRIC_KEYS = ("vel_err", "yaw_rate_err", "hand_err", "box_goal_dist", "holding")


class TestbedEnv:
    """The pick-and-place testbed (see module docstring)."""

    __test__ = False  # not a pytest class
    name = "testbed_pick_place"
    action_size = 5  # Da: base force x, y, yaw torque (body frame); shoulder, elbow offsets
    command_size = 6  # Dc: vx, vy, yaw rate, hand x, hand z, gripper
    observation_size = 26  # Do
    privileged_observation_size = 34  # Dpriv
    dp_observation_size = 12  # Ds

    def __init__(self, cfg: TestbedConfig = TestbedConfig()):
        self.cfg = c = cfg
        xml = _XML.format(
            dt=c.physics_dt, iterations=c.solver_iterations, ls_iterations=c.ls_iterations,
            goal_radius=c.goal_radius, base_damping=c.base_damping, yaw_damping=c.yaw_damping,
            base_mass=c.base_mass, sx=c.shoulder[0], sz=c.shoulder[1], l1=c.link_lengths[0],
            l2=c.link_lengths[1], box_half=c.box_half, box_mass=c.box_mass,
            box_friction=c.box_friction, max_force=c.max_force, max_torque=c.max_torque, kp=c.kp,
        )  # fmt: skip
        self.mj_model = mujoco.MjModel.from_xml_string(xml)
        self.mjx_model = put_model(self.mj_model)
        m = self.mj_model
        self._cup = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "cup")
        self._box = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "box")
        self._base = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "base")
        self.dt = c.physics_dt * c.substeps
        self.episode_steps = max(1, int(round(c.episode_seconds / self.dt)))
        self.render_camera = (3.5, -50.0, 90.0)  # distance, elevation, azimuth
        self._default = jnp.asarray(c.default_arm, jnp.float32)

    # -- command space ---------------------------------------------------------------------
    @property
    def command_low(self):
        c = self.cfg
        return jnp.array([-c.max_speed, -c.max_speed, -c.max_yaw_rate, c.hand_x[0], c.hand_z[0],
                          -1.0])  # fmt: skip

    @property
    def command_high(self):
        c = self.cfg
        return jnp.array([c.max_speed, c.max_speed, c.max_yaw_rate, c.hand_x[1], c.hand_z[1], 1.0])

    # -- kinematics ------------------------------------------------------------------------
    def hand_in_base(self, arm_q):
        """Forward kinematics of the cup in the base frame: arm_q [2] -> (x, z) [2]."""
        (sx, sz), (l1, l2) = self.cfg.shoulder, self.cfg.link_lengths
        a1, a2 = arm_q[0], arm_q[0] + arm_q[1]
        x = sx + l1 * jnp.cos(a1) + l2 * jnp.cos(a2)
        z = sz + l1 * jnp.sin(a1) + l2 * jnp.sin(a2) - 0.02
        return jnp.array([x, z])

    def inverse_kinematics(self, hand):
        """Elbow-up joint angles [2] putting the cup at ``hand`` = (x, z) [2] in the base frame
        (the nearest reachable point when out of reach)."""
        (sx, sz), (l1, l2) = self.cfg.shoulder, self.cfg.link_lengths
        dx, dz = hand[0] - sx, hand[1] + 0.02 - sz
        cos2 = jnp.clip((dx**2 + dz**2 - l1**2 - l2**2) / (2 * l1 * l2), -1.0, 1.0)
        q2 = -jnp.arccos(cos2)
        q1 = jnp.arctan2(dz, dx) - jnp.arctan2(l2 * jnp.sin(q2), l1 + l2 * jnp.cos(q2))
        return jnp.array([q1, q2])

    def _view(self, data, task: TaskState) -> TaskView:
        q, v = data.qpos, data.qvel
        base_xy, rot_t = q[:2], _rot(q[2]).T
        box_xy = rot_t @ (q[5:7] - base_xy)
        return TaskView(
            hand=self.hand_in_base(q[3:5]),
            box_base=jnp.array([box_xy[0], box_xy[1], q[7]]),
            goal_base=rot_t @ (task.goal - base_xy),
            box_pos=q[5:8],
            box_vel=v[5:8],
            vel_body=rot_t @ v[:2],
            yaw_rate=v[2],
            arm_q=q[3:5],
            arm_v=v[3:5],
            holding=task.holding,
            closed=task.closed,
            box_goal_dist=jnp.linalg.norm(q[5:7] - task.goal),
        )

    def task_view(self, state: EnvState) -> TaskView:
        """Task-space view of ``state`` (privileged: includes the box and the goal)."""
        return self._view(state.data, state.task)

    # -- observations ----------------------------------------------------------------------
    def _observe(self, data, command, last_action, task: TaskState):
        """-> obs [Do], privileged obs [Dpriv], tracking errors [5] (all finite)."""
        v = self._view(data, task)
        err = jnp.concatenate([command[:2] - v.vel_body, command[2:3] - v.yaw_rate,
                               command[3:5] - v.hand])  # fmt: skip
        obs = jnp.concatenate([
            v.vel_body, v.yaw_rate[None], v.arm_q - self._default, v.arm_v * 0.1, v.hand,
            command, err, last_action, task.closed[None],
        ])  # fmt: skip
        # (Whether the cup holds the box is left out: random-command training almost never
        # holds it, so the flag would be out of distribution for the LLC at deployment.)
        priv = jnp.concatenate([obs, v.box_base, v.box_vel, v.goal_base])
        return jnp.nan_to_num(obs), jnp.nan_to_num(priv), jnp.nan_to_num(err)

    def dp_observation(self, state: EnvState):
        """[Ds = 12] hand (x, z) in the base frame, gripper closed, holding, box (x, y in the
        base frame, height), goal (x, y) in the base frame, base body-frame velocity, yaw rate."""
        v = self.task_view(state)
        return jnp.nan_to_num(jnp.concatenate([
            v.hand, jnp.stack([v.closed, v.holding]), v.box_base, v.goal_base, v.vel_body,
            v.yaw_rate[None],
        ]))  # fmt: skip

    # -- reset -----------------------------------------------------------------------------
    def curriculum_spans(self, curriculum):
        """[3] factors of the (distance, angle, heading) spans at curriculum scale c (traced):
        c up to 1, then 1 + growth * (c - 1) (``curriculum_growth``)."""
        c = jnp.asarray(curriculum, jnp.float32)
        growth = jnp.asarray(self.cfg.curriculum_growth, jnp.float32)
        return jnp.where(c <= 1.0, c, 1.0 + growth * (c - 1.0))

    def reset(self, key, curriculum=1.0) -> EnvState:
        """A fresh episode; ``curriculum`` (traced scalar) scales the start-pose spans."""
        c = self.cfg
        k = jax.random.split(key, 7)
        u = lambda kk, lo, hi: jax.random.uniform(kk, minval=lo, maxval=hi)
        s_dist, s_ang, s_head = self.curriculum_spans(curriculum)
        r = u(k[0], c.start_distance[0], c.start_distance[0]
              + (c.start_distance[1] - c.start_distance[0]) * s_dist)  # fmt: skip
        theta = u(k[1], -c.start_angle, c.start_angle) * s_ang + jnp.pi
        base_xy = r * jnp.array([jnp.cos(theta), jnp.sin(theta)])
        facing = jnp.arctan2(-base_xy[1], -base_xy[0])
        yaw = facing + u(k[2], -c.start_heading, c.start_heading) * s_head
        gd = u(k[3], *c.goal_distance)
        ga = u(k[4], -c.goal_angle, c.goal_angle)
        goal = gd * jnp.array([jnp.cos(ga), jnp.sin(ga)])
        qpos = jnp.zeros(self.mj_model.nq)
        qpos = qpos.at[:2].set(base_xy).at[2].set(yaw).at[3:5].set(self._default)
        qpos = qpos.at[5:8].set(jnp.array([0.0, 0.0, c.box_half])).at[8].set(1.0)
        data = mjx.make_data(self.mjx_model)
        data = data.replace(qpos=qpos, ctrl=jnp.zeros(self.mj_model.nu).at[3:5].set(self._default))
        data = data.replace(mocap_pos=data.mocap_pos.at[0, :2].set(goal))
        # Only the kinematics (cup site, box frame) is read before the first ``mjx.step``, which
        # runs the full forward pass itself: much cheaper than ``mjx.forward`` here, and
        # ``reset`` runs for every env at every masked reset of the training loops.
        data = mjx.kinematics(self.mjx_model, data)
        task = TaskState(goal=goal, holding=jnp.zeros(()), closed=jnp.zeros(()))
        hand = self.hand_in_base(self._default)
        cmd = jnp.array([0.0, 0.0, 0.0, hand[0], hand[1], -1.0])  # hold still, gripper open
        last = jnp.zeros(self.action_size)
        obs, priv, _ = self._observe(data, cmd, last, task)
        zero = jnp.zeros(())
        return EnvState(
            data=data, obs=obs, privileged_obs=priv, reward=zero, done=zero, truncated=zero,
            command=cmd, task_reward=zero, success=zero, nonfinite=zero,
            step_count=jnp.zeros((), jnp.int32), last_action=last, task=task,
            metrics={k: zero for k in _METRIC_KEYS}, rng=k[5],
        )  # fmt: skip

    # -- success / failure -----------------------------------------------------------------
    def is_success(self, data, task: TaskState) -> jax.Array:
        """[] 1.0 when the box is at rest, inside the goal disc, on the floor, and released."""
        c = self.cfg
        box, vel = data.qpos[5:8], data.qvel[5:8]
        inside = jnp.linalg.norm(box[:2] - task.goal) < c.goal_radius
        on_floor = box[2] < c.box_half + 0.02
        still = jnp.linalg.norm(vel) < c.rest_speed
        released = (task.holding < 0.5) & (task.closed < 0.5)
        return (inside & on_floor & still & released).astype(jnp.float32)

    def is_failure(self, data) -> jax.Array:
        """[] 1.0 when the box left the arena (or fell through the floor)."""
        box = data.qpos[5:8]
        out = jnp.linalg.norm(box[:2]) > self.cfg.arena_radius
        return (out | (box[2] < -self.cfg.box_half)).astype(jnp.float32)

    # -- dynamics --------------------------------------------------------------------------
    def _cup_force(self, data, holding):
        """xfrc_applied [nbody, 6]: a spring-damper pulling the box top to the cup while held,
        a damping torque on the box's spin, the opposite force on the base."""
        c = self.cfg
        cup = data.site_xpos[self._cup]
        top = data.qpos[5:8] + jnp.array([0.0, 0.0, c.box_half])
        rel_v = data.qvel[5:8] - jnp.concatenate([data.qvel[:2], jnp.zeros(1)])
        f = c.cup_stiffness * (cup - top) - c.cup_damping * rel_v
        norm = jnp.linalg.norm(f)
        f = f * jnp.minimum(1.0, c.cup_max_force / jnp.maximum(norm, 1e-6)) * holding
        # The free joint's angular velocity is in the box frame, xfrc_applied in the world
        # frame: rotate it (damping it in the wrong frame pumps energy in once the box turns).
        spin = data.xmat[self._box] @ data.qvel[8:11]
        torque = -c.cup_spin_damping * spin * holding
        xfrc = jnp.zeros_like(data.xfrc_applied)
        xfrc = xfrc.at[self._box, :3].set(f).at[self._box, 3:].set(torque)
        # The reaction goes to the base (the light, position-controlled arm is treated as rigid
        # under this load; applying it at the hand made the explicit coupling unstable).
        return xfrc.at[self._base, :3].set(-f)

    def _holding(self, data, closed, holding):
        """[] 1.0 when the closed cup engages (box top within capture radius) or keeps (within
        release radius) the box."""
        c = self.cfg
        cup = data.site_xpos[self._cup]
        top = data.qpos[5:8] + jnp.array([0.0, 0.0, c.box_half])
        d = jnp.linalg.norm(cup - top)
        engage = (d < c.capture_radius) | ((holding > 0.5) & (d < c.release_radius))
        return (engage & (closed > 0.5)).astype(jnp.float32)

    def physics_step(self, data):
        """One physics step: ``mjx.step``; ``sim2sim.with_mujoco_physics`` swaps in MuJoCo's
        own C step (sim-to-sim) and leaves everything else of the environment as it is."""
        return mjx.step(self.mjx_model, data)

    def step(self, state: EnvState, action) -> EnvState:
        """One LLC step: ``substeps`` physics steps under the action [Da] (clipped to [-1, 1])."""
        c = self.cfg
        a = jnp.clip(jnp.nan_to_num(action), -1.0, 1.0)
        force = _rot(state.data.qpos[2]) @ a[:2]  # body -> world (omni wheels)
        # The arm's PD target is the analytic IK of the commanded hand position plus the LLC's
        # residual: the LLC learns the corrections (load, sag, base motion), not IK from scratch.
        arm_target = self.inverse_kinematics(state.command[3:5]) + c.arm_action_scale * a[3:5]
        ctrl = jnp.concatenate([force, a[2:3], arm_target])
        closed = (state.command[5] > 0.0).astype(jnp.float32)

        def substep(_, carry):
            data, holding = carry
            holding = self._holding(data, closed, holding)
            data = data.replace(ctrl=ctrl, xfrc_applied=self._cup_force(data, holding))
            return self.physics_step(data), holding

        data, holding = jax.lax.fori_loop(0, c.substeps, substep, (state.data, state.task.holding))
        holding = self._holding(data, closed, holding)
        bad = ~(jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel)))
        bad = bad | (jnp.max(jnp.abs(data.qvel)) > c.max_qvel)
        # An exploded state is replaced by the previous one; the episode ends and is reset.
        data = jax.tree.map(lambda n, o: jnp.where(bad, o, n), data, state.data)
        task = TaskState(goal=state.task.goal, holding=holding * (1.0 - bad), closed=closed)
        obs, priv, err = self._observe(data, state.command, a, task)
        vel_e = jnp.linalg.norm(err[:2])
        yaw_e = jnp.abs(err[2])
        hand_e = jnp.linalg.norm(err[3:5])
        reward = (
            c.w_vel * jnp.exp(-(vel_e**2) / c.sigma_vel**2)
            + c.w_yaw * jnp.exp(-(yaw_e**2) / c.sigma_yaw**2)
            + c.w_hand * jnp.mean(jnp.exp(-(hand_e**2) / jnp.square(jnp.asarray(c.sigma_hand))))
            - c.w_action_rate * jnp.sum(jnp.square(a - state.last_action))
        )
        ok = 1.0 - bad.astype(jnp.float32)
        success = jnp.maximum(state.success, self.is_success(data, task) * ok)
        failure = self.is_failure(data) * ok * (1.0 - success)
        steps = state.step_count + 1
        timeout = (steps >= self.episode_steps).astype(jnp.float32)
        nonfinite = 1.0 - ok
        done = jnp.maximum(jnp.maximum(success, timeout), jnp.maximum(nonfinite, failure))
        metrics = {
            "vel_err": vel_e, "yaw_rate_err": yaw_e, "hand_err": hand_e,
            "box_goal_dist": jnp.linalg.norm(data.qpos[5:7] - task.goal), "holding": holding,
        }  # fmt: skip
        return state.replace(
            data=data, obs=obs, privileged_obs=priv, reward=jnp.nan_to_num(reward * ok),
            done=done, truncated=timeout * (1.0 - success) * ok * (1.0 - failure),
            task_reward=success * (1.0 - state.success), success=success, nonfinite=nonfinite,
            step_count=steps, last_action=a, task=task,
            metrics={k: jnp.nan_to_num(metrics[k]) for k in _METRIC_KEYS},
        )  # fmt: skip

    def with_command(self, state: EnvState, command) -> EnvState:
        """Sets the tracked command [Dc] (clipped to the range) and recomputes the observations."""
        command = jnp.clip(jnp.nan_to_num(command), self.command_low, self.command_high)
        task = state.task.replace(closed=(command[5] > 0.0).astype(jnp.float32))
        obs, priv, _ = self._observe(state.data, command, state.last_action, task)
        return state.replace(command=command, obs=obs, privileged_obs=priv, task=task)

    def sample_command(self, key, state: EnvState):
        """Random commands over the DP's range: moving, turning, reaching, gripper toggles;
        one in five holds the base still (as during grasping), three in ten move slowly."""
        k1, k2, k3, k4 = jax.random.split(key, 4)
        low, high = self.command_low, self.command_high
        cmd = jax.random.uniform(k1, (self.command_size,), minval=low, maxval=high)
        still = jax.random.bernoulli(k2, 0.2)
        cmd = cmd.at[:3].set(jnp.where(still, 0.0, cmd[:3]))
        slow = jax.random.bernoulli(k3, 0.3)
        cmd = cmd.at[:3].multiply(jnp.where(slow, 0.3, 1.0))
        return cmd.at[5].set(jnp.where(jax.random.bernoulli(k4, 0.5), 1.0, -1.0))

    def expert_command(self, state: EnvState):
        """[Dc] the scripted stage planner's command (``refine_dp_jax.planners.testbed``)."""
        return planner.expert_command(self, state, self.cfg.planner)

    def reference_action(self, state: EnvState):
        """[Da] hand-written tracking controller: P on the body-frame velocity error plus a
        damping feed-forward for the base; zero arm residual (the IK feed-forward is built into
        the action space)."""
        c = self.cfg
        v = self.task_view(state)
        cmd = state.command
        f = c.base_damping * cmd[:2] + 60.0 * (cmd[:2] - v.vel_body)
        tz = c.yaw_damping * cmd[2] + 6.0 * (cmd[2] - v.yaw_rate)
        arm = jnp.zeros(2)
        return jnp.clip(jnp.concatenate([f / c.max_force, (tz / c.max_torque)[None], arm]), -1, 1)


def make_testbed(**overrides) -> TestbedEnv:
    """Registry factory: ``overrides`` replace fields of ``TestbedConfig``."""
    names = {f.name for f in dataclasses.fields(TestbedConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise ConfigError(
            f"testbed_pick_place has no config field(s) {sorted(unknown)}; "
            f"known: {', '.join(sorted(names))}"
        )
    return TestbedEnv(TestbedConfig(**overrides))


register("testbed_pick_place", make_testbed)
