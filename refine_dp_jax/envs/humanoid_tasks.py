"""The four humanoid tasks as data: scene builder, object placement, success condition and a
scripted stage planner each; ``HumanoidEnv`` (``envs/humanoid.py``) runs any of them.

Frames: "body" quantities are in the robot's heading frame (pelvis position, pelvis yaw).
Command layout (Dc = 17): vx, vy, yaw rate | left hand x, y, z, rotation vector (3) | right
hand (6) | left gripper, right gripper (> 0 closed).

Stage planners are stateless: the stage follows from the privileged state (object in hand,
door angle, feet on the platform) and from the previous command (``state.command``), which
serves as the planner's memory (e.g. "was already squeezing"). They are sensible, not tuned:
with an untrained LLC they do not succeed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from refine_dp_jax.envs.humanoid_config import HumanoidConfig
from refine_dp_jax.robots.humanoid import (
    HumanoidParams,
    PhysicsOptions,
    foot_contact_geoms,
    gripper_pad_geoms,
)
from refine_dp_jax.robots.scenes import (
    add_door,
    add_free_box,
    add_goal_marker,
    add_pairs,
    add_platform,
    add_shelf,
    add_table,
    robot_scene,
)
from refine_dp_jax.robots.spatial import rot2d, wrap_angle

if TYPE_CHECKING:  # pragma: no cover
    from refine_dp_jax.envs.humanoid import Features, HumanoidEnv, TaskState

FINGER_FRICTION = 1.5  # pads are rubber-like (estimate)
GRIP_CONDIM, GRIP_TORSION = 4, 0.02  # one pad per finger: torsional friction keeps the grip
OBJECT_FRICTION = 0.8  # object on a table/shelf (estimate)


@dataclass(frozen=True)
class TaskSpec:
    """What distinguishes one humanoid task from another."""

    name: str  # registered environment name
    defaults: tuple[tuple[str, Any], ...]  # HumanoidConfig field defaults of this task
    build_scene: Callable[[HumanoidConfig, HumanoidParams, PhysicsOptions], mujoco.MjSpec]
    object_site: str  # site of the task object (its pose is in the DP observation)
    object_joint: str | None  # free joint of the task object (None: no free object)
    place: Callable[..., tuple]  # (env, key, qpos) -> (qpos, goal [3])
    condition: Callable[..., jax.Array]  # (env, Features, TaskState) -> [] bool, instantaneous
    dropped: Callable[..., jax.Array]  # (env, Features) -> [] bool: the object is lost
    expert: Callable[..., jax.Array]  # (env, EnvState, Features) -> [Dc] command
    # the condition's named parts, whose conjunction it is (diagnostics: which part an episode
    # that ran out of time missed; experiments/outcomes.py); None: the condition alone
    condition_parts: Callable[..., dict] | None = None
    # robot start ranges centre, and the heading the robot should have working there
    anchor: Callable[[HumanoidConfig], tuple[float, float]] = lambda c: (0.0, 0.0)
    approach_yaw: float = 0.0
    hold_seconds: Callable[[HumanoidConfig], float] = lambda c: 0.0  # condition must hold
    # ground height (m) at a world (x, y): the footstep command carries it (None: flat)
    terrain: Callable[[HumanoidConfig, jax.Array], jax.Array] | None = None
    walks: bool = True  # False: the stage planner's base velocity is always 0
    # a standing task: the command's base velocity is ignored (held at 0), so that the DP's
    # exploration cannot make a standing LLC step
    stands: bool = False


# -- shared planner pieces ------------------------------------------------------------------
def walk_to(f: Features, target_xy: jax.Array, target_yaw: jax.Array | float,
            cfg: HumanoidConfig, speed: float = 0.5) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    """Body-frame (vx, vy, yaw rate) driving the pelvis to ``target_xy`` facing ``target_yaw``:
    far away turn toward the target and walk forward, close by side-step and align.
    Returns (velocity [3], distance [])."""
    err_w = target_xy - f.base_pos[:2]
    dist = jnp.linalg.norm(err_w)
    err_b = rot2d(f.yaw).T @ err_w
    bearing = jnp.arctan2(err_b[1], err_b[0])
    far = dist > 0.6
    yaw_err = jnp.where(far, bearing, wrap_angle(target_yaw - f.yaw))
    v = 1.5 * err_b
    v = v * jnp.minimum(1.0, speed / jnp.maximum(jnp.linalg.norm(v), 1e-6))
    v = v * jnp.where(far, jnp.clip(1.0 - jnp.abs(bearing) / 0.8, 0.0, 1.0), 1.0)
    # into the command range by shrinking the planar velocity as a whole (a per-axis clip
    # would turn a side-step of 0.5 m/s at 30 degrees into a different direction)
    lo = jnp.array([cfg.vx_range[0], cfg.vy_range[0], cfg.yaw_rate_range[0]])
    hi = jnp.array([cfg.vx_range[1], cfg.vy_range[1], cfg.yaw_rate_range[1]])
    bound = jnp.where(v >= 0.0, hi[:2], -lo[:2])  # [2] room on the side each entry points to
    v = v * jnp.minimum(1.0, jnp.min(bound / jnp.maximum(jnp.abs(v), 1e-9)))
    wz = jnp.clip(2.0 * yaw_err, *cfg.yaw_rate_range)
    vel = jnp.clip(jnp.concatenate([v, wz[None]]), lo, hi)
    settled = (dist < 0.04) & (jnp.abs(wrap_angle(target_yaw - f.yaw)) < 0.08)
    return jnp.where(settled, 0.0, vel), dist


def rate_limit(prev: jax.Array, target: jax.Array, max_step: float) -> jax.Array:
    """Moves ``prev`` toward ``target`` by at most ``max_step`` (Euclidean)."""
    d = target - prev
    return prev + d * jnp.minimum(1.0, max_step / jnp.maximum(jnp.linalg.norm(d), 1e-6))


def compose(vel, left, right, grip) -> jax.Array:
    """[17] command from velocity [3], hand poses [6] each and grippers [2]."""
    return jnp.concatenate([vel, left, right, grip])


def _pose(pos, rot=(0.0, 0.0, 0.0)):
    return jnp.concatenate([pos, jnp.asarray(rot, jnp.float32)])


STANDING_REACH_X = 0.38  # m ahead of the pelvis: hand targets of the standing tasks stop here
SERVO_GAIN = 0.5  # share of the hand's remaining position error added to the command per call
SERVO_REACH = 0.06  # m, largest offset of the command from the planned hand position (per axis)


def servo(goal: jax.Array, prev: jax.Array, hand: jax.Array) -> jax.Array:
    """A hand position command that brings the measured hand onto ``goal`` despite a steady
    tracking offset of the LLC (integral action on the planner's side: measured, a trained
    LLC left the hands 4-5 cm outside a box they were to squeeze): the previous command's
    offset from the goal plus ``SERVO_GAIN`` x the hand's remaining error, within
    +-``SERVO_REACH`` per axis (no wind-up when the goal jumps or a contact stops the hand)."""
    return goal + jnp.clip(prev - goal + SERVO_GAIN * (goal - hand), -SERVO_REACH, SERVO_REACH)


def finish(env: HumanoidEnv, state, cmd: jax.Array, f: Features | None = None) -> jax.Array:
    """Rate-limits the hand targets (5 cm per call relative to the previous command, so that
    a tracking offset cannot stall the plan) and clips to the command range. With the
    features ``f``, hand positions are servoed onto the planned ones first (``servo``)."""
    prev = state.command
    if f is not None:
        for side, s in ((0, 3), (1, 9)):
            cmd = cmd.at[s : s + 3].set(servo(cmd[s : s + 3], prev[s : s + 3],
                                              f.hand_pose_b[side, :3]))  # fmt: skip
    for s in (3, 9):
        cmd = cmd.at[s : s + 3].set(rate_limit(prev[s : s + 3], cmd[s : s + 3], 0.05))
        cmd = cmd.at[s + 3 : s + 6].set(rate_limit(prev[s + 3 : s + 6], cmd[s + 3 : s + 6], 0.25))
    return jnp.clip(cmd, env.command_low, env.command_high)


def grasp_plan(env: HumanoidEnv, f: Features, obj_b: jax.Array, prev_grip: jax.Array,
               stand_xy, stand_yaw, lift: float):  # fmt: skip
    """Right-hand pick of a block at ``obj_b`` (body frame): walk to the stand pose, bring the
    open gripper behind the block to within 2.5 cm of its line, slide forward around it,
    close, lift by ``lift``.

    Returns (velocity [3], right hand pose [6], right gripper [], holding [] bool).
    """
    c = env.cfg
    vel, _ = walk_to(f, stand_xy, stand_yaw, c)
    at_stand = jnp.all(vel == 0.0)
    # the block is pushed against the inner (fixed) jaw: aim the hand centre a bit outward
    grasp = obj_b + jnp.array([0.0, -0.012, 0.0])
    pre = grasp + jnp.array([-0.10, 0.0, 0.0])
    hand_now = f.hand_pose_b[1, :3]
    # holding: closed on something (the finger stopped short of the jaw by the block) near
    # the hand; a block that slides a few cm in the closed gripper is still held
    in_gripper = jnp.linalg.norm(f.hand_pos[1] - f.obj_pos) < 0.08
    holding = in_gripper & (prev_grip > 0) & (f.grip[1] > c.object_half[1])
    behind = hand_now[0] < obj_b[0] - 0.06
    aligned = jnp.linalg.norm(hand_now[1:] - pre[1:]) < 0.025
    target = jnp.where(behind & ~aligned, pre, grasp)
    close = jnp.linalg.norm(hand_now - grasp) < 0.02
    target = jnp.where(holding, grasp + jnp.array([0.0, 0.0, lift]), target)
    target = jnp.where(at_stand | holding, target, env.ready_hands[1, :3])
    grip = jnp.where(holding | close, 1.0, -1.0)
    vel = jnp.where(holding, 0.0, vel)
    return vel, _pose(target), grip, holding


# -- box pickup -----------------------------------------------------------------------------
def _box_rest_z(c: HumanoidConfig):
    """Height of the box's centre resting flat on the table."""
    return c.table_height + c.box_half[2]


