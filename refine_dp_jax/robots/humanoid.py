"""A G1-class humanoid built in code with ``mujoco.MjSpec`` (no files, no downloads).

Kinematic layout (27 hinges + 2 finger slides, 35 DoF with the floating base):
  pelvis (free joint)
    thigh (hip pitch, roll, yaw)  -> shank (knee) -> foot (ankle pitch, roll)        x 2
    torso (waist yaw)
      upper arm (shoulder pitch, roll, yaw) -> forearm (elbow) -> hand (wrist roll, pitch,
      yaw) -> gripper: a fixed jaw and one sliding finger (one actuator)         x 2

Sources. Joint axes, zero configuration, joint ranges, torque limits and link masses are the
Unitree G1 29-DoF model's (Unitree's public ``g1_29dof`` MJCF/URDF, actuatorfrcrange and
range attributes; body masses from its inertial tags); leg PD gains and the default
crouched stance are unitree_rl_gym's G1 config; rotor armatures are Unitree's motor data as
published in the G1 configs of BeyondMimic (whole_body_tracking). Height 1.32 m and mass
~35 kg are the G1 spec sheet's. Simplifications (estimates, said so at each number): the
joints of one multi-axis joint group (hip, shoulder, wrist, ankle) intersect at one point
(the G1 offsets of 1-5 cm between successive axes are dropped, the intermediate links'
masses are lumped into the next body), the waist has yaw only (as the 23-DoF G1), arm gains
and the gripper are estimated (the G1's Dex hands are replaced by a two-finger gripper whose
inner finger is a fixed jaw and whose outer finger slides: one DoF and one actuator per hand;
a second moving finger cost ~10 % of MJX throughput, measured).

Servos are MuJoCo position actuators with kp and kv (the damping is part of the actuator
force, so the torque limit bounds it, as on the motor driver); Euler's implicit joint damping
is disabled (it costs one more factorization of the mass matrix per step: ~15 % of the MJX step
at this size, measured) and the armatures keep the explicit damping stable at 5 ms.

Collision: every geom has contype = conaffinity = 0. Contacts exist only as explicit pairs,
which the scene builders add (feet spheres vs floor, finger pads vs objects ...): MJX then
checks exactly those pairs and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from refine_dp_jax.robots.spatial import axis_angle

SIDES = ("left", "right")
_X, _Y, _Z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)


@dataclass(frozen=True)
class JointSpec:
    """One actuated hinge and its position servo."""

    name: str  # joint (and actuator) name
    axis: tuple[float, float, float]  # joint axis in the body frame
    range: tuple[float, float]  # rad, G1 joint range
    torque: float  # N m, G1 actuator torque limit
    kp: float  # N m / rad, servo stiffness
    kd: float  # N m s / rad, servo damping (actuator kv)
    armature: float  # kg m^2, reflected rotor inertia
    default: float  # rad, joint angle of the default standing pose


# Rotor armatures of the G1 motors (BeyondMimic G1 config: ARMATURE_5020, _7520_14,
# _7520_22, _4010; kg m^2).
ARM_5020, ARM_7520_14, ARM_7520_22, ARM_4010 = 0.003609725, 0.010177520, 0.025101925, 0.00425


def _leg(side: str) -> tuple[JointSpec, ...]:
    """Leg joints of one side. Ranges/torques: G1 29-DoF URDF (hip roll is mirrored).
    Default pose: unitree_rl_gym's G1 crouch (hip pitch -0.1, knee 0.3, ankle pitch -0.2)
    shifted to hip -0.15 / ankle -0.15 (estimate) so that the hips sit above the ankles and the
    whole-body COM ~2 cm ahead of them (4.6 cm with the original angles). Gains: estimated,
    stiffer than unitree_rl_gym's G1 (hip 100/2, knee 150/4, ankle 40/2) so that the bare PD
    holds the default stance: the body's inverted-pendulum stiffness
    m g h ~ 35 * 9.81 * 0.75 ~ 260 N m/rad must be exceeded by the two ankles (2 x 300 here for
    pitch; 2 x 40 falls over in ~1 s, 2 x 150 in ~2 s, measured). The damping of the light
    joints is kept below the explicit-integration bound 2 I / dt (ankle: I ~ 0.0075 kg m^2 ->
    kd < 3)."""
    roll = (-0.5236, 2.9671) if side == "left" else (-2.9671, 0.5236)
    return (
        JointSpec(f"{side}_hip_pitch", _Y, (-2.5307, 2.8798), 88.0, 200.0, 5.0, ARM_7520_14, -0.15),
        JointSpec(f"{side}_hip_roll", _X, roll, 88.0, 200.0, 5.0, ARM_7520_22, 0.0),
        JointSpec(f"{side}_hip_yaw", _Z, (-2.7576, 2.7576), 88.0, 150.0, 3.0, ARM_7520_14, 0.0),
        JointSpec(f"{side}_knee", _Y, (-0.087267, 2.8798), 139.0, 250.0, 6.0, ARM_7520_22, 0.3),
        # The G1 ankle is a parallel linkage driven by two 5020 motors: armature 2 x 5020.
        JointSpec(f"{side}_ankle_pitch", _Y, (-0.87267, 0.5236), 50.0, 300.0, 2.5, 2 * ARM_5020,
                  -0.15),
        JointSpec(f"{side}_ankle_roll", _X, (-0.2618, 0.2618), 50.0, 100.0, 2.0, 2 * ARM_5020, 0.0),
    )  # fmt: skip


def _arm(side: str) -> tuple[JointSpec, ...]:
    """Arm joints of one side. Ranges/torques: G1 29-DoF URDF (shoulder roll mirrored).
    Gains: estimated (stiff enough to hold ~1 kg at the hand with the LLC's offsets; the
    G1 configs use 5020 gains of 15-40 N m/rad). Default pose: estimated relaxed ready pose
    (upper arms slightly abducted, forearms 0.3 rad below horizontal, G1 zero = forearm
    forward)."""
    s = 1.0 if side == "left" else -1.0
    roll = (-1.5882, 2.2515) if side == "left" else (-2.2515, 1.5882)
    return (
        JointSpec(f"{side}_shoulder_pitch", _Y, (-3.0892, 2.6704), 25.0, 40.0, 1.5, ARM_5020, 0.0),
        JointSpec(f"{side}_shoulder_roll", _X, roll, 25.0, 40.0, 1.5, ARM_5020, 0.15 * s),
        JointSpec(f"{side}_shoulder_yaw", _Z, (-2.618, 2.618), 25.0, 30.0, 1.0, ARM_5020, 0.0),
        JointSpec(f"{side}_elbow", _Y, (-1.0472, 2.0944), 25.0, 40.0, 1.5, ARM_5020, 0.3),
        JointSpec(f"{side}_wrist_roll", _X, (-1.97222, 1.97222), 25.0, 15.0, 0.5, ARM_5020, 0.0),
        JointSpec(f"{side}_wrist_pitch", _Y, (-1.61443, 1.61443), 5.0, 10.0, 0.3, ARM_4010, 0.0),
        JointSpec(f"{side}_wrist_yaw", _Z, (-1.61443, 1.61443), 5.0, 10.0, 0.3, ARM_4010, 0.0),
    )  # fmt: skip


LEG_JOINTS: tuple[JointSpec, ...] = _leg("left") + _leg("right")  # 12, LLC action order
ARM_JOINTS: tuple[JointSpec, ...] = _arm("left") + _arm("right")  # 14, LLC action order
# Waist yaw: G1 range/torque; held by a stiff servo (gains estimated; the LLC does not move it).
WAIST_JOINT = JointSpec("waist_yaw", _Z, (-2.618, 2.618), 88.0, 200.0, 5.0, ARM_7520_14, 0.0)
ACTUATED: tuple[JointSpec, ...] = LEG_JOINTS + ARM_JOINTS  # the LLC's 26 joints
FINGERS = tuple(f"{s}_finger" for s in SIDES)  # 2 slide joints (one per gripper)


@dataclass(frozen=True)
class HumanoidParams:
    """Geometry, masses and gripper of the robot (metres, kilograms)."""

    # pelvis
    pelvis_mass: float = 3.813  # G1 MJCF pelvis inertial mass
    # hip joint centre relative to the pelvis: G1 hip pitch at (0, +-0.0645, -0.1027) plus
    # hip roll offset (0, +-0.052, -0.0305); the three hip axes are merged there (estimate)
    hip_offset: tuple[float, float, float] = (0.0, 0.1165, -0.133)
    thigh_length: float = 0.30  # G1 spec sheet: thigh + calf = 0.6 m; MJCF hip->knee ~0.30
    shank_length: float = 0.30  # G1 MJCF: knee -> ankle pitch 0.30001
    ankle_to_sole: float = 0.0526  # G1 MJCF: ankle roll 0.0176 below pitch + contacts 0.035
    thigh_mass: float = 4.572  # G1 MJCF hip pitch + roll + yaw links 1.35 + 1.52 + 1.702
    shank_mass: float = 1.932  # G1 MJCF knee link
    foot_mass: float = 0.682  # G1 MJCF ankle pitch + roll links 0.074 + 0.608
    # foot contact points (ankle frame x range and half width): G1 MJCF foot spheres at
    # x = -0.05 and 0.12, y = +-0.025 / +-0.03
    foot_heel_x: float = -0.05
    foot_toe_x: float = 0.12
    foot_half_width: float = 0.03
    foot_sphere_radius: float = 0.01  # estimate (G1 uses 0.005; larger is gentler in MJX)
    # contact spheres per sole: 3 = two toe corners + heel centre (a support triangle), 4 = the
    # G1's four corners. Each contact is 4 constraint rows in every MJX solve: 3 per foot
    # measured ~8 % faster per task model than 4 (benchmarks/physics_cost.py)
    foot_points: int = 3
    # torso: waist yaw at the pelvis origin (G1), torso link 0.054 above it (G1: 0.035+0.019)
    torso_offset: float = 0.054
    torso_mass: float = 9.889  # G1 MJCF waist yaw + roll links + torso link 0.244+0.047+9.598
    torso_com_height: float = 0.18  # G1 MJCF torso inertial z 0.1799
    head_height: float = 0.42  # estimate: head top at ~1.32 m (G1 spec sheet height 1.32 m)
    # shoulder centre relative to the torso: G1 pitch at (0.004, +-0.100, 0.238) plus the roll
    # offset (0, +-0.038, -0.014); the three shoulder axes are merged there (estimate)
    shoulder_offset: tuple[float, float, float] = (0.0, 0.138, 0.224)
    # shoulder -> elbow: G1 yaw link 0.1032 below roll, elbow (0.0158, 0, -0.0805) below yaw
    elbow_offset: tuple[float, float, float] = (0.016, 0.0, -0.184)
    # elbow -> wrist (roll axis along the forearm; pitch 0.038 further): G1 (0.1+0.038, 0, -0.01)
    wrist_offset: tuple[float, float, float] = (0.138, 0.0, -0.01)
    upper_arm_mass: float = 2.095  # G1 MJCF shoulder pitch + roll + yaw links
    forearm_mass: float = 0.685  # G1 MJCF elbow link + wrist roll link
    hand_mass: float = 0.739  # G1 MJCF wrist pitch + yaw links (the gripper replaces the hand)
    # gripper (estimates: a parallel gripper in place of the G1 Dex hand)
    grasp_x: float = 0.12  # m, grasp point ahead of the wrist (G1: yaw 0.046 + hand ~0.07)
    finger_mass: float = 0.08  # kg, the sliding finger
    jaw_offset: float = 0.04  # m, fixed jaw's inner face from the hand's centre line
    finger_kp: float = 400.0  # N/m
    finger_kd: float = 8.0  # N s/m
    finger_force: float = 40.0  # N, grip force limit
    pad_radius: float = 0.01  # m, finger pad contact spheres
    pads_per_finger: int = 1  # 1: one pad (grip pairs use torsional friction), 2: two pads
    palm_radius: float = 0.03  # m, palm contact sphere (pushing)

    @property
    def total_mass(self) -> float:
        return (self.pelvis_mass + self.torso_mass
                + 2 * (self.thigh_mass + self.shank_mass + self.foot_mass)
                + 2 * (self.upper_arm_mass + self.forearm_mass + self.hand_mass
                       + self.finger_mass))  # fmt: skip

    @property
    def finger_stroke(self) -> float:
        """m, finger travel from open (0.08 m gap) to touching the fixed jaw."""
        return 2.0 * self.jaw_offset


@dataclass(frozen=True)
class PhysicsOptions:
    """MuJoCo solver settings (chosen by measuring MJX speed and standing stability)."""

    timestep: float = 0.005  # s per physics step
    iterations: int = 2  # Newton iterations
    ls_iterations: int = 5  # line-search iterations
    elliptic_cone: bool = False  # pyramidal cones are cheaper in MJX
    hard_joint_limits: bool = False  # limit constraints (rows in every solve) vs clamped targets
    floor_friction: float = 1.0  # nominal foot-floor friction


def _geom(body, name: str | None, gtype, size, *, pos=(0, 0, 0), fromto=None, mass=None,
          rgba=(0.6, 0.6, 0.65, 1.0), quat=None):  # fmt: skip
    """Adds a non-colliding geom (contacts only through explicit pairs)."""
    g = body.add_geom()
    if name:
        g.name = name
    g.type = gtype
    g.size = np.asarray(list(size) + [0.0] * (3 - len(size)))
    g.contype = 0
    g.conaffinity = 0
    g.rgba = np.asarray(rgba)
    if fromto is not None:
        g.fromto = np.asarray(fromto, dtype=float)
    else:
        g.pos = np.asarray(pos, dtype=float)
    if quat is not None:
        g.quat = np.asarray(quat, dtype=float)
    if mass is None:
        g.density = 0.0
    else:
        g.mass = mass
    return g


def _joint(body, j: JointSpec, hard_limits: bool):
    jt = body.add_joint()
    jt.name = j.name
    jt.type = mujoco.mjtJoint.mjJNT_HINGE
    jt.axis = np.asarray(j.axis)
    jt.range = np.asarray(j.range)
    jt.limited = (
        mujoco.mjtLimited.mjLIMITED_TRUE if hard_limits else mujoco.mjtLimited.mjLIMITED_FALSE
    )
    jt.armature = j.armature
    return jt


_CAPSULE = mujoco.mjtGeom.mjGEOM_CAPSULE
_BOX = mujoco.mjtGeom.mjGEOM_BOX
_SPHERE = mujoco.mjtGeom.mjGEOM_SPHERE
_GREY, _DARK, _ORANGE = (0.7, 0.7, 0.72, 1.0), (0.25, 0.25, 0.28, 1.0), (0.9, 0.5, 0.15, 1.0)


def add_humanoid(spec: mujoco.MjSpec, p: HumanoidParams, opts: PhysicsOptions) -> None:
    """Adds the robot (bodies, joints, servos, sites, named contact geoms) to ``spec``.

    Named collision geoms (used by scene pairs): ``{side}_foot_c{i}`` (sole spheres),
    ``{side}_jaw_p{0,1}`` / ``{side}_finger_p{0,1}`` (fixed jaw / sliding finger pads),
    ``{side}_palm``, ``chest``, ``hips``.
    Sites: ``{side}_grasp`` (centre of the open gripper), ``{side}_sole``, ``imu`` (pelvis).
    """
    hl = opts.hard_joint_limits
    pelvis = spec.worldbody.add_body()
    pelvis.name = "pelvis"
    pelvis.pos = np.array([0.0, 0.0, 0.8])
    fj = pelvis.add_freejoint()
    fj.name = "root"
    _geom(pelvis, "pelvis_geom", _BOX, (0.05, 0.1, 0.05), pos=(0, 0, -0.07), mass=p.pelvis_mass,
          rgba=_DARK)  # fmt: skip
    _geom(pelvis, "hips", _SPHERE, (0.1,), pos=(0, 0, -0.05), rgba=(0, 0, 0, 0))
    site = pelvis.add_site()
    site.name = "imu"

    by_name = {j.name: j for j in ACTUATED}
    for k, side in enumerate(SIDES):
        s = 1.0 if k == 0 else -1.0
        hx, hy, hz = p.hip_offset
        thigh = pelvis.add_body()
        thigh.name = f"{side}_thigh"
        thigh.pos = np.array([hx, s * hy, hz])
        for jn in ("hip_pitch", "hip_roll", "hip_yaw"):
            _joint(thigh, by_name[f"{side}_{jn}"], hl)
        _geom(thigh, None, _CAPSULE, (0.05,), fromto=(0, 0, -0.02, 0, 0, -p.thigh_length + 0.02),
              mass=p.thigh_mass, rgba=_GREY)  # fmt: skip
        shank = thigh.add_body()
        shank.name = f"{side}_shank"
        shank.pos = np.array([0.0, 0.0, -p.thigh_length])
        _joint(shank, by_name[f"{side}_knee"], hl)
        _geom(shank, None, _CAPSULE, (0.04,), fromto=(0, 0, -0.03, 0, 0, -p.shank_length + 0.04),
              mass=p.shank_mass, rgba=_GREY)  # fmt: skip
        foot = shank.add_body()
        foot.name = f"{side}_foot"
        foot.pos = np.array([0.0, 0.0, -p.shank_length])
        for jn in ("ankle_pitch", "ankle_roll"):
            _joint(foot, by_name[f"{side}_{jn}"], hl)
        zc = -p.ankle_to_sole
        cx = 0.5 * (p.foot_heel_x + p.foot_toe_x)
        hx_ = 0.5 * (p.foot_toe_x - p.foot_heel_x) + p.foot_sphere_radius
        _geom(foot, None, _BOX, (hx_, p.foot_half_width + 0.008, 0.015),
              pos=(cx, 0, zc + 0.017), mass=p.foot_mass, rgba=_DARK)  # fmt: skip
        r = p.foot_sphere_radius
        corners = [(p.foot_toe_x, p.foot_half_width), (p.foot_toe_x, -p.foot_half_width)]
        if p.foot_points == 4:
            corners += [(p.foot_heel_x, p.foot_half_width), (p.foot_heel_x, -p.foot_half_width)]
        else:
            corners += [(p.foot_heel_x, 0.0)]
        for c, (x, y) in enumerate(corners):
            _geom(foot, f"{side}_foot_c{c}", _SPHERE, (r,), pos=(x, y, zc + r), rgba=_DARK)
        sole = foot.add_site()
        sole.name = f"{side}_sole"
        sole.pos = np.array([cx, 0.0, zc])

    torso = pelvis.add_body()
    torso.name = "torso"
    torso.pos = np.array([0.0, 0.0, p.torso_offset])
    _joint(torso, WAIST_JOINT, hl)
    _geom(torso, "torso_geom", _BOX, (0.07, 0.11, 0.15), pos=(0, 0, p.torso_com_height),
          mass=p.torso_mass, rgba=_GREY)  # fmt: skip
    _geom(torso, "head", _SPHERE, (0.075,), pos=(0.0, 0, p.head_height), rgba=_DARK)
    _geom(torso, "chest", _SPHERE, (0.13,), pos=(0.0, 0, 0.2), rgba=(0, 0, 0, 0))
    arm_by_name = {j.name: j for j in ARM_JOINTS}
    for k, side in enumerate(SIDES):
        s = 1.0 if k == 0 else -1.0
        sx, sy, sz = p.shoulder_offset
        upper = torso.add_body()
        upper.name = f"{side}_upper_arm"
        upper.pos = np.array([sx, s * sy, sz])
        for jn in ("shoulder_pitch", "shoulder_roll", "shoulder_yaw"):
            _joint(upper, arm_by_name[f"{side}_{jn}"], hl)
        _geom(upper, None, _CAPSULE, (0.035,), fromto=(0, 0, 0, *p.elbow_offset),
              mass=p.upper_arm_mass, rgba=_GREY)  # fmt: skip
        fore = upper.add_body()
        fore.name = f"{side}_forearm"
        fore.pos = np.array(p.elbow_offset)
        _joint(fore, arm_by_name[f"{side}_elbow"], hl)
        _geom(fore, None, _CAPSULE, (0.03,), fromto=(0, 0, 0, *p.wrist_offset),
              mass=p.forearm_mass, rgba=_GREY)  # fmt: skip
        hand = fore.add_body()
        hand.name = f"{side}_hand"
        hand.pos = np.array(p.wrist_offset)
        for jn in ("wrist_roll", "wrist_pitch", "wrist_yaw"):
            _joint(hand, arm_by_name[f"{side}_{jn}"], hl)
        palm_x = p.grasp_x - 0.06
        _geom(hand, None, _BOX, (palm_x / 2 + 0.01, 0.035, 0.02), pos=(palm_x / 2, 0, 0),
              mass=p.hand_mass, rgba=_DARK)  # fmt: skip
        _geom(hand, f"{side}_palm", _SPHERE, (p.palm_radius,), pos=(palm_x, 0, 0),
              rgba=(0, 0, 0, 0))  # fmt: skip
        g = hand.add_site()
        g.name = f"{side}_grasp"
        g.pos = np.array([p.grasp_x, 0.0, 0.0])
        s_in = -s  # toward the body's midline: the fixed jaw's side
        pr, w0 = p.pad_radius, p.jaw_offset
        _geom(hand, None, _BOX, (0.03, 0.006, 0.012), pos=(p.grasp_x, s_in * (w0 + 0.006), 0),
              rgba=_ORANGE)  # fmt: skip
        pad_x = (0.0,) if p.pads_per_finger == 1 else (-0.015, 0.015)
        for i, x in enumerate(pad_x):
            pos = (p.grasp_x + x, s_in * (w0 + pr), 0)
            _geom(hand, f"{side}_jaw_p{i}", _SPHERE, (pr,), pos=pos, rgba=_ORANGE)
        f = hand.add_body()
        f.name = f"{side}_finger_body"
        f.pos = np.array([p.grasp_x, 0.0, 0.0])
        jt = f.add_joint()
        jt.name = f"{side}_finger"
        jt.type = mujoco.mjtJoint.mjJNT_SLIDE
        jt.axis = np.array([0.0, s_in, 0.0])  # closing moves the finger toward the jaw
        jt.range = np.array([0.0, p.finger_stroke])
        jt.limited = mujoco.mjtLimited.mjLIMITED_TRUE if hl else mujoco.mjtLimited.mjLIMITED_FALSE
        jt.armature = 0.01
        _geom(f, None, _BOX, (0.03, 0.006, 0.012), pos=(0, -s_in * (w0 + 0.006), 0),
              mass=p.finger_mass, rgba=_ORANGE)  # fmt: skip
        for i, x in enumerate(pad_x):
            _geom(f, f"{side}_finger_p{i}", _SPHERE, (pr,), pos=(x, -s_in * (w0 + pr), 0),
                  rgba=_ORANGE)  # fmt: skip

    for j in ACTUATED + (WAIST_JOINT,):
        a = spec.add_actuator()
        a.name = j.name
        a.target = j.name
        a.trntype = mujoco.mjtTrn.mjTRN_JOINT
        a.set_to_position(kp=j.kp, kv=j.kd)
        a.ctrlrange = np.asarray(j.range)
        a.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        a.forcerange = np.array([-j.torque, j.torque])
        a.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
    for name in FINGERS:
        a = spec.add_actuator()
        a.name = name
        a.target = name
        a.trntype = mujoco.mjtTrn.mjTRN_JOINT
        a.set_to_position(kp=p.finger_kp, kv=p.finger_kd)
        a.ctrlrange = np.array([0.0, p.finger_stroke])
        a.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        a.forcerange = np.array([-p.finger_force, p.finger_force])
        a.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE


def foot_contact_geoms(p: HumanoidParams, side: str) -> list[str]:
    return [f"{side}_foot_c{c}" for c in range(p.foot_points)]


def gripper_pad_geoms(p: HumanoidParams, side: str,
                      which: tuple[str, ...] = ("jaw", "finger")) -> list[str]:  # fmt: skip
    """Contact spheres of a gripper: the fixed jaw's (inner) and/or the sliding finger's."""
    return [f"{side}_{w}_p{i}" for w in which for i in range(p.pads_per_finger)]


# -- arm forward kinematics in JAX (IK for the reference controller and command sampling) ----
def arm_fk(p: HumanoidParams, side: str, q_waist: jax.Array, q_arm: jax.Array):
    """Grasp-site pose in the pelvis frame. q_arm: [7] (shoulder p/r/y, elbow, wrist r/p/y).

    Returns (pos [3], rot [3, 3]). Mirrors ``add_humanoid`` exactly (checked in the tests).
    """
    s = 1.0 if side == "left" else -1.0
    axes = [_Y, _X, _Z, _Y, _X, _Y, _Z]
    r = axis_angle(jnp.array(_Z), q_waist)
    pos = jnp.array([0.0, 0.0, p.torso_offset])
    sx, sy, sz = p.shoulder_offset
    pos = pos + r @ jnp.array([sx, s * sy, sz])
    for i in range(3):
        r = r @ axis_angle(jnp.array(axes[i]), q_arm[i])
    pos = pos + r @ jnp.asarray(p.elbow_offset)
    r = r @ axis_angle(jnp.array(axes[3]), q_arm[3])
    pos = pos + r @ jnp.asarray(p.wrist_offset)
    for i in range(4, 7):
        r = r @ axis_angle(jnp.array(axes[i]), q_arm[i])
    pos = pos + r @ jnp.array([p.grasp_x, 0.0, 0.0])
    return pos, r
