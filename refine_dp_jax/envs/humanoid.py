"""Humanoid loco-manipulation environments at the LLC level (REFINE-DP's four tasks).

One environment class, ``HumanoidEnv``, parameterized by a ``TaskSpec``
(``envs/humanoid_tasks.py``); the robot is ``robots/humanoid.py`` (a G1-class humanoid built
with MjSpec), physics is MJX.

LLC interface (one ``step`` = 20 ms = 4 MJX steps of 5 ms)
  action [Da = 26]: offsets of the 12 leg joints around the default pose (x
    ``leg_action_scale`` rad) and of the 14 arm joints around the arm prior (x
    ``arm_action_scale`` rad): with ``arm_prior = "ik"`` the IK solution of the commanded hand
    poses (``TaskState.arm_ref``, updated by ``with_command``), else the default pose. The
    waist is held at 0. PD targets are clamped to the joint ranges. The grippers follow the
    command's two gripper states directly (+1 closed), as the testbed's does: the LLC does
    not drive the fingers.
  command [Dc = 17], the DP's action (heading frame = pelvis position + pelvis yaw):
    base velocity (vx, vy, yaw rate), left hand pose (position, rotation vector), right hand
    pose, two gripper states. The velocity goes through the footstep planner
    (``planners/footsteps.py``) into a foot-placement command: swing-foot flags, countdown,
    swing-foot target in the stance-foot frame.
  observation [Do = 152] (PAPER.md, LLC actor): projected gravity (3), joint positions
    relative to the default (29: legs, arms, waist, fingers), joint velocities x 0.05 (29),
    last action (26), the arm prior relative to the default (14), command (17), footstep
    command (7: swing flags, countdown, target x, y, yaw and height above the stance foot's
    ground), hand poses (12), hand tracking errors (12), base angular velocity x 0.25 (3);
    with ``actor_history = H`` (opt-in, not the paper's) + 64 x H: the proprioception
    (``proprio``) of the H earlier steps, newest first.
  critic [Dpriv = 180]: the actor's plus reference and current foot positions in the heading
    frame (6 + 6), base linear velocity (3), foot contact forces (6), base height (1) and the
    randomized parameters: hand payloads (2), floor friction (1), push force (3).
  DP observation [Ds = 34]: hand poses (12), foot poses (x, y, z, yaw; 8), gripper states
    (2), task object pose (6), task goal point (3), base velocity (vx, vy, yaw rate; 3), all in
    the heading frame.

Rewards follow PAPER.md's lower- and upper-body tables (each weight a config field). Where the
paper uses a gait reference we do not have (joint reference position/velocity), the default
pose and zero velocity are the references. The weights the paper ramps by curriculum are
interpolated by ``TaskState.reward_curriculum`` (0 at reset; ``with_reward_curriculum``).

Episodes end on success (sparse task reward 1.0 on that step), a fall (pelvis height above
the soles, tilt), a lost object, a non-finite/exploded state (``nonfinite`` = 1; the state
is rolled back to the last finite one, observations are sanitized) or the time limit.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct
from mujoco import mjx

from refine_dp_jax.envs.base import EnvState, put_model, register
from refine_dp_jax.envs.humanoid_config import INTERFACE_FIELDS, HumanoidConfig
from refine_dp_jax.envs.humanoid_tasks import TASKS, TaskSpec
from refine_dp_jax.errors import ConfigError
from refine_dp_jax.planners.footsteps import FootstepParams, feet_reference, plan, step_index
from refine_dp_jax.robots.humanoid import (
    ACTUATED,
    ARM_JOINTS,
    FINGERS,
    LEG_JOINTS,
    SIDES,
    WAIST_JOINT,
    HumanoidParams,
    PhysicsOptions,
    arm_fk,
    foot_contact_geoms,
)
from refine_dp_jax.robots.spatial import (
    mat_to_rotvec,
    rot_error,
    rot_z,
    rotvec_to_mat,
    wrap_angle,
    yaw_of,
)

NL, NA = len(LEG_JOINTS), len(ARM_JOINTS)  # 12, 14
# reward terms (each weighted and scaled; logged as metrics "r/<term>")
REWARD_TERMS = (
    "foot_pos", "foot_yaw", "base_vel", "leg_pos", "leg_vel", "leg_action_rate", "leg_acc",
    "leg_torque_limit", "leg_joint_limit", "ankle_posture", "orientation", "air_time",
    "base_height", "hand_pos", "hand_rot", "arm_posture", "arm_action_rate", "arm_vel",
    "arm_acc", "hand_acc", "arm_torque_limit", "arm_joint_limit", "capture_point",
)  # fmt: skip


@struct.dataclass
class GaitState:
    start: jax.Array  # [2, 3] (x, y, yaw) of both feet at the start of the current step
    air_time: jax.Array  # [2] s since each foot left the ground
    contact: jax.Array  # [2] 1.0 where the foot touched the ground at the last step


@struct.dataclass
class TaskState:
    """Per-episode state of the humanoid env (the ``EnvState.task`` pytree)."""

    goal: jax.Array  # [3] task goal point (world): placement centre, lift target, ...
    hold: jax.Array  # [] s the success condition has held without interruption
    gait: GaitState  # footstep bookkeeping for rewards
    prev_joint_vel: jax.Array  # [29] joint velocities at the previous step (accelerations)
    prev_hand_pos: jax.Array  # [2, 3] hand positions at the previous step (world)
    prev_hand_vel: jax.Array  # [2, 3] hand velocities at the previous step (world)
    payload: jax.Array  # [2] kg added to each hand this episode
    friction: jax.Array  # [] foot-floor friction this episode
    push_force: jax.Array  # [3] N, force of the current/next push on the torso
    push_start: jax.Array  # [] int32 LLC step at which the next push starts
    push_end: jax.Array  # [] int32 LLC step at which it ends
    reward_curriculum: jax.Array  # [] in [0, 1]: interpolates the curriculum reward weights
    arm_ref: jax.Array  # [14] arm prior: PD targets the arm residual is added to
    latched: jax.Array  # [] 1.0 while the door (if any) is latched shut
    obj_start: jax.Array  # [3] where the task object was at reset (world; planners' memory)
    proprio_hist: jax.Array  # [actor_history, 64] earlier steps' proprioception, newest first


@struct.dataclass
class Features:
    """Privileged quantities of one state, computed once and shared by obs/reward/planners."""

    base_pos: jax.Array  # [3] pelvis position (world)
    base_rot: jax.Array  # [3, 3] pelvis orientation
    yaw: jax.Array  # [] pelvis heading
    heading: jax.Array  # [3, 3] rotation of the heading frame
    gravity: jax.Array  # [3] gravity direction in the pelvis frame
    lin_vel_b: jax.Array  # [3] pelvis linear velocity in the heading frame
    ang_vel: jax.Array  # [3] pelvis angular velocity in the pelvis frame
    hand_pos: jax.Array  # [2, 3] grasp sites (world)
    hand_rot: jax.Array  # [2, 3, 3]
    hand_pose_b: jax.Array  # [2, 6] hand position + rotation vector in the heading frame
    sole_pos: jax.Array  # [2, 3] sole centres (world)
    feet: jax.Array  # [2, 3] (x, y, yaw) of the feet (world)
    obj_pos: jax.Array  # [3] task object site (world)
    obj_rot: jax.Array  # [3, 3]
    obj_vel: jax.Array  # [3] object linear velocity (world; zero without a free object)
    obj_b: jax.Array  # [3] object position in the heading frame
    door_angle: jax.Array  # [] hinge angle (0 without a door)
    lever_angle: jax.Array  # [] door lever travel (0 without a door)
    grip: jax.Array  # [2] gripper openings (m)
    q: jax.Array  # [29] joint positions (legs, arms, waist, fingers)
    qd: jax.Array  # [29] joint velocities


def contact_layout(m: mujoco.MjModel) -> np.ndarray:
    """[ncon, 2] geom ids of each row of MJX's contact arrays (MJX groups the explicit pairs
    by collision function and condim; this mirrors ``mjx._src.collision_driver``, checked
    against ``mjx.forward`` in the tests)."""
    from mujoco.mjx._src import collision_driver as cd

    by_condim: dict[int, list] = {}
    for key, pairs in cd._geom_groups(m).items():
        ncon = cd._COLLISION_FUNC[key.types].ncon
        rows = [(g1, g2) for g1, g2, _ in pairs for _ in range(ncon)]
        by_condim.setdefault(key.condim, []).extend(rows)
    rows = sum((by_condim[k] for k in sorted(by_condim)), [])
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


class HumanoidEnv:
    """LLC-level humanoid environment for one task (see the module docstring)."""

    action_size = NL + NA  # 26
    command_size = 17
    velocity_command_size = 3  # the command's leading base velocity (held longer in training)
    observation_size = 152  # + 64 x cfg.actor_history (set per instance)
    privileged_observation_size = 180  # + 64 x cfg.actor_history
    dp_observation_size = 34
    proprio_size = 64  # one step of proprioception (``proprio``)
    proprio_entries = np.r_[0:61, 149:152]  # where ``proprio``'s entries sit in the observation

    def __init__(
        self, task: TaskSpec, cfg: HumanoidConfig, params: HumanoidParams = HumanoidParams()
    ):
        self.task_spec = task
        self.name = task.name
        self.cfg = c = cfg
        self.params = params
        self.physics = PhysicsOptions(
            timestep=c.physics_dt, iterations=c.solver_iterations, ls_iterations=c.ls_iterations,
            hard_joint_limits=c.hard_joint_limits, floor_friction=float(np.mean(c.floor_friction)),
        )  # fmt: skip
        self.mj_model = task.build_scene(c, params, self.physics).compile()
        extra = self.proprio_size * c.actor_history
        self.observation_size = HumanoidEnv.observation_size + extra
        self.privileged_observation_size = HumanoidEnv.privileged_observation_size + extra
        self.mjx_model = put_model(self.mj_model)
        self.dt = c.dt
        self.episode_steps = int(round(c.episode_seconds / self.dt))
        self.render_camera = (3.0, -25.0, 135.0)
        self.footsteps = FootstepParams(
            step_period=c.step_period, nominal_width=c.nominal_foot_width,
            min_width=c.min_foot_width, swing_height=c.swing_height,
        )  # fmt: skip
        self._index()
        self._reference_pose()

    # -- static indices ------------------------------------------------------------------------
    def _index(self):
        m = self.mj_model
        jid = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)
        obs_joints = [j.name for j in ACTUATED] + [WAIST_JOINT.name] + list(FINGERS)
        self.joint_names = tuple(obs_joints)  # order of the observed joints
        self._qadr = np.array([m.jnt_qposadr[jid(n)] for n in obs_joints])  # [29]
        self._dadr = np.array([m.jnt_dofadr[jid(n)] for n in obs_joints])
        specs = list(ACTUATED) + [WAIST_JOINT]
        self._default = np.array([j.default for j in specs] + [0.0, 0.0])  # [29] fingers open
        self._kp = np.array([j.kp for j in ACTUATED])
        self._kd = np.array([j.kd for j in ACTUATED])
        self._torque = np.array([j.torque for j in ACTUATED])
        rng = np.array([j.range for j in ACTUATED])
        self._lo, self._hi = rng[:, 0], rng[:, 1]
        mid, half = rng.mean(1), 0.5 * (rng[:, 1] - rng[:, 0])
        frac = self.cfg.soft_limit_fraction
        self._soft_lo, self._soft_hi = mid - frac * half, mid + frac * half
        aid = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, n)
        self._act = np.array([aid(n) for n in obs_joints])  # actuator of each obs joint
        if sorted(self._act.tolist()) != list(range(m.nu)):
            raise ConfigError("humanoid: actuators must be exactly the 29 observed joints")
        bid = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, n)
        sid = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, n)
        self._pelvis, self._torso = bid("pelvis"), bid("torso")
        # the robot's bodies (the pelvis's subtree): its centre of mass and momentum
        self._robot_bodies = np.flatnonzero(m.body_rootid == self._pelvis)
        self._hands = np.array([bid(f"{s}_hand") for s in SIDES])
        self._grasp = np.array([sid(f"{s}_grasp") for s in SIDES])
        self._soles = np.array([sid(f"{s}_sole") for s in SIDES])
        self._obj_site = sid(self.task_spec.object_site)
        oj = self.task_spec.object_joint
        self.obj_qadr = int(m.jnt_qposadr[jid(oj)]) if oj else -1
        self._obj_dadr = int(m.jnt_dofadr[jid(oj)]) if oj else -1
        door = jid("door_hinge")
        self._door_jnt = door
        self._door_qadr = int(m.jnt_qposadr[door]) if door >= 0 else -1
        lever = jid("door_lever")
        self._lever_qadr = int(m.jnt_qposadr[lever]) if lever >= 0 else -1
        self._stroke = self.params.finger_stroke
        # floor pairs (friction randomization) and foot contact rows (contact forces)
        floor = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor")
        foot_geoms = [[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, g)
                       for g in foot_contact_geoms(self.params, s)] for s in SIDES]  # fmt: skip
        self._floor_pairs = np.array([i for i in range(m.npair) if floor in
                                      (m.pair_geom1[i], m.pair_geom2[i])])  # fmt: skip
        layout = contact_layout(m)
        self._contact_geoms = layout
        d0 = mjx.make_data(self.mjx_model)
        efc_adr = np.asarray(d0._impl.contact.efc_address)
        rows, sign = [], []
        for side in range(2):
            r = [i for i in range(len(layout)) if set(layout[i]) & set(foot_geoms[side])]
            rows.append(r)
            sign.append([1.0 if layout[i][1] in foot_geoms[side] else -1.0 for i in r])
        self._foot_rows = np.array(rows)  # [2, K]
        self._foot_sign = np.array(sign)
        self._foot_efc = efc_adr[self._foot_rows]  # [2, K]

    def interface(self) -> dict:
        """The config fields an LLC trained on this env depends on (``INTERFACE_FIELDS``;
        ``actor_history`` only when set: LLCs stored before it existed have none)."""
        out = {k: getattr(self.cfg, k) for k in INTERFACE_FIELDS}
        if not self.cfg.actor_history:
            del out["actor_history"]
        return out

    def _reference_pose(self):
        """Standing height and the ready hand poses, from MuJoCo at the default pose."""
        m = self.mj_model
        d = mujoco.MjData(m)
        d.qpos[:] = m.qpos0
        d.qpos[self._qadr] = self._default
        d.qpos[:7] = [0, 0, 0, 1, 0, 0, 0]
        mujoco.mj_forward(m, d)
        r = self.params.foot_sphere_radius
        low = min(d.geom_xpos[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, g)][2]
                  for s in SIDES for g in foot_contact_geoms(self.params, s)) - r  # fmt: skip
        self.stand_height = float(-low + 0.001)
        ready = []
        for k in range(2):
            pos = d.site_xpos[self._grasp[k]].copy()
            rv = np.asarray(mat_to_rotvec(jnp.asarray(d.site_xmat[self._grasp[k]].reshape(3, 3))))
            ready.append(np.concatenate([pos, rv]))
        self.ready_hands = jnp.asarray(np.array(ready), jnp.float32)  # [2, 6] heading frame
        self._qpos0 = jnp.asarray(m.qpos0, jnp.float32)
        self._arm_start = self._default[NL : NL + NA].copy()  # [14] arm joints at reset
        if self.cfg.start_hands is not None:
            for k, mirror in ((0, 1.0), (1, -1.0)):
                pos = np.asarray(self.cfg.start_hands, float) * [1.0, mirror, 1.0]
                rot = d.site_xmat[self._grasp[k]].reshape(3, 3)
                arm = slice(7 * k, 7 * k + 7)
                q = np.asarray(self.arm_ik(k, jnp.asarray(self._arm_start[arm]), jnp.asarray(pos),
                                           jnp.asarray(rot), iters=60))  # fmt: skip
                p, _ = arm_fk(self.params, SIDES[k], jnp.zeros(()), jnp.asarray(q))
                miss = float(np.linalg.norm(np.asarray(p) - pos))
                if miss > 0.01:
                    raise ConfigError(f"humanoid: start_hands {self.cfg.start_hands} is out of "
                                      f"the {SIDES[k]} arm's reach (IK misses it by "
                                      f"{miss:.3f} m)")  # fmt: skip
                self._arm_start[arm] = q

    def standing_state(self) -> tuple[np.ndarray, np.ndarray]:
        """(qpos [nq], ctrl [nu]) of the robot standing at the origin in the default pose, the
        task objects at their nominal places (numpy; benchmarks, rendering)."""
        qpos = np.array(self.mj_model.qpos0)
        qpos[self._qadr] = self._default
        qpos[:7] = [0.0, 0.0, self.stand_height, 1.0, 0.0, 0.0, 0.0]
        ctrl = np.zeros(self.mj_model.nu)
        ctrl[self._act] = self._default
        return qpos, ctrl

    # -- command space ---------------------------------------------------------------------
    def _range(self):
        c = self.cfg
        r = c.hand_rot_range
        lo_l = [c.hand_x_range[0], c.hand_y_range[0], c.hand_z_range[0], -r, -r, -r]
        hi_l = [c.hand_x_range[1], c.hand_y_range[1], c.hand_z_range[1], r, r, r]
        lo_r = [c.hand_x_range[0], -c.hand_y_range[1], c.hand_z_range[0], -r, -r, -r]
        hi_r = [c.hand_x_range[1], -c.hand_y_range[0], c.hand_z_range[1], r, r, r]
        lo = [c.vx_range[0], c.vy_range[0], c.yaw_rate_range[0]] + lo_l + lo_r + [-1.0, -1.0]
        hi = [c.vx_range[1], c.vy_range[1], c.yaw_rate_range[1]] + hi_l + hi_r + [1.0, 1.0]
        return jnp.array(lo, jnp.float32), jnp.array(hi, jnp.float32)

    @property
    def command_max_step(self):
        """[Dc] largest change of each command entry per LLC step when LLC training moves a
        command toward a new random one (hand poses at ``command_hand_speed`` and
        ``command_hand_turn_rate``; base velocity and grippers switch at once)."""
        c = self.cfg
        hand = [c.command_hand_speed * self.dt] * 3 + [c.command_hand_turn_rate * self.dt] * 3
        return jnp.array([1e3] * 3 + hand * 2 + [1e3] * 2, jnp.float32)

    @property
    def command_low(self):
        return self._range()[0]

    @property
    def command_high(self):
        return self._range()[1]

    # -- features, observations ------------------------------------------------------------
    def features(self, data) -> Features:
        """Privileged quantities of ``data`` (one env)."""
        base = data.xpos[self._pelvis]
        rot = data.xmat[self._pelvis].reshape(3, 3)
        yaw = yaw_of(rot)
        h = rot_z(yaw)
        hand_pos = data.site_xpos[self._grasp]
        hand_rot = data.site_xmat[self._grasp].reshape(2, 3, 3)
        rel = (hand_pos - base) @ h  # rows: h^T (p - base)
        rv = jax.vmap(lambda r_: mat_to_rotvec(h.T @ r_))(hand_rot)
        sole = data.site_xpos[self._soles]
        sole_yaw = jax.vmap(lambda r_: yaw_of(r_.reshape(3, 3)))(data.site_xmat[self._soles])
        obj = data.site_xpos[self._obj_site]
        obj_vel = (data.qvel[self._obj_dadr:self._obj_dadr + 3] if self._obj_dadr >= 0
                   else jnp.zeros(3))  # fmt: skip
        door = data.qpos[self._door_qadr] if self._door_qadr >= 0 else jnp.zeros(())
        lever = data.qpos[self._lever_qadr] if self._lever_qadr >= 0 else jnp.zeros(())
        q, qd = data.qpos[self._qadr], data.qvel[self._dadr]
        return Features(
            base_pos=base, base_rot=rot, yaw=yaw, heading=h,
            gravity=rot.T @ jnp.array([0.0, 0.0, -1.0]), lin_vel_b=h.T @ data.qvel[:3],
            ang_vel=data.qvel[3:6], hand_pos=hand_pos, hand_rot=hand_rot,
            hand_pose_b=jnp.concatenate([rel, rv], axis=1), sole_pos=sole,
            feet=jnp.concatenate([sole[:, :2], sole_yaw[:, None]], axis=1), obj_pos=obj,
            obj_rot=data.site_xmat[self._obj_site].reshape(3, 3), obj_vel=obj_vel,
            obj_b=h.T @ (obj - base), door_angle=door, lever_angle=lever,
            grip=self._stroke - q[-2:], q=q, qd=qd,
        )  # fmt: skip

    def _foot_forces(self, data) -> jax.Array:
        """[2, 3] total contact force on each foot (world), from the pyramidal efc forces."""
        impl = data._impl
        force = impl.efc_force
        idx = self._foot_efc[..., None] + np.arange(4)  # [2, K, 4]
        pyr = force[idx]
        mu = impl.contact.friction[self._foot_rows][..., :2]  # [2, K, 2]
        local = jnp.stack([pyr.sum(-1), (pyr[..., 0] - pyr[..., 1]) * mu[..., 0],
                           (pyr[..., 2] - pyr[..., 3]) * mu[..., 1]], axis=-1)  # fmt: skip
        frame = impl.contact.frame[self._foot_rows].reshape(*self._foot_rows.shape, 3, 3)
        world = jnp.einsum("fkij,fki->fkj", frame, local) * self._foot_sign[..., None]
        return world.sum(1)

    def _hand_errors(self, f: Features, command):
        """Position error [2, 3] and rotation error (rotation vector) [2, 3], heading frame."""
        cmd = command[3:15].reshape(2, 6)
        pos_err = cmd[:, :3] - f.hand_pose_b[:, :3]
        r_cur = jax.vmap(rotvec_to_mat)(f.hand_pose_b[:, 3:])
        r_cmd = jax.vmap(rotvec_to_mat)(cmd[:, 3:])
        rot_err = jax.vmap(lambda a, b: mat_to_rotvec(a @ b.T))(r_cmd, r_cur)
        return pos_err, rot_err

    def terrain(self, xy) -> jax.Array:
        """[] ground height at a world (x, y) (the task's terrain; flat by default)."""
        t = self.task_spec.terrain
        return jnp.zeros(()) if t is None else t(self.cfg, xy)

    def footstep_command(self, f: Features, command, step_count):
        return plan(command[:3], f.feet, step_count * self.dt, self.footsteps, self.terrain)

    def proprio(self, f: Features) -> jax.Array:
        """[64] one step's proprioception as the actor observes it: projected gravity, joint
        positions relative to the default, joint velocities x 0.05, base angular velocity
        x 0.25 (observation entries 0-60 and 149-151)."""
        return jnp.concatenate([f.gravity, f.q - self._default, 0.05 * f.qd, 0.25 * f.ang_vel])

    def _observe(self, data, f: Features, command, last_action, task: TaskState, step_count):
        fs = self.footstep_command(f, command, step_count)
        pos_err, rot_err = self._hand_errors(f, command)
        obs = jnp.concatenate([
            f.gravity, f.q - self._default, 0.05 * f.qd, last_action,
            task.arm_ref - self._default[NL : NL + NA], command,
            fs.observation(), f.hand_pose_b.reshape(-1),
            jnp.concatenate([pos_err, rot_err], axis=1).reshape(-1), 0.25 * f.ang_vel,
            task.proprio_hist.reshape(-1),
        ])  # fmt: skip
        ref, ref_z = feet_reference(fs, task.gait.start, self.footsteps, self.terrain)
        h = f.heading
        ref_b = (jnp.concatenate([ref[:, :2], ref_z[:, None]], axis=1) - f.base_pos) @ h
        feet_b = (f.sole_pos - f.base_pos) @ h
        forces = self._foot_forces(data) @ h
        height = self.base_height(f)
        priv = jnp.concatenate([
            obs, ref_b.reshape(-1), feet_b.reshape(-1), f.lin_vel_b, 0.01 * forces.reshape(-1),
            height[None], task.payload, task.friction[None], 0.01 * task.push_force,
        ])  # fmt: skip
        return jnp.nan_to_num(obs), jnp.nan_to_num(priv)

    def dp_observation(self, state: EnvState):
        f = self.features(state.data)
        h = f.heading
        feet = jnp.concatenate([(f.sole_pos - f.base_pos) @ h,
                                wrap_angle(f.feet[:, 2] - f.yaw)[:, None]], axis=1)  # fmt: skip
        obj = jnp.concatenate([f.obj_b, mat_to_rotvec(h.T @ f.obj_rot)])
        grip = 2.0 * (1.0 - f.grip / self._stroke) - 1.0  # +1 closed, -1 open
        goal = h.T @ (state.task.goal - f.base_pos)
        vel = jnp.concatenate([f.lin_vel_b[:2], f.ang_vel[2:3]])
        return jnp.nan_to_num(jnp.concatenate([
            f.hand_pose_b.reshape(-1), feet.reshape(-1), grip, obj, goal, vel]))  # fmt: skip

    # -- reset -----------------------------------------------------------------------------
    def _sample_push(self, key, step):
        c = self.cfg
        k1, k2, k3 = jax.random.split(key, 3)
        wait = jax.random.uniform(k1, minval=c.push_interval[0], maxval=c.push_interval[1])
        start = step + jnp.round(wait / self.dt).astype(jnp.int32)
        end = start + max(1, int(round(c.push_duration / self.dt)))
        ang = jax.random.uniform(k2, minval=c.push_angle[0], maxval=c.push_angle[1])
        mag = jax.random.uniform(k3, minval=c.push_force_min, maxval=c.push_force)
        return mag * jnp.array([jnp.cos(ang), jnp.sin(ang), 0.0]), start, end

    def reset(self, key, curriculum=1.0) -> EnvState:
        c, t = self.cfg, self.task_spec
        k = jax.random.split(key, 12)
        u = lambda kk, lo, hi: jax.random.uniform(kk, minval=lo, maxval=hi)
        cur = jnp.asarray(curriculum, jnp.float32)
        # robot start: radial distance, polar angle, heading offset around the task anchor
        d_lo, d_hi = c.start_distance
        r = d_lo + (d_hi - d_lo) * cur * u(k[0], 0.0, 1.0)
        theta = t.approach_yaw + jnp.pi + c.start_angle * cur * u(k[1], -1.0, 1.0)
        anchor = jnp.asarray(t.anchor(c), jnp.float32)
        xy = anchor + r * jnp.array([jnp.cos(theta), jnp.sin(theta)])
        face = jnp.arctan2(anchor[1] - xy[1], anchor[0] - xy[0])
        yaw = face + c.start_heading * cur * u(k[2], -1.0, 1.0)
        qpos = self._qpos0.at[self._qadr].set(self._default)
        arm = slice(NL, NL + NA)
        arm_q = self._arm_start + c.arm_randomization * jax.random.uniform(
            k[3], (NA,), minval=-1.0, maxval=1.0
        )
        arm_q = jnp.clip(arm_q, self._lo[arm], self._hi[arm])
        use_arm = jax.random.bernoulli(k[4], c.arm_randomization_prob)
        qpos = qpos.at[self._qadr[arm]].set(jnp.where(use_arm, arm_q, self._arm_start))
        qpos = qpos.at[:3].set(jnp.array([xy[0], xy[1], self.stand_height]))
        qpos = qpos.at[3:7].set(jnp.array([jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)]))
        qpos, goal = t.place(self, k[5], qpos)
        ctrl = (
            jnp.zeros(self.mj_model.nu)
            .at[self._act]
            .set(jnp.asarray(self._default).at[arm].set(qpos[self._qadr[arm]]))
        )
        data = mjx.make_data(self.mjx_model).replace(qpos=qpos, ctrl=ctrl)
        # Only positions (bodies, sites) are read before the first mjx.step: kinematics is
        # enough and compiles in a third of mjx.forward's time (9 s vs 22 s on one CPU core;
        # every training/evaluation program contains a reset). Contact forces read zero.
        data = mjx.kinematics(self.mjx_model, data)
        f = self.features(data)
        # domain randomization
        payload = jnp.where(jax.random.bernoulli(k[6], c.payload_prob),
                            jax.random.uniform(k[7], (2,), minval=c.payload_mass[0],
                                               maxval=c.payload_mass[1]), 0.0)  # fmt: skip
        friction = u(k[8], c.floor_friction[0], c.floor_friction[1])
        push_force, push_start, push_end = self._sample_push(k[9], jnp.zeros((), jnp.int32))
        gait = GaitState(start=f.feet, air_time=jnp.zeros(2), contact=jnp.ones(2))
        task = TaskState(
            goal=goal, hold=jnp.zeros(()), gait=gait, prev_joint_vel=f.qd,
            prev_hand_pos=f.hand_pos, prev_hand_vel=jnp.zeros((2, 3)), payload=payload,
            friction=friction, push_force=push_force, push_start=push_start, push_end=push_end,
            reward_curriculum=jnp.zeros(()), arm_ref=f.q[NL : NL + NA], latched=jnp.ones(()),
            obj_start=f.obj_pos,
            proprio_hist=jnp.tile(self.proprio(f)[None], (c.actor_history, 1)),  # still before
        )  # fmt: skip
        cmd = jnp.concatenate([jnp.zeros(3), f.hand_pose_b.reshape(-1), -jnp.ones(2)])
        cmd = jnp.clip(cmd, self.command_low, self.command_high)
        last = jnp.zeros(self.action_size)
        step0 = jnp.zeros((), jnp.int32)
        obs, priv = self._observe(data, f, cmd, last, task, step0)
        zero = jnp.zeros(())
        return EnvState(
            data=data, obs=obs, privileged_obs=priv, reward=zero, done=zero, truncated=zero,
            command=cmd, task_reward=zero, success=zero, nonfinite=zero, step_count=step0,
            last_action=last, task=task,
            metrics={**self._metrics(f, cmd, task, zero, zero),
                     **{f"r/{k}": zero for k in REWARD_TERMS}},
            rng=k[10],
        )  # fmt: skip

    # -- dynamics --------------------------------------------------------------------------
    def _targets(self, a, arm_ref, command):
        """[26] PD targets of the LLC joints from the action [26] around the prior, and [2]
        finger targets from the command's gripper states (+1 closed: full travel)."""
        c = self.cfg
        scale = np.concatenate([np.full(NL, c.leg_action_scale), np.full(NA, c.arm_action_scale)])
        base = jnp.concatenate([jnp.asarray(self._default[:NL], jnp.float32), arm_ref])
        q_t = jnp.clip(base + scale * a, self._lo, self._hi)
        finger = self._stroke * 0.5 * (jnp.clip(command[15:17], -1.0, 1.0) + 1.0)
        return q_t, finger

    def _model(self, task: TaskState):
        """The MJX model with this episode's randomized floor friction and hand payloads, and
        (door task) the door hinge's range closed to ~0 while the latch holds."""
        m = self.mjx_model
        fr = m.pair_friction.at[self._floor_pairs, 0:2].set(task.friction)
        mass = m.body_mass.at[self._hands].add(task.payload)
        m = m.replace(pair_friction=fr, body_mass=mass)
        if self._door_jnt >= 0:
            hi = jnp.where(task.latched > 0.5, 0.002, self.mj_model.jnt_range[self._door_jnt, 1])
            m = m.replace(jnt_range=m.jnt_range.at[self._door_jnt, 1].set(hi))
        return m

    def step(self, state: EnvState, action) -> EnvState:
        c, t = self.cfg, self.task_spec
        task = state.task
        a = jnp.clip(jnp.nan_to_num(action), -1.0, 1.0)
        q_t, finger = self._targets(a, task.arm_ref, state.command)
        ctrl = (
            jnp.zeros(self.mj_model.nu)
            .at[self._act]
            .set(jnp.concatenate([q_t, jnp.zeros(1), finger]))
        )
        pushing = (state.step_count >= task.push_start) & (state.step_count < task.push_end)
        xfrc = (
            jnp.zeros((self.mj_model.nbody, 6)).at[self._torso, :3].set(task.push_force * pushing)
        )
        model = self._model(task)
        data = state.data.replace(ctrl=ctrl, xfrc_applied=xfrc)
        data = jax.lax.fori_loop(0, c.substeps, lambda _, d: mjx.step(model, d), data)
        bad = ~(jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel)))
        bad = bad | (jnp.max(jnp.abs(data.qvel)) > c.max_qvel)
        # An exploded state is replaced by the previous (finite) one; the episode ends.
        data = jax.tree.map(lambda n, o: jnp.where(bad, o, n), data, state.data)
        steps = state.step_count + 1
        f = self.features(data)

        # gait bookkeeping: latch the feet at each step boundary, air time, touchdowns
        fp = self.footsteps
        new_step = step_index(steps * self.dt, fp) != step_index(state.step_count * self.dt, fp)
        start = jnp.where(new_step, f.feet, task.gait.start)
        forces = self._foot_forces(data)
        contact = (forces[:, 2] > 5.0).astype(jnp.float32)
        air = task.gait.air_time + self.dt
        touchdown = contact * (1.0 - task.gait.contact)
        gait = GaitState(start=start, air_time=air * (1.0 - contact), contact=contact)
        hand_vel = (f.hand_pos - task.prev_hand_pos) / self.dt
        hand_acc = (hand_vel - task.prev_hand_vel) / self.dt
        cp_err = (self.capture_point(model, data) - jnp.mean(f.sole_pos[:, :2], axis=0)
                  if c.w_capture_point else jnp.zeros(2))  # fmt: skip
        reward, parts = self._reward(f, state.command, a, state.last_action, q_t, task, gait,
                                     air, touchdown, hand_acc, steps, cp_err)  # fmt: skip

        # task progress
        cond = t.condition(self, f, task) & ~bad
        hold = jnp.where(cond, task.hold + self.dt, 0.0)
        ok = cond & (hold >= t.hold_seconds(c) - 1e-6)
        success = jnp.maximum(state.success, ok.astype(jnp.float32))
        failed = (self.fallen(f) | t.dropped(self, f)) & ~bad
        timeout = (steps >= self.episode_steps).astype(jnp.float32)
        nonfinite = bad.astype(jnp.float32)
        done = jnp.maximum(jnp.maximum(success, timeout), jnp.maximum(nonfinite, failed * 1.0))
        truncated = timeout * (1.0 - success) * (1.0 - nonfinite) * (1.0 - failed)

        # push schedule: after a push, draw the next one
        rng, k_push = jax.random.split(state.rng)
        nf, ns, ne = self._sample_push(k_push, steps)
        over = steps >= task.push_end
        latched = task.latched * (f.lever_angle < c.latch_release_angle)  # released for good
        prev = state.obs[self.proprio_entries]  # this step's start (``proprio``), newest first
        hist = jnp.concatenate([prev[None], task.proprio_hist])[: c.actor_history]
        task = task.replace(
            proprio_hist=hist,
            latched=latched, hold=hold, gait=gait, prev_joint_vel=f.qd, prev_hand_pos=f.hand_pos,
            prev_hand_vel=hand_vel, push_force=jnp.where(over, nf, task.push_force),
            push_start=jnp.where(over, ns, task.push_start),
            push_end=jnp.where(over, ne, task.push_end),
        )  # fmt: skip
        obs, priv = self._observe(data, f, state.command, a, task, steps)
        return state.replace(
            data=data, obs=obs, privileged_obs=priv, reward=jnp.where(bad, 0.0, reward),
            done=done, truncated=truncated, task_reward=success * (1.0 - state.success),
            success=success, nonfinite=nonfinite, step_count=steps, last_action=a, task=task,
            metrics={**self._metrics(f, state.command, task, parts["foot_err"], parts["vel_err"]),
                     **{f"r/{k}": v for k, v in parts["terms"].items()}},  # fmt: skip
            rng=rng,
        )  # fmt: skip

    # -- rewards ---------------------------------------------------------------------------
    def _reward(self, f: Features, command, a, last_a, q_t, task: TaskState, gait: GaitState,
                air, touchdown, hand_acc, steps, cp_err):  # fmt: skip
        """LLC tracking reward (PAPER.md tables) and diagnostics."""
        c = self.cfg
        cur = task.reward_curriculum
        ramp = lambda w0, w1: w0 + (w1 - w0) * cur
        legs, arms = slice(0, NL), slice(NL, NL + NA)
        fs = self.footstep_command(f, command, steps)
        ref, ref_z = feet_reference(fs, gait.start, self.footsteps, self.terrain)
        # 3D: the sole height follows the reference swing (clearance, stepping up)
        foot_err2 = jnp.sum(jnp.square(f.feet[:, :2] - ref[:, :2]), axis=1) + jnp.square(
            f.sole_pos[:, 2] - ref_z
        )
        yaw_err = wrap_angle(f.feet[:, 2] - ref[:, 2])
        vel_err2 = jnp.sum(jnp.square(f.lin_vel_b[:2] - command[:2]))
        q, qd = f.q[: NL + NA], f.qd[: NL + NA]
        acc = (f.qd - task.prev_joint_vel)[: NL + NA] / self.dt
        tau = self._kp * (q_t - q) - self._kd * qd
        over_tau = jnp.maximum(jnp.abs(tau) - self._torque, 0.0)
        over_q = jnp.maximum(q - self._soft_hi, 0.0) + jnp.maximum(self._soft_lo - q, 0.0)
        dq = q - self._default[: NL + NA]
        rate2 = jnp.square(a - last_a)
        ankles = np.array([4, 5, 10, 11])
        moving = self.moving(command)
        height = self.base_height(f)
        lo, hi = c.base_height_band
        out = jnp.maximum(lo - height, 0.0) + jnp.maximum(height - hi, 0.0)
        lower = {
            "foot_pos": c.w_foot_pos * jnp.mean(jnp.exp(-foot_err2 / c.sigma_foot_pos**2)),
            "foot_yaw": c.w_foot_yaw
            * jnp.mean(jnp.exp(-jnp.square(yaw_err) / c.sigma_foot_yaw**2)),  # noqa: E501
            "base_vel": c.w_base_vel * jnp.exp(-vel_err2 / c.sigma_base_vel**2),
            "leg_pos": c.w_leg_pos * jnp.exp(-jnp.sum(jnp.square(dq[legs])) / c.sigma_leg_pos**2),  # noqa: E501
            "leg_vel": c.w_leg_vel * jnp.exp(-jnp.sum(jnp.square(qd[legs])) / c.sigma_leg_vel**2),  # noqa: E501
            "leg_action_rate": ramp(c.w_leg_action_rate, c.w_leg_action_rate_final)
            * jnp.sum(rate2[legs]),  # noqa: E501
            "leg_acc": ramp(c.w_leg_acc, c.w_leg_acc_final) * jnp.sum(jnp.square(acc[legs])),
            "leg_torque_limit": c.w_leg_torque_limit * jnp.sum(over_tau[legs]),
            "leg_joint_limit": c.w_leg_joint_limit * jnp.sum(over_q[legs]),
            "ankle_posture": c.w_ankle_posture * jnp.sum(jnp.square(dq[ankles])),
            "orientation": c.w_orientation
            * jnp.exp(-jnp.sum(jnp.square(f.gravity[:2])) / c.sigma_orientation**2),  # noqa: E501
            "air_time": c.w_air_time * moving * jnp.sum((air - c.air_time_target) * touchdown),
            "base_height": c.w_base_height * jnp.square(out),
        }
        # not in the paper's tables (0 by default): the capture point over the middle of the feet
        balance = c.w_capture_point * jnp.exp(
            -jnp.sum(jnp.square(cp_err)) / c.sigma_capture_point**2
        )
        pos_err, rot_err = self._hand_errors(f, command)
        e_pos = jnp.linalg.norm(pos_err, axis=1)  # [2]
        e_rot = jnp.linalg.norm(rot_err, axis=1)
        sp = jnp.asarray(c.sigma_hand_pos)[:, None]
        sr = jnp.asarray(c.sigma_hand_rot)[:, None]
        upper = {
            "hand_pos": c.w_hand_pos
            * jnp.sum(jnp.mean(jnp.exp(-jnp.square(e_pos) / sp**2), axis=1)),  # noqa: E501
            "hand_rot": c.w_hand_rot
            * jnp.sum(jnp.mean(jnp.exp(-jnp.square(e_rot) / sr**2), axis=1)),  # noqa: E501
            "arm_posture": c.w_arm_posture * jnp.sum(jnp.abs(dq[arms])),
            "arm_action_rate": ramp(c.w_arm_action_rate, c.w_arm_action_rate_final)
            * jnp.sum(rate2[arms]),  # noqa: E501
            "arm_vel": ramp(c.w_arm_vel, c.w_arm_vel_final) * jnp.sum(jnp.square(qd[arms])),
            "arm_acc": ramp(c.w_arm_acc, c.w_arm_acc_final) * jnp.sum(jnp.square(acc[arms])),
            "hand_acc": c.w_hand_acc * jnp.sum(jnp.square(hand_acc)),
            "arm_torque_limit": c.w_arm_torque_limit * jnp.sum(over_tau[arms]),
            "arm_joint_limit": c.w_arm_joint_limit * jnp.sum(over_q[arms]),
            "capture_point": balance,
        }
        terms = {k: c.reward_scale * v for k, v in {**lower, **upper}.items()}
        assert tuple(terms) == REWARD_TERMS
        parts = {"foot_err": jnp.mean(jnp.sqrt(foot_err2)), "vel_err": jnp.sqrt(vel_err2),
                 "terms": terms}  # fmt: skip
        total = sum(terms.values())
        return (jnp.maximum(total, 0.0) if c.only_positive_rewards else total), parts

    def capture_point(self, model, data) -> jax.Array:
        """[2] world xy of the robot's instantaneous capture point, c + v / omega with omega =
        sqrt(g / h): c and v the whole robot's centre of mass and its velocity (``model``'s
        masses, payloads included), h the centre of mass above the mean sole height. Where a
        linear inverted pendulum must put its centre of pressure to come to rest."""
        b = self._robot_bodies
        mass = model.body_mass[b]
        com = data.subtree_com[self._pelvis]
        # cvel: [angular, linear] of each body at its tree's centre of mass (``com``)
        ang, lin = data.cvel[b, :3], data.cvel[b, 3:]
        vel = mass @ (lin + jnp.cross(ang, data.xipos[b] - com)) / jnp.sum(mass)
        height = jnp.maximum(com[2] - jnp.mean(data.site_xpos[self._soles, 2]), 0.1)
        return com[:2] + vel[:2] * jnp.sqrt(height / 9.81)

    def moving(self, command) -> jax.Array:
        """1.0 where the command's base velocity is above the footstep planner's standing
        speed (the feet step), else 0.0."""
        return (jnp.max(jnp.abs(command[:3])) > self.footsteps.stand_speed).astype(jnp.float32)

    @staticmethod
    def base_height(f: Features) -> jax.Array:
        """[] m, the pelvis above the mean height of the two soles."""
        return f.base_pos[2] - jnp.mean(f.sole_pos[:, 2])

    def fallen(self, f: Features) -> jax.Array:
        """[] bool: the pelvis too low above the soles or tilted too far (the episode ends)."""
        c = self.cfg
        return (self.base_height(f) < c.min_base_height) | (f.gravity[2] > -jnp.cos(c.max_tilt))

    def _metrics(self, f: Features, command, task: TaskState, foot_err, vel_err):
        pos_err, rot_err = self._hand_errors(f, command)
        cmd_speed = jnp.linalg.norm(command[:2])
        return {
            "moving": self.moving(command),  # 1.0: a base-velocity command the feet step to
            "hand_err": jnp.mean(jnp.linalg.norm(pos_err, axis=1)),
            "hand_rot_err": jnp.mean(jnp.linalg.norm(rot_err, axis=1)),
            "foot_err": foot_err,
            "vel_err": vel_err,
            # forward progress: commanded planar speed, and the base's speed along the
            # commanded direction (body frame; 0 for a zero command)
            "cmd_speed": cmd_speed,
            "speed_along_cmd": jnp.dot(f.lin_vel_b[:2], command[:2]) / jnp.maximum(cmd_speed, 1e-6),
            "base_height": self.base_height(f),
            "upright": -f.gravity[2],
            "fallen": self.fallen(f).astype(jnp.float32),
            "goal_dist": jnp.linalg.norm(f.obj_pos - task.goal),
        }

    # -- contract: commands ----------------------------------------------------------------
    def with_command(self, state: EnvState, command) -> EnvState:
        """Sets the command (clipped to the command range; a standing task's base velocity
        held at 0); with the IK arm prior, also the arm PD targets that put the hands at the
        commanded poses (warm-started from the previous ones)."""
        command = jnp.clip(command, self.command_low, self.command_high)
        if self.task_spec.stands:
            command = command.at[:3].set(0.0)
        f = self.features(state.data)
        task = state.task
        if self.cfg.arm_prior == "ik":
            task = task.replace(arm_ref=self.arm_prior(f, command, task.arm_ref))
        obs, priv = self._observe(state.data, f, command, state.last_action, task,
                                  state.step_count)  # fmt: skip
        return state.replace(command=command, obs=obs, privileged_obs=priv, task=task)

    def arm_prior(self, f: Features, command, q0) -> jax.Array:
        """[14] arm joints putting both grasp sites at the commanded hand poses (heading frame
        -> pelvis frame at the current pelvis orientation), IK started from ``q0`` [14]."""
        to_pelvis = f.base_rot.T @ f.heading
        arms = []
        for side in range(2):
            pose = command[3 + 6 * side : 9 + 6 * side]
            arms.append(self.arm_ik(side, q0[7 * side : 7 * side + 7], to_pelvis @ pose[:3],
                                    to_pelvis @ rotvec_to_mat(pose[3:]),
                                    self.cfg.ik_iterations))  # fmt: skip
        return jnp.concatenate(arms)

    def with_reward_curriculum(self, state: EnvState, level) -> EnvState:
        """Sets the reward curriculum level in [0, 1] (paper: penalty weights ramp up)."""
        task = state.task.replace(reward_curriculum=jnp.clip(jnp.asarray(level, jnp.float32), 0, 1))
        return state.replace(task=task)

    def hand_pose_from_joints(self, side: int, q_arm) -> jax.Array:
        """[6] hand pose (position, rotation vector) in the pelvis frame for arm joints [7]."""
        pos, rot = arm_fk(self.params, SIDES[side], jnp.zeros(()), q_arm)
        return jnp.concatenate([pos, mat_to_rotvec(rot)])

    def sample_command(self, key, state: EnvState):
        """Random command over the DP's range: base velocity (zero with probability
        ``command_stand_prob``), hand poses (each, with probability ``command_reach_prob``,
        uniform in the reach box in front of the robot, else the forward kinematics of arm
        joints drawn around the default pose), random gripper states."""
        c = self.cfg
        k1, k2, k3, k4, k5, k6, k7 = jax.random.split(key, 7)
        low, high = self.command_low, self.command_high
        vel = jax.random.uniform(k1, (3,), minval=low[:3], maxval=high[:3])
        vel = jnp.where(jax.random.bernoulli(k2, c.command_stand_prob), 0.0, vel)
        arm = slice(NL, NL + NA)
        q = self._default[arm] + c.command_arm_spread * jax.random.uniform(
            k3, (NA,), minval=-1, maxval=1
        )
        q = jnp.clip(q, self._lo[arm], self._hi[arm])
        from_joints = jnp.stack([self.hand_pose_from_joints(0, q[:7]),
                                 self.hand_pose_from_joints(1, q[7:])])  # fmt: skip
        box = jnp.asarray(c.command_reach_box, jnp.float32)  # [3, 2] left hand
        pos = jax.random.uniform(k5, (2, 3), minval=box[:, 0], maxval=box[:, 1])
        pos = pos * jnp.array([[1.0, 1.0, 1.0], [1.0, -1.0, 1.0]])  # mirror the right hand
        rot = c.command_reach_rot * jax.random.uniform(k6, (2, 3), minval=-1.0, maxval=1.0)
        reach = jnp.concatenate([pos, rot], axis=1)
        use_reach = jax.random.bernoulli(k7, c.command_reach_prob, (2, 1))
        hands = jnp.where(use_reach, reach, from_joints).reshape(-1)
        grip = jnp.where(jax.random.bernoulli(k4, 0.5, (2,)), 1.0, -1.0)
        cmd = jnp.concatenate([vel, hands, grip])
        return jnp.clip(cmd, low, high)

    def expert_command(self, state: EnvState):
        """The task's scripted stage planner (privileged state)."""
        return self.task_spec.expert(self, state, self.features(state.data))

    def blank_task(self, goal=(0.0, 0.0, 0.0), hold: float = 0.0) -> TaskState:
        """A task state without randomization (constructed states in tests and tools)."""
        z2, z23 = jnp.zeros(2), jnp.zeros((2, 3))
        gait = GaitState(start=jnp.zeros((2, 3)), air_time=z2, contact=jnp.ones(2))
        return TaskState(
            goal=jnp.asarray(goal, jnp.float32), hold=jnp.asarray(hold, jnp.float32), gait=gait,
            prev_joint_vel=jnp.zeros(len(self._qadr)), prev_hand_pos=z23, prev_hand_vel=z23,
            payload=z2, friction=jnp.asarray(float(np.mean(self.cfg.floor_friction))),
            push_force=jnp.zeros(3), push_start=jnp.zeros((), jnp.int32),
            push_end=jnp.zeros((), jnp.int32), reward_curriculum=jnp.zeros(()),
            arm_ref=jnp.asarray(self._default[NL : NL + NA], jnp.float32), latched=jnp.ones(()),
            obj_start=jnp.zeros(3),
            proprio_hist=jnp.zeros((self.cfg.actor_history, self.proprio_size)),
        )  # fmt: skip

    def is_success(self, data, task: TaskState) -> jax.Array:
        """[] float: the task's success test on ``data`` (positions need kinematics, i.e. a
        ``mjx.forward``ed state) with ``task.hold`` the time the condition has held."""
        f = self.features(data)
        ok = self.task_spec.condition(self, f, task) & (
            task.hold >= self.task_spec.hold_seconds(self.cfg) - 1e-6
        )
        return ok.astype(jnp.float32)

    # -- reference controller --------------------------------------------------------------
    def arm_ik(self, side: int, q0, pos_p, rot_p, iters: int = 12):
        """Damped least squares IK of one arm: joints [7] putting the grasp site at ``pos_p``
        with orientation ``rot_p`` (pelvis frame), starting from ``q0``. Each iteration's step
        is scaled down so that no joint moves more than ``cfg.ik_max_step``: a target near a
        singularity or out of reach moves the solution by at most ``iters`` times that, not
        by a flip of several radians."""
        arm = slice(NL + 7 * side, NL + 7 * side + 7)
        lo, hi = self._lo[arm], self._hi[arm]
        damping, max_step = self.cfg.ik_damping, self.cfg.ik_max_step

        def err(q):
            p, r = arm_fk(self.params, SIDES[side], jnp.zeros(()), q)
            return jnp.concatenate([pos_p - p, 0.3 * rot_error(r, rot_p)])

        def body(q, _):
            e = err(q)
            j = jax.jacfwd(err)(q)  # [6, 7]
            dq = -j.T @ jnp.linalg.solve(j @ j.T + damping * jnp.eye(6), e)
            dq = dq * jnp.minimum(1.0, max_step / jnp.maximum(jnp.max(jnp.abs(dq)), 1e-9))
            return jnp.clip(q + dq, lo, hi), None

        return jax.lax.scan(body, q0, None, length=iters)[0]

    def reference_action(self, state: EnvState):
        """Hand-written controller: legs hold the default pose (no hand-written walking), arms
        track the commanded hand poses by IK (with the IK arm prior: the zero residual)."""
        if self.cfg.arm_prior == "ik":
            return jnp.zeros(self.action_size)
        f = self.features(state.data)
        q = self.arm_prior(f, state.command, f.q[NL : NL + NA])
        off = (q - self._default[NL : NL + NA]) / self.cfg.arm_action_scale
        return jnp.clip(jnp.concatenate([jnp.zeros(NL), off]), -1.0, 1.0)


def _factory(task: TaskSpec):
    def make(**overrides) -> HumanoidEnv:
        names = {f.name for f in dataclasses.fields(HumanoidConfig)}
        unknown = set(overrides) - names
        if unknown:
            raise ConfigError(f"{task.name} has no config field(s) {sorted(unknown)}")
        return HumanoidEnv(task, HumanoidConfig(**{**dict(task.defaults), **overrides}))

    return make


for _task in TASKS.values():
    register(_task.name, _factory(_task))