def _box_scene(c: HumanoidConfig, p: HumanoidParams, o: PhysicsOptions) -> mujoco.MjSpec:
    spec = robot_scene("humanoid_box_pickup", p, o)
    top = add_table(spec, "table", (0.15, 0.0), (0.3, 0.45), c.table_height)
    corners = add_free_box(spec, "box", c.box_half, c.box_mass, (0, 0, _box_rest_z(c)))
    add_pairs(spec, corners, [top], OBJECT_FRICTION)
    # bimanual squeeze: the fixed (inner) jaws of both grippers press on the box's sides
    jaws = gripper_pad_geoms(p, "left", ("jaw",)) + gripper_pad_geoms(p, "right", ("jaw",))
    add_pairs(spec, jaws, ["box_geom"], FINGER_FRICTION, GRIP_CONDIM, GRIP_TORSION)
    return spec


def _place_on_table(env: HumanoidEnv, key, qpos, half, table_xy=(0.0, 0.0)):
    c = env.cfg
    k1, k2 = jax.random.split(key)
    xy = (
        jnp.asarray(table_xy)
        + jax.random.uniform(k1, (2,), minval=-1.0, maxval=1.0) * c.object_jitter
    )
    yaw = jax.random.uniform(k2, minval=-0.2, maxval=0.2)
    a = env.obj_qadr
    z = c.table_height + half[2]
    qpos = qpos.at[a : a + 3].set(jnp.array([xy[0], xy[1], z]))
    qpos = qpos.at[a + 3 : a + 7].set(jnp.array([jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)]))
    return qpos


def _box_place(env, key, qpos):
    c = env.cfg
    qpos = _place_on_table(env, key, qpos, c.box_half)
    goal = qpos[env.obj_qadr : env.obj_qadr + 3] + jnp.array([0.0, 0.0, c.lift_height])
    return qpos, goal


def _box_condition(env, f: Features, task: TaskState):
    """Box at least ``lift_height`` above its resting height on the table."""
    c = env.cfg
    return f.obj_pos[2] >= _box_rest_z(c) + c.lift_height


def _box_dropped(env, f: Features):
    return f.obj_pos[2] < env.cfg.table_height - 0.3


def _box_expert(env, state, f: Features, standing: bool = False, rot=(0.0, 0.0, 0.0)):
    """Walk to 0.4 m behind the box (``standing``: the robot is already in reach and does not
    walk); open the arms to either side of it; squeeze it between the two fixed jaws; lift it
    while both jaws touch it. The gripper command remembers the squeeze (-1 before, +1 from
    the squeeze on: the fingers do not touch the box), so that a servoed hand command
    (``finish``) cannot make the plan forget it. Standing, the hand targets are fixed where
    the box was put (``TaskState.obj_start``): targets that follow the box
    would follow it wherever the jaws push it (measured: it was squeezed sideways off the
    robot's reach) and raise themselves with it."""
    c = env.cfg
    obj_b = f.obj_b
    if standing:
        obj_b = _to_heading(f, state.task.obj_start)
    prev = state.command
    stand = f.obj_pos[:2] + jnp.array([-0.40, 0.0])
    vel, _ = walk_to(f, stand, 0.0, c)
    vel = jnp.zeros(3) if standing else vel
    at_stand = jnp.all(vel == 0.0)
    tl, tr, squeeze, gripped = _squeeze(env, f, prev, obj_b, standing, at_stand)
    # standing: the box hangs ~8 cm below the jaws (it pivots about the two pad contacts)
    lift = jnp.where(gripped, c.lift_height + (0.12 if standing else 0.08), 0.0)
    tl, tr = tl + lift * UP, tr + lift * UP
    tl = jnp.where(at_stand | squeeze, tl, env.ready_hands[0, :3])
    tr = jnp.where(at_stand | squeeze, tr, env.ready_hands[1, :3])
    if standing:  # a box beyond the arms' reach is not chased (the robot would fall)
        tl, tr = tl.at[0].min(STANDING_REACH_X), tr.at[0].min(STANDING_REACH_X)
    vel = jnp.where(squeeze, 0.0, vel)
    grip = jnp.where(squeeze, 1.0, -1.0) * jnp.ones(2)
    cmd = compose(vel, _pose(tl, rot), _pose(tr, rot), grip)
    return finish(env, state, cmd, f if standing else None)


UP, SIDE = jnp.array([0.0, 0.0, 1.0]), jnp.array([0.0, 1.0, 0.0])


def _to_heading(f: Features, p: jax.Array) -> jax.Array:
    """World point [3] -> heading frame relative to the pelvis."""
    xy = rot2d(f.yaw).T @ (p[:2] - f.base_pos[:2])
    return jnp.concatenate([xy, (p[2] - f.base_pos[2])[None]])


def _jaw_line(env) -> float:
    """m from the box's centre line to a hand's centre line when its jaw touches the box."""
    return env.cfg.box_half[1] + env.params.jaw_offset


SQUEEZE_DEPTH = 0.04  # m, standing squeeze: the jaws' targets this far inside the box's sides


def _squeeze(env, f: Features, prev, box_b, standing: bool, at_stand=True):
    """Hand targets [3] each (heading frame) of a bimanual squeeze of the box ``box_b``
    (heading frame; fixed where the box was put when ``standing``): first beside it, 6 cm out
    from its sides, then 4 cm (walking: 2 cm) inside them. Returns (left, right, squeeze,
    gripped): squeeze is remembered by the left gripper command (+1 from the squeeze on: the
    fingers do not touch the box), gripped = squeezing with both jaws on the box's sides or
    the box off the table."""
    c = env.cfg
    hy = _jaw_line(env)
    pre_l, pre_r = box_b + (hy + 0.06) * SIDE, box_b - (hy + 0.06) * SIDE
    hands = f.hand_pose_b[:, :3]
    if standing:  # a hand not yet beside the box goes sideways behind it first (measured: a
        # hand swept forward from between the box and the robot pushed the box out of reach)
        back = box_b[0] - c.box_half[0] - 0.06
        hands_y = hands[:, 1] - box_b[1]
        beside = jnp.stack([hands_y[0] > hy + 0.03, hands_y[1] < -(hy + 0.03)])
        pre_l = jnp.where(beside[0], pre_l, pre_l.at[0].min(back))
        pre_r = jnp.where(beside[1], pre_r, pre_r.at[0].min(back))
    depth = SQUEEZE_DEPTH if standing else 0.02  # targets this far inside the box's sides
    sq_l, sq_r = box_b + (hy - depth) * SIDE, box_b - (hy - depth) * SIDE
    near = lambda a, b, tol: jnp.linalg.norm(a[:2] - b[:2]) < tol
    at_pre = near(hands[0], pre_l, 0.03) & near(hands[1], pre_r, 0.03)
    if standing:  # or, short of a far box's line (the arms' reach), beside it: sideways
        # within 3 cm of the pre-grasp line and 5 cm or more past its near face
        lateral = jnp.abs(hands[:, 1] - jnp.stack([pre_l[1], pre_r[1]])) < 0.03
        past = hands[:, 0] > box_b[0] - c.box_half[0] + 0.05
        at_pre = at_pre | jnp.all(lateral & past)
    squeeze = (prev[15] > 0) | (at_stand & at_pre)
    # held: both jaws on the box's sides (the hands stop at the box, short of the squeeze
    # targets), or the box already off the table (nothing else holds it up)
    box = f.obj_b
    on_sides = near(hands[0], box + hy * SIDE, 0.04) & near(hands[1], box - hy * SIDE, 0.04)
    off_table = f.obj_pos[2] > _box_rest_z(c) + 0.02
    gripped = (prev[15] > 0) & (on_sides | off_table)
    tl = jnp.where(squeeze, sq_l, pre_l)
    tr = jnp.where(squeeze, sq_r, pre_r)
    return tl, tr, squeeze, gripped


# -- long pick and place ----------------------------------------------------------------------
def _pp_scene(c: HumanoidConfig, p: HumanoidParams, o: PhysicsOptions) -> mujoco.MjSpec:
    spec = robot_scene("humanoid_pick_place", p, o)
    top_a = add_table(spec, "table_a", (0.15, 0.0), (0.3, 0.4), c.table_height)
    top_b = add_table(spec, "table_b", (0.15, c.place_distance), (0.3, 0.4), c.table_height)
    add_goal_marker(spec, c.goal_radius, (0.0, c.place_distance, c.table_height + 0.002))
    corners = add_free_box(
        spec,
        "object",
        c.object_half,
        c.object_mass,
        (0, 0, c.table_height + c.object_half[2]),
        rgba=(0.2, 0.4, 0.9, 1),
    )
    add_pairs(spec, corners, [top_a, top_b], OBJECT_FRICTION)
    add_pairs(spec, gripper_pad_geoms(p, "right"), ["object_geom"], FINGER_FRICTION, GRIP_CONDIM,
              GRIP_TORSION)  # fmt: skip
    return spec


def _pp_place(env, key, qpos):
    c = env.cfg
    qpos = _place_on_table(env, key, qpos, c.object_half)
    goal = jnp.array([0.0, c.place_distance, c.table_height + c.object_half[2]])
    return qpos, goal


def _released(env, f: Features):
    """The right gripper is open wider than the block and not around it."""
    c = env.cfg
    opening_ok = f.grip[1] > 2 * c.object_half[1] + 0.01
    return opening_ok | (jnp.linalg.norm(f.hand_pos[1] - f.obj_pos) > 0.10)


def _rest_in_disc_parts(env, f: Features, task: TaskState) -> dict:
    """Object inside the goal disc, resting on the table (the goal's height), still."""
    return {
        "in_disc": jnp.linalg.norm(f.obj_pos[:2] - task.goal[:2]) < env.cfg.goal_radius,
        "resting": jnp.abs(f.obj_pos[2] - task.goal[2]) < 0.02,
        "still": jnp.linalg.norm(f.obj_vel) < 0.1,
    }


def _all(parts: dict) -> jax.Array:
    return functools.reduce(jnp.logical_and, parts.values())


def _at_rest_in_disc(env, f: Features, task: TaskState):
    return _all(_rest_in_disc_parts(env, f, task))


def _pp_condition(env, f: Features, task: TaskState):
    """Block inside the goal disc, resting on table B, at rest, released."""
    return _at_rest_in_disc(env, f, task) & _released(env, f)


def _on_table_dropped(env, f: Features):
    return f.obj_pos[2] < env.cfg.table_height - 0.3


def _pp_expert(env, state, f: Features):
    c = env.cfg
    prev = state.command
    stand_a = f.obj_pos[:2] + jnp.array([-0.42, 0.17])
    v_pick, hand_pick, grip_pick, holding = grasp_plan(env, f, f.obj_b, prev[16], stand_a, 0.0,
                                                       0.10)  # fmt: skip
    goal = state.task.goal
    lifted = f.obj_pos[2] > c.table_height + c.object_half[2] + 0.06
    stand_b = goal[:2] + jnp.array([-0.42, 0.17])
    v_carry, dist_b = walk_to(f, stand_b, 0.0, c)
    at_b = jnp.all(v_carry == 0.0)
    goal_b = rot2d(f.yaw).T @ (goal[:2] - f.base_pos[:2])
    carry_hand = jnp.array([0.32, -0.17, c.table_height + c.object_half[2] + 0.12 - f.base_pos[2]])
    place_hand = jnp.concatenate([goal_b + jnp.array([0.0, -0.012]),
                                  (goal[2] + 0.01 - f.base_pos[2])[None]])  # fmt: skip
    down = f.obj_pos[2] < goal[2] + 0.015
    over_goal = jnp.linalg.norm(f.obj_pos[:2] - goal[:2]) < 0.6 * c.goal_radius
    hand_carry = jnp.where(at_b, place_hand, carry_hand)
    grip_carry = jnp.where(at_b & down & over_goal, -1.0, 1.0)
    v_carry = jnp.where(lifted | ~holding, v_carry, 0.0)
    carrying = holding & (lifted | (dist_b < 1.0))
    vel = jnp.where(carrying, v_carry, v_pick)
    hand = jnp.where(carrying, _pose(hand_carry), hand_pick)
    grip = jnp.where(carrying, grip_carry, grip_pick)
    placed = jnp.linalg.norm(f.obj_pos[:2] - goal[:2]) < c.goal_radius
    done = placed & ~holding
    vel = jnp.where(done, 0.0, vel)
    hand = jnp.where(done, env.ready_hands[1], hand)
    grip = jnp.where(done, -1.0, grip)
    cmd = compose(vel, env.ready_hands[0], hand, jnp.stack([-1.0, grip]))
    return finish(env, state, cmd)


# -- door -------------------------------------------------------------------------------------
def _door_scene(c: HumanoidConfig, p: HumanoidParams, o: PhysicsOptions) -> mujoco.MjSpec:
    spec = robot_scene("humanoid_door", p, o)
    panel, handle, solid = add_door(spec, c.door_width, c.door_height, c.door_damping,
                                    c.handle_height, c.door_mass)  # fmt: skip
    add_pairs(spec, gripper_pad_geoms(p, "right"), [handle], FINGER_FRICTION, GRIP_CONDIM,
              GRIP_TORSION)  # fmt: skip
    body = ["chest", "pelvis_geom", "left_palm", "right_palm"]
    add_pairs(spec, body, [panel], 0.5)  # pushing the panel, or bumping into it
    add_pairs(spec, body, solid, 0.5)  # the frame and the walls stop the robot
    return spec


def _door_place(env, key, qpos):
    c = env.cfg
    return qpos, jnp.array([c.pass_distance + 0.3, 0.0, 0.0])


def _door_condition(env, f: Features, task: TaskState):
    """Door open by more than ``door_open_angle``, torso at least ``pass_distance`` past the
    door plane within the doorway, upright."""
    c = env.cfg
    opened = f.door_angle > c.door_open_angle
    past = f.base_pos[0] >= c.pass_distance
    inside = jnp.abs(f.base_pos[1]) < c.door_width / 2 + 0.15
    upright = f.gravity[2] < -0.9
    return opened & past & inside & upright


def _never(env, f):
    return jnp.zeros((), bool)


def _door_expert(env, state, f: Features):
    c = env.cfg
    prev = state.command
    handle = f.obj_pos
    stand = jnp.array([handle[0] - 0.45, handle[1] + 0.17])
    vel, _ = walk_to(f, stand, 0.0, c)
    at_stand = jnp.all(vel == 0.0)
    roll = jnp.array([1.5708, 0.0, 0.0])  # jaws above and below the horizontal lever
    h_b = f.obj_b
    pre = h_b + jnp.array([-0.10, 0.0, 0.0])
    hand_now = f.hand_pose_b[1, :3]
    near_handle = jnp.linalg.norm(f.hand_pos[1] - handle) < 0.04
    holding = near_handle & (prev[16] > 0)
    behind = hand_now[0] < h_b[0] - 0.06
    aligned = jnp.linalg.norm(hand_now[1:] - pre[1:]) < 0.025
    reach = jnp.where(behind & ~aligned, pre, h_b)
    grip = jnp.where(holding | (jnp.linalg.norm(hand_now - h_b) < 0.02), 1.0, -1.0)
    # holding: press the lever down until the latch lets go, then push it forward and follow
    press = h_b + jnp.array([0.0, 0.0, -0.05])
    push = jnp.where(state.task.latched > 0.5, press, h_b + jnp.array([0.12, 0.0, 0.0]))
    opened = f.door_angle > env.cfg.door_open_angle + 0.1
    through = jnp.array([c.pass_distance + 0.4, 0.0])
    v_through, _ = walk_to(f, through, 0.0, c, speed=0.4)
    hand = jnp.where(holding, push, jnp.where(at_stand, reach, env.ready_hands[1, :3]))
    pushing = holding & (state.task.latched < 0.5)
    vel = jnp.where(pushing, jnp.array([0.15, 0.0, 0.0]), jnp.where(at_stand | holding, 0.0, vel))
    rot = jnp.where(at_stand | holding, roll, env.ready_hands[1, 3:])
    right = jnp.concatenate([hand, rot])
    right = jnp.where(opened, env.ready_hands[1], right)
    grip = jnp.where(opened, -1.0, grip)
    vel = jnp.where(opened, v_through, vel)
    cmd = compose(vel, env.ready_hands[0], right, jnp.stack([-1.0, grip]))
    return finish(env, state, cmd)


# -- platform step-up and shelf retrieval -----------------------------------------------------
def _shelf_xy(c: HumanoidConfig) -> tuple[float, float]:
    return c.platform_front + 2 * c.platform_half[0] - 0.2, 0.0


def _platform_scene(c: HumanoidConfig, p: HumanoidParams, o: PhysicsOptions) -> mujoco.MjSpec:
    spec = robot_scene("humanoid_platform", p, o)
    plat = add_platform(spec, c.platform_front, c.platform_half, c.platform_height)
    feet = foot_contact_geoms(p, "left") + foot_contact_geoms(p, "right")
    add_pairs(spec, feet, [plat], o.floor_friction)
    sx, sy = _shelf_xy(c)
    top = c.platform_height + c.shelf_height
    board = add_shelf(spec, (sx, sy), (0.15, 0.3), top, base=c.platform_height)
    corners = add_free_box(spec, "object", c.object_half, c.object_mass,
                           (sx, sy, top + c.object_half[2]), rgba=(0.2, 0.4, 0.9, 1))  # fmt: skip
    add_pairs(spec, corners, [board], OBJECT_FRICTION)
    add_pairs(spec, gripper_pad_geoms(p, "right"), ["object_geom"], FINGER_FRICTION, GRIP_CONDIM,
              GRIP_TORSION)  # fmt: skip
    return spec


def _platform_place(env, key, qpos):
    c = env.cfg
    sx, sy = _shelf_xy(c)
    k1, k2 = jax.random.split(key)
    xy = (
        jnp.array([sx - 0.05, sy])
        + jax.random.uniform(k1, (2,), minval=-1.0, maxval=1.0) * c.object_jitter
    )
    a = env.obj_qadr
    z = c.platform_height + c.shelf_height + c.object_half[2]
    yaw = jax.random.uniform(k2, minval=-0.2, maxval=0.2)
    qpos = qpos.at[a : a + 3].set(jnp.array([xy[0], xy[1], z]))
    qpos = qpos.at[a + 3 : a + 7].set(jnp.array([jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)]))
    goal = jnp.array([c.platform_front + c.platform_half[0], 0.0, c.platform_height])
    return qpos, goal


def _platform_terrain(c: HumanoidConfig, xy: jax.Array) -> jax.Array:
    """The platform's top inside its footprint, the floor elsewhere."""
    x0, x1 = c.platform_front, c.platform_front + 2 * c.platform_half[0]
    inside = (xy[0] >= x0) & (xy[0] <= x1) & (jnp.abs(xy[1]) <= c.platform_half[1])
    return jnp.where(inside, c.platform_height, 0.0)


def on_platform(c: HumanoidConfig, sole_pos: jax.Array) -> jax.Array:
    """[] bool: both soles [2, 3] inside the platform's footprint and on its top."""
    x0, x1 = c.platform_front, c.platform_front + 2 * c.platform_half[0]
    inside = (sole_pos[:, 0] > x0 + 0.02) & (sole_pos[:, 0] < x1 - 0.02)
    inside = inside & (jnp.abs(sole_pos[:, 1]) < c.platform_half[1] - 0.02)
    up = sole_pos[:, 2] > c.platform_height - 0.02
    return jnp.all(inside & up)


def _platform_condition(env, f: Features, task: TaskState):
    """Both feet on the platform and the object lifted off the shelf, in the right gripper."""
    c = env.cfg
    shelf_top = c.platform_height + c.shelf_height
    lifted = f.obj_pos[2] >= shelf_top + c.object_half[2] + c.retrieve_height
    in_hand = jnp.linalg.norm(f.hand_pos[1] - f.obj_pos) < 0.1
    return on_platform(c, f.sole_pos) & lifted & in_hand


def _platform_dropped(env, f: Features):
    c = env.cfg
    return f.obj_pos[2] < c.platform_height + c.shelf_height - 0.3


def _platform_expert(env, state, f: Features):
    c = env.cfg
    prev = state.command
    up = on_platform(c, f.sole_pos)
    # off the platform: line up in front of it, then walk straight up onto it
    edge = jnp.array([c.platform_front - 0.30, 0.0])
    v_line, _ = walk_to(f, edge, 0.0, c)
    lined = (
        (jnp.abs(f.base_pos[1]) < 0.1)
        & (jnp.abs(f.yaw) < 0.15)
        & (f.base_pos[0] > c.platform_front - 0.45)
    )
    v_up = jnp.array([0.25, -0.5 * f.base_pos[1], -1.0 * f.yaw])
    v_off = jnp.where(lined, v_up, v_line)
    stand = f.obj_pos[:2] + jnp.array([-0.42, 0.17])
    v_pick, hand_pick, grip_pick, holding = grasp_plan(env, f, f.obj_b, prev[16], stand, 0.0, 0.10)
    vel = jnp.where(up, v_pick, v_off)
    right = jnp.where(up, hand_pick, env.ready_hands[1])
    grip = jnp.where(up, grip_pick, -1.0)
    cmd = compose(vel, env.ready_hands[0], right, jnp.stack([-1.0, grip]))
    return finish(env, state, cmd)


# -- standing tasks at a table (no walking) --------------------------------------------------
# The robot starts in front of the table, within reach; the DP's base velocity is held at 0.
# The arm's reach (measured: multi-start IK of the right arm, pelvis frame, waist at 0) ends
# near x = 0.40 m at the table's height, and a hand held level (identity orientation) falls
# 3 cm short at x = 0.30 m, z = 0; pitched 0.5 rad down it reaches. So the standing tasks
# put the robot 0.28-0.34 m from the object, the table 5 cm higher than the walking tasks'
# (its top 3 cm below the pelvis), and grasp with the hand pitched down.
TABLE_CENTRE = (0.15, 0.0)  # x, y of the table top centre; objects sit around x = 0
# The hands start wide of the box (the default arm pose holds them 0.26 m ahead of the pelvis,
# 0.18 m to the side, at its height: the grippers inside the box, whose contacts then kicked
# and tipped it at the first step, measured on table_lift), the arms not randomized. Hands
# tucked further back (0.12, 0.24, 0.0) lifted more (planner 94 % vs 83 %), but with the
# arms swung back the robot fell backwards under its PD servos alone within 2.3 s.
STANDING_START = (("start_angle", 0.15), ("start_heading", 0.15), ("object_jitter", 0.03),
                  ("table_height", 0.75), ("start_hands", (0.22, 0.26, 0.03)),
                  ("arm_randomization_prob", 0.0))  # fmt: skip
GRASP_ROT = (0.0, 0.5, 0.0)  # rotation vector of a standing grasp: pitched 0.5 rad down


def _table_lift_scene(c: HumanoidConfig, p: HumanoidParams, o: PhysicsOptions) -> mujoco.MjSpec:
    spec = robot_scene("humanoid_table_lift", p, o)
    top = add_table(spec, "table", TABLE_CENTRE, (0.3, 0.45), c.table_height)
    corners = add_free_box(spec, "box", c.box_half, c.box_mass, (0, 0, _box_rest_z(c)))
    add_pairs(spec, corners, [top], OBJECT_FRICTION)
    jaws = gripper_pad_geoms(p, "left", ("jaw",)) + gripper_pad_geoms(p, "right", ("jaw",))
    add_pairs(spec, jaws, ["box_geom"], FINGER_FRICTION, GRIP_CONDIM, GRIP_TORSION)
    return spec


def _table_lift_expert(env, state, f: Features):
    """The box pickup's squeeze-and-lift without the walk: base velocity 0."""
    return _box_expert(env, state, f, standing=True, rot=GRASP_ROT)


def _table_place_scene(c: HumanoidConfig, p: HumanoidParams, o: PhysicsOptions) -> mujoco.MjSpec:
    """The table-lift scene (a box squeezed between the two jaws) with a goal disc
    ``place_offset`` to the right of where the box starts."""
    spec = _table_lift_scene(c, p, o)
    add_goal_marker(spec, c.goal_radius, (0.0, -c.place_offset, c.table_height + 0.002))
    return spec


def _table_place_place(env, key, qpos):
    c = env.cfg
    qpos = _place_on_table(env, key, qpos, c.box_half)
    goal = jnp.array([0.0, -c.place_offset, _box_rest_z(c)])
    return qpos, goal


def _box_released(env, f: Features):
    """Neither jaw within 2 cm of the box's side planes (sideways, heading frame)."""
    hy = _jaw_line(env)
    lateral = jnp.abs(f.hand_pose_b[:, 1] - f.obj_b[1])
    return jnp.all(lateral > hy + 0.02)


def _table_place_parts(env, f: Features, task: TaskState) -> dict:
    """Box inside the goal disc, resting on the table, still, both jaws off it."""
    return {**_rest_in_disc_parts(env, f, task), "released": _box_released(env, f)}


def _table_place_condition(env, f: Features, task: TaskState):
    return _all(_table_place_parts(env, f, task))


RAISE = 0.08  # m, table place: hands raised this much above the squeeze to carry the box


def _table_place_expert(env, state, f: Features):
    """Bimanual pick and place, base velocity 0: squeeze the box where it was put (as the
    table lift), raise it, carry it sideways over the disc, lower it, open the arms wide of it.
    The left gripper command remembers the squeeze, the right one the release (+1 from the
    release on). The carry targets are fixed by the goal, the squeeze targets by the box's
    start (targets that follow a pushed box run away with it)."""
    c = env.cfg
    prev = state.command
    start_b = _to_heading(f, state.task.obj_start)
    goal_b = _to_heading(f, state.task.goal)
    tl, tr, squeeze, gripped = _squeeze(env, f, prev, start_b, standing=True)
    carry = (goal_b - start_b) * jnp.array([1.0, 1.0, 0.0])  # sideways, at the start height
    # memory of the carry: the previous hand commands' midpoint past halfway to the goal (a
    # servo offset is at most 6 cm; a box dropped on the way is not dragged back to its start)
    mid = 0.5 * (prev[3:5] + prev[9:11]) - 0.5 * (tl[:2] + tr[:2])
    carried = squeeze & (jnp.dot(mid, carry[:2]) > 0.5 * jnp.dot(carry[:2], carry[:2]))
    rest_z = _box_rest_z(c)
    raised = f.obj_pos[2] > rest_z + 0.02
    # over the disc: within 7 cm of its centre (5 cm left boxes hanging 4-11 cm off it raised)
    over = jnp.linalg.norm(f.obj_pos[:2] - state.task.goal[:2]) < 0.7 * c.goal_radius
    # raise in place, carry raised (the box hangs below the jaws), lower over the disc (3 cm
    # below the squeeze height: a box hanging tilted comes down flat)
    lift = jnp.where(over, -0.03, RAISE)
    shift = jnp.where(raised | over | carried, carry, 0.0)
    moved = jnp.where(gripped | carried, shift + lift * UP, 0.0)
    tl, tr = tl + moved, tr + moved
    lowered = jnp.all(f.hand_pose_b[:, 2] < jnp.stack([tl[2], tr[2]]) + 0.03)
    # the box rests on the table (jaws still on it), flat or on an edge (a tilted box held
    # 2-6 cm up kept the hands from coming down: 6 of 128 traced episodes never released)
    down = f.obj_pos[2] < rest_z + 0.03
    released = (prev[16] > 0) | (squeeze & over & (lowered | down))
    # released: both hands 10 cm out from the sides of a box on the goal, 4 cm up (fixed:
    # targets that follow the box pushed it off the table)
    hy = _jaw_line(env)
    out_l = goal_b + (hy + 0.10) * SIDE + 0.04 * UP
    out_r = goal_b - (hy + 0.10) * SIDE + 0.04 * UP
    tl = jnp.where(released, out_l, tl).at[0].min(STANDING_REACH_X)
    tr = jnp.where(released, out_r, tr).at[0].min(STANDING_REACH_X)
    grip = jnp.stack([jnp.where(squeeze, 1.0, -1.0), jnp.where(released, 1.0, -1.0)])
    cmd = compose(jnp.zeros(3), _pose(tl, GRASP_ROT), _pose(tr, GRASP_ROT), grip)
    return finish(env, state, cmd, f)


# -- robot only: the LLC environment shared by all tasks ---------------------------------------
def _llc_scene(c: HumanoidConfig, p: HumanoidParams, o: PhysicsOptions) -> mujoco.MjSpec:
    """Floor + robot, nothing else (the cheapest scene: LLC training). A site marks the
    origin (the DP observation's "object")."""
    spec = robot_scene("humanoid_llc", p, o)
    site = spec.worldbody.add_site()
    site.name = "origin"
    site.size = np.array([0.01, 0.01, 0.01])
    site.rgba = np.array([0.0, 0.0, 0.0, 0.0])
    return spec


def _llc_place(env, key, qpos):
    return qpos, jnp.zeros(3)


def _llc_expert(env, state, f: Features):
    """Stand still with the hands at the ready poses and the grippers open."""
    cmd = compose(jnp.zeros(3), env.ready_hands[0], env.ready_hands[1], -jnp.ones(2))
    return finish(env, state, cmd)


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec(
            name="humanoid_llc",
            defaults=(
                ("episode_seconds", 10.0),
                ("start_distance", (0.0, 0.0)),
                ("start_angle", 0.0),
                ("start_heading", 3.14159),
            ),
            build_scene=_llc_scene,
            object_site="origin",
            object_joint=None,
            place=_llc_place,
            condition=lambda env, f, task: jnp.zeros((), bool),
            dropped=_never,
            expert=_llc_expert,
            walks=False,
        ),
        TaskSpec(
            name="humanoid_table_lift",
            defaults=(
                ("episode_seconds", 10.0),
                ("start_distance", (0.30, 0.34)),
                # 0.5 kg: squeezed by two single-pad jaws the 1 kg box slipped and pivoted
                # down, and lifting it at arm's length tipped the standing robot over
                ("box_mass", 0.5),
                *STANDING_START,
            ),
            build_scene=_table_lift_scene,
            object_site="box",
            object_joint="box",
            place=_box_place,
            condition=_box_condition,
            hold_seconds=lambda c: c.lift_seconds,
            dropped=_box_dropped,
            expert=_table_lift_expert,
            walks=False,
            stands=True,
        ),
        TaskSpec(
            name="humanoid_table_place",
            defaults=(
                ("episode_seconds", 15.0),
                ("start_distance", (0.30, 0.34)),
                # a 20 x 20 x 16 cm box of 0.5 kg squeezed between the two jaws (the table
                # lift's grasp): a 4 x 4 x 9 cm block pinched in the right gripper tipped over
                # in 47 of 54 failed planner episodes (10 % success, docs/humanoid.md)
                ("box_half", (0.10, 0.10, 0.08)),
                ("box_mass", 0.5),
                ("place_offset", 0.20),
                *STANDING_START,
            ),
            build_scene=_table_place_scene,
            object_site="box",
            object_joint="box",
            # the robot faces the midpoint: box 10 cm left of the pelvis, disc 10 cm right
            anchor=lambda c: (0.0, -c.place_offset / 2),
            place=_table_place_place,
            condition=_table_place_condition,
            condition_parts=_table_place_parts,
            dropped=_box_dropped,
            expert=_table_place_expert,
            walks=False,
            stands=True,
        ),
        TaskSpec(
            name="humanoid_box_pickup",
            defaults=(("episode_seconds", 15.0),),
            build_scene=_box_scene,
            object_site="box",
            object_joint="box",
            place=_box_place,
            condition=_box_condition,
            hold_seconds=lambda c: c.lift_seconds,
            dropped=_box_dropped,
            expert=_box_expert,
        ),
        TaskSpec(
            name="humanoid_pick_place",
            defaults=(("episode_seconds", 40.0),),
            build_scene=_pp_scene,
            object_site="object",
            object_joint="object",
            place=_pp_place,
            condition=_pp_condition,
            dropped=_on_table_dropped,
            expert=_pp_expert,
        ),
        TaskSpec(
            name="humanoid_door",
            defaults=(
                ("episode_seconds", 20.0),
                ("start_distance", (0.9, 1.6)),
                ("start_angle", 0.4),
            ),
            build_scene=_door_scene,
            object_site="handle",
            object_joint=None,
            anchor=lambda c: (0.0, c.door_width / 2 - 0.12),
            place=_door_place,
            condition=_door_condition,
            dropped=_never,
            expert=_door_expert,
        ),
        TaskSpec(
            name="humanoid_platform",
            defaults=(("episode_seconds", 20.0), ("start_distance", (0.6, 1.2))),
            build_scene=_platform_scene,
            object_site="object",
            object_joint="object",
            anchor=lambda c: (c.platform_front, 0.0),
            place=_platform_place,
            condition=_platform_condition,
            dropped=_platform_dropped,
            expert=_platform_expert,
            terrain=_platform_terrain,
        ),
    )  # fmt: skip
}
