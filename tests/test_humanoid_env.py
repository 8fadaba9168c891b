"""Humanoid environments: success tests on constructed states, footstep planner, robot
numbers and kinematics, domain-randomization hooks, config errors.

Nothing here compiles a physics rollout: the jitted reset + 200-step rollout of every
humanoid task (no NaN, PD standing, contact layout, reset curriculum) lives in
tests/test_envs.py, the one test parameterized over every registered environment. States
here are built with MuJoCo on the CPU (``mj_forward``) and checked eagerly.
"""

import copy

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

from refine_dp_jax import envs
from refine_dp_jax.envs.humanoid import HumanoidEnv
from refine_dp_jax.errors import ConfigError
from refine_dp_jax.planners.footsteps import FootstepParams, feet_reference, plan
from refine_dp_jax.robots.humanoid import SIDES, HumanoidParams, arm_fk

HUMANOIDS = [
    "humanoid_box_pickup",
    "humanoid_pick_place",
    "humanoid_door",
    "humanoid_platform",
    "humanoid_table_lift",
    "humanoid_table_place",
    "humanoid_llc",
]


def test_every_humanoid_task_is_registered():
    assert set(HUMANOIDS) <= set(envs.names())
    env = envs.make("humanoid_door")
    assert (env.action_size, env.command_size) == (26, 17)
    assert (env.observation_size, env.privileged_observation_size) == (152, 180)
    assert env.dp_observation_size == 34 and abs(env.dt - 0.02) < 1e-9


# -- success tests on constructed states -----------------------------------------------------
def _state(env: HumanoidEnv, base=(0.0, 0.0), yaw=0.0, z_extra=0.0, obj=None, joints=None,
           door=None, forward_obj_at_hand=False):  # fmt: skip
    """mjx.Data built on the CPU: the robot standing at ``base`` (default pose), optional
    joint overrides {name: angle}, object position, door angle."""
    m = env.mj_model
    d = mujoco.MjData(m)
    qpos, _ = env.standing_state()
    qpos[:2] = base
    qpos[2] += z_extra
    qpos[3:7] = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
    for name, val in (joints or {}).items():
        qpos[m.joint(name).qposadr[0]] = val
    if door is not None:
        qpos[m.joint("door_hinge").qposadr[0]] = door
    d.qpos[:] = qpos
    mujoco.mj_forward(m, d)
    if forward_obj_at_hand:
        obj = d.site("right_grasp").xpos.copy()
    if obj is not None:
        a = env.obj_qadr
        d.qpos[a : a + 3] = obj
        mujoco.mj_forward(m, d)
    return mjx.put_data(m, d)


def _succ(env, data, task):
    return float(env.is_success(data, task))


def test_box_pickup_success():
    env = envs.make("humanoid_box_pickup")
    c = env.cfg
    rest = c.table_height + c.box_half[2]
    up = _state(env, base=(-0.45, 0.0), obj=(0.0, 0.0, rest + c.lift_height + 0.03))
    down = _state(env, base=(-0.45, 0.0), obj=(0.0, 0.0, rest))
    assert _succ(env, up, env.blank_task(hold=c.lift_seconds)) == 1.0
    assert _succ(env, up, env.blank_task(hold=0.5 * c.lift_seconds)) == 0.0  # not yet 1 s
    assert _succ(env, down, env.blank_task(hold=c.lift_seconds)) == 0.0


def test_table_lift_success():
    """The box pickup's test (lifted >= 10 cm for >= 1 s) with the robot at the table."""
    env = envs.make("humanoid_table_lift")
    c = env.cfg
    rest = c.table_height + c.box_half[2]
    up = _state(env, base=(-0.42, 0.0), obj=(0.0, 0.0, rest + c.lift_height + 0.01))
    low = _state(env, base=(-0.42, 0.0), obj=(0.0, 0.0, rest + c.lift_height - 0.01))
    assert _succ(env, up, env.blank_task(hold=c.lift_seconds)) == 1.0
    assert _succ(env, up, env.blank_task(hold=0.9 * c.lift_seconds)) == 0.0
    assert _succ(env, low, env.blank_task(hold=c.lift_seconds)) == 0.0


def test_table_place_success():
    """Released, resting in the goal disc on the table: a box squeezed between the two jaws
    and set down in the disc is not placed until neither jaw is within 2 cm of its sides."""
    env = envs.make("humanoid_table_place")
    c = env.cfg
    goal = (0.0, -c.place_offset, c.table_height + c.box_half[2])
    task = env.blank_task(goal=goal)
    # the default arm pose holds the hands 0.18 m either side of the pelvis: a pelvis in
    # line with the box leaves both jaws 4 cm clear of its sides (hy = 0.14 m)
    clear = (-0.4, goal[1])
    assert _succ(env, _state(env, base=clear, obj=goal), task) == 1.0
    start = (0.0, 0.0, goal[2])  # where it starts: outside the disc
    assert _succ(env, _state(env, base=clear, obj=start), task) == 0.0
    edge = (0.0, -c.place_offset + 1.2 * c.goal_radius, goal[2])
    assert _succ(env, _state(env, base=clear, obj=edge), task) == 0.0
    lifted = (0.0, -c.place_offset, goal[2] + 0.05)  # above the disc, not resting
    assert _succ(env, _state(env, base=clear, obj=lifted), task) == 0.0
    # the pelvis 5 cm to the side: one hand 1 cm inside the line where its jaw touches the box
    held = _state(env, base=(-0.4, goal[1] + 0.05), obj=goal)
    assert _succ(env, held, task) == 0.0


def test_standing_squeeze_starts_beside_a_box_beyond_the_arms_reach():
    """The standing planners squeeze a box whose line the hands cannot reach once both are
    beside it (within 3 cm of the pre-grasp line sideways, 5 cm or more past its near face);
    a hand still behind that face, or out wide, keeps them waiting (5 of the lift planner's 17
    time-outs in a traced draw of 128 episodes: hands 3-9 cm short of a far box)."""
    from refine_dp_jax.envs.humanoid_tasks import _jaw_line, _squeeze

    env = envs.make("humanoid_table_lift")
    c = env.cfg
    f = env.features(_state(env))
    box = jnp.array([0.40, 0.02, 0.0])  # heading frame: 40 cm ahead, beyond the reach
    pre_y = box[1] + (_jaw_line(env) + 0.06) * jnp.array([1.0, -1.0])
    prev = -jnp.ones(env.command_size)  # nothing squeezed yet

    def squeezes(x, y_out=0.0):
        hands = jnp.zeros((2, 6)).at[:, 0].set(x).at[:, 1].set(pre_y + y_out * jnp.array([1, -1]))
        return bool(_squeeze(env, f.replace(hand_pose_b=hands), prev, box, standing=True)[2])

    near_face = float(box[0]) - c.box_half[0]
    assert squeezes(near_face + 0.07)  # 13 cm short of the box's line: beside it
    assert squeezes(float(box[0]))  # at the pre-grasp targets
    assert not squeezes(near_face + 0.03)  # still behind the near face
    assert not squeezes(near_face + 0.07, y_out=0.05)  # beside it but 5 cm out wide
    inside = f.replace(hand_pose_b=jnp.zeros((2, 6)).at[:, 0].set(0.4))  # hands in the box
    assert not bool(_squeeze(env, inside, prev, box, standing=True)[2])


def test_llc_env_never_succeeds():
    env = envs.make("humanoid_llc")
    assert _succ(env, _state(env), env.blank_task()) == 0.0


def test_pick_place_success():
    env = envs.make("humanoid_pick_place")
    c = env.cfg
    goal = (0.0, c.place_distance, c.table_height + c.object_half[2])
    task = env.blank_task(goal=goal)
    placed = _state(env, base=(-0.6, c.place_distance + 0.4), obj=goal)
    on_a = _state(env, base=(-0.6, 0.4), obj=(0.0, 0.0, goal[2]))
    off = _state(
        env, base=(-0.6, c.place_distance + 0.4), obj=(0.0, c.place_distance + 0.3, goal[2])
    )
    assert _succ(env, placed, task) == 1.0
    assert _succ(env, on_a, task) == 0.0
    assert _succ(env, off, task) == 0.0  # on table B, outside the goal region
    # still gripped: hand at the object with the finger closed on it
    held = _state(env, joints={"right_finger": env.params.finger_stroke}, forward_obj_at_hand=True)
    a = env.obj_qadr
    assert _succ(env, held, env.blank_task(goal=np.asarray(held.qpos[a : a + 3]))) == 0.0


def test_door_success():
    env = envs.make("humanoid_door")
    task = env.blank_task()
    through = _state(env, base=(0.8, 0.0), door=1.2)
    before = _state(env, base=(-1.0, 0.0))
    beside = _state(env, base=(0.8, 1.5), door=0.0)  # walked around the door
    ajar = _state(env, base=(0.8, 0.0), door=0.6)  # squeezed through a door barely open
    assert _succ(env, ajar, task) == 0.0
    fallen = _state(env, base=(0.8, 0.0), yaw=0.0, door=1.2,
                    joints={})  # fmt: skip
    assert _succ(env, through, task) == 1.0
    assert _succ(env, before, task) == 0.0
    assert _succ(env, beside, task) == 0.0
    # tilt the pelvis by 40 degrees: not upright
    m = env.mj_model
    d = mujoco.MjData(m)
    d.qpos[:] = np.asarray(fallen.qpos)
    d.qpos[3:7] = [np.cos(0.35), 0.0, np.sin(0.35), 0.0]
    mujoco.mj_forward(m, d)
    assert _succ(env, mjx.put_data(m, d), task) == 0.0


def test_door_walls_collide_and_latch_holds_until_the_lever_is_pressed():
    """Walls and frame posts have contact pairs with the robot's body; the env's latch
    (the hinge range closed while ``latched``) holds the door against a push, and pressing
    the lever's free end down turns it past the release angle (plain MuJoCo, 1 s each)."""
    env = envs.make("humanoid_door")
    m = env.mj_model
    gid = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, n)
    pairs = {(int(a), int(b)) for a, b in zip(m.pair_geom1, m.pair_geom2, strict=True)}
    for wall in ("door_wall_l", "door_wall_r", "door_post_l", "door_post_r"):
        for part in ("chest", "pelvis_geom", "right_palm"):
            assert {(gid(wall), gid(part)), (gid(part), gid(wall))} & pairs, (wall, part)

    def door_after_push(latched: float) -> float:
        mm = copy.deepcopy(m)
        task = env.blank_task().replace(latched=jnp.asarray(latched))
        jr = np.asarray(env._model(task).jnt_range)
        mm.jnt_range[:] = jr
        d = mujoco.MjData(mm)
        d.qpos[:], _ = env.standing_state()
        d.qpos[:2] = (-2.0, 0.0)  # out of the way
        hinge = mm.joint("door_hinge").dofadr[0]
        for _ in range(200):
            d.qfrc_applied[:] = 0.0
            d.qfrc_applied[hinge] = 20.0  # N m opening the door
            mujoco.mj_step(mm, d)
        return float(d.qpos[mm.joint("door_hinge").qposadr[0]])

    assert door_after_push(1.0) < 0.01
    assert door_after_push(0.0) > 0.3
    # pressing the lever: a downward force at the handle site turns it past the release
    d = mujoco.MjData(m)
    d.qpos[:], _ = env.standing_state()
    d.qpos[:2] = (-2.0, 0.0)
    lever = m.body("door_lever").id
    for _ in range(200):
        mujoco.mj_forward(m, d)
        d.xfrc_applied[:] = 0.0
        site = d.site("handle").xpos.copy()
        torque = np.cross(site - d.xpos[lever], [0.0, 0.0, -15.0])
        d.xfrc_applied[lever] = [0.0, 0.0, -15.0, *torque]
        mujoco.mj_step(m, d)
    assert d.qpos[m.joint("door_lever").qposadr[0]] > env.cfg.latch_release_angle


def test_platform_success():
    env = envs.make("humanoid_platform")
    c = env.cfg
    task = env.blank_task()
    raise_arm = {"right_shoulder_pitch": -1.3, "right_elbow": 0.2}
    on = dict(base=(c.platform_front + 0.5, 0.0), z_extra=c.platform_height)
    ok = _state(env, **on, joints=raise_arm, forward_obj_at_hand=True)
    shelf_top = c.platform_height + c.shelf_height
    a = env.obj_qadr
    assert float(ok.qpos[a + 2]) > shelf_top + c.object_half[2] + c.retrieve_height  # premise
    assert _succ(env, ok, task) == 1.0
    ground = _state(env, base=(c.platform_front - 0.5, 0.0), joints=raise_arm,
                    forward_obj_at_hand=True)  # fmt: skip
    assert _succ(env, ground, task) == 0.0  # object in hand but feet on the ground
    on_shelf = _state(env, **on)  # object still on the shelf
    assert _succ(env, on_shelf, task) == 0.0


# -- footstep planner ------------------------------------------------------------------------
FEET = jnp.array([[0.0, 0.12, 0.0], [0.0, -0.12, 0.0]])


def test_footsteps_zero_velocity_feet_stay():
    p = FootstepParams()
    feet = jnp.array([[0.02, 0.11, 0.05], [-0.01, -0.12, -0.02]])
    for t in (0.0, 0.13, 0.41, 0.9):
        fs = plan(jnp.zeros(3), feet, jnp.asarray(t), p)
        np.testing.assert_array_equal(np.asarray(fs.swing), [0.0, 0.0])
        swing = 1 - int(fs.stance)
        np.testing.assert_allclose(np.asarray(fs.target_world), np.asarray(feet[swing]), atol=1e-6)
        ref, height = feet_reference(fs, feet, p)
        np.testing.assert_allclose(np.asarray(ref), np.asarray(feet), atol=1e-6)
        np.testing.assert_array_equal(np.asarray(height), [0.0, 0.0])


def test_footsteps_forward_velocity():
    p = FootstepParams()
    v = 0.5
    seen = []
    for k in range(4):
        t = jnp.asarray(k * p.step_period + 0.05)
        fs = plan(jnp.array([v, 0.0, 0.0]), FEET, t, p)
        swing = int(np.argmax(np.asarray(fs.swing)))
        seen.append(swing)
        side = 1.0 if swing == 0 else -1.0
        np.testing.assert_allclose(
            np.asarray(fs.target), [v * p.step_period, side * p.nominal_width, 0.0], atol=1e-6
        )
        stance = FEET[1 - swing]
        np.testing.assert_allclose(float(fs.target_world[0]), float(stance[0]) + v * p.step_period,
                                   atol=1e-6)  # fmt: skip
        np.testing.assert_allclose(float(fs.countdown), p.step_period - 0.05, atol=1e-5)
        assert int(fs.stance) == 1 - swing
    assert seen == [0, 1, 0, 1]  # alternating, left first
    # the reference moves the swing foot from its start to the target, the stance foot stays
    fs = plan(jnp.array([v, 0.0, 0.0]), FEET, jnp.asarray(0.999 * p.step_period), p)
    ref, height = feet_reference(fs, FEET, p)
    np.testing.assert_allclose(np.asarray(ref[0]), np.asarray(fs.target_world), atol=1e-3)
    np.testing.assert_allclose(np.asarray(ref[1]), np.asarray(FEET[1]), atol=1e-6)
    # clipped at the largest step, never narrower than min_width
    fs = plan(jnp.array([5.0, -5.0, 0.0]), FEET, jnp.asarray(0.0), p)
    assert float(fs.target[0]) == pytest.approx(p.max_step_x)
    assert float(fs.target[1]) >= p.min_width - 1e-6


def test_footsteps_onto_a_step_carry_its_height_and_clear_it():
    """A 12 cm step ahead: the swing target's height is in the command, the reference swing
    peaks ``swing_height`` above the step and lands on it; on flat ground nothing changes."""
    p = FootstepParams()
    step = lambda xy: jnp.where(xy[0] > 0.1, 0.12, 0.0)
    v = 0.5  # left foot target 0.2 m ahead: on the step
    fs = plan(jnp.array([v, 0.0, 0.0]), FEET, jnp.asarray(0.5 * p.step_period), p, step)
    assert float(fs.target_z) == pytest.approx(0.12)
    assert fs.observation().shape == (7,) and float(fs.observation()[-1]) == pytest.approx(0.12)
    _, z = feet_reference(fs, FEET, p, step)
    np.testing.assert_allclose(np.asarray(z), [0.12 + p.swing_height, 0.0], atol=1e-6)
    fs = plan(jnp.array([v, 0.0, 0.0]), FEET, jnp.asarray(0.999 * p.step_period), p, step)
    _, z = feet_reference(fs, FEET, p, step)
    assert float(z[0]) == pytest.approx(0.12, abs=1e-3)
    flat = plan(jnp.array([v, 0.0, 0.0]), FEET, jnp.asarray(0.5 * p.step_period), p)
    assert float(flat.target_z) == 0.0
    np.testing.assert_allclose(np.asarray(feet_reference(flat, FEET, p)[1]), [p.swing_height, 0])


# -- planners' hand servo ---------------------------------------------------------------------
def test_hand_servo_cancels_a_steady_offset_and_never_winds_up():
    """``servo`` (the standing tasks' planners): a hand that settles a fixed offset away from
    its command (a plain-loop plant) ends on the goal; a hand held back by a contact moves the
    command at most SERVO_REACH per axis from the goal, and a new goal far away starts from
    at most SERVO_REACH off it."""
    from refine_dp_jax.envs.humanoid_tasks import SERVO_REACH, servo

    goal = np.array([0.30, -0.10, 0.05])
    bias = np.array([0.01, -0.04, -0.03])  # the LLC's steady tracking offset
    cmd = goal.copy()
    for _ in range(30):
        cmd = np.asarray(servo(jnp.asarray(goal), jnp.asarray(cmd), jnp.asarray(cmd + bias)))
    np.testing.assert_allclose(cmd + bias, goal, atol=2e-3)
    np.testing.assert_allclose(cmd, goal - bias, atol=2e-3)
    blocked = goal - np.array([0.0, 0.10, 0.0])  # a box's side stops the hand 10 cm short
    for _ in range(50):
        cmd = np.asarray(servo(jnp.asarray(goal), jnp.asarray(cmd), jnp.asarray(blocked)))
        assert np.all(np.abs(cmd - goal) <= SERVO_REACH + 1e-6)
    assert cmd[1] == pytest.approx(goal[1] + SERVO_REACH)  # pushing as hard as allowed
    far = goal + np.array([0.0, 0.0, 0.3])
    cmd = np.asarray(servo(jnp.asarray(far), jnp.asarray(cmd), jnp.asarray(blocked)))
    assert np.all(np.abs(cmd - far) <= SERVO_REACH + 1e-6)


def test_commands_move_at_the_llc_trained_rates_whoever_issues_them():
    """``command_limiter``: a humanoid command held ``hold`` LLC steps moves each hand entry at
    most hold x command_max_step (0.5 m/s, 2 rad/s) from the previous one; base velocity and
    grippers switch at once; the testbed (no rate in its LLC training) is not limited."""
    from refine_dp_jax.envs.base import command_limiter

    env = envs.make("humanoid_table_lift")
    hold = 5
    limit = command_limiter(env, hold)
    prev = jnp.zeros(env.command_size)
    want = jnp.concatenate([jnp.array([0.3, 0.0, 0.0]), jnp.full(6, 0.3), jnp.full(6, -3.0),
                            jnp.array([1.0, -1.0])])  # fmt: skip
    got = np.asarray(limit(prev, want))
    dt = env.dt
    np.testing.assert_allclose(got[:3], [0.3, 0.0, 0.0])  # velocity: at once
    np.testing.assert_allclose(got[3:6], hold * 0.5 * dt, rtol=1e-6)  # 5 cm per command
    np.testing.assert_allclose(got[6:9], hold * 2.0 * dt, rtol=1e-6)  # 0.2 rad per command
    np.testing.assert_allclose(got[9:12], -hold * 0.5 * dt, rtol=1e-6)
    np.testing.assert_allclose(got[12:15], -hold * 2.0 * dt, rtol=1e-6)
    np.testing.assert_allclose(got[15:], [1.0, -1.0])  # grippers: at once
    small = prev.at[4].set(0.01)
    np.testing.assert_allclose(np.asarray(limit(prev, small)), np.asarray(small))
    testbed = envs.make("testbed_pick_place")
    jump = jnp.full(testbed.command_size, 5.0)
    np.testing.assert_array_equal(np.asarray(command_limiter(testbed, 2)(0 * jump, jump)), 5.0)


# -- robot -----------------------------------------------------------------------------------
def test_robot_numbers_and_arm_fk():
    """G1-class size and mass; the JAX arm kinematics match MuJoCo's."""
    env = envs.make("humanoid_door")
    m = env.mj_model
    p = HumanoidParams()
    assert 30.0 <= m.body_subtreemass[m.body("pelvis").id] <= 36.0
    d = mujoco.MjData(m)
    qpos, _ = env.standing_state()
    d.qpos[:] = qpos
    mujoco.mj_forward(m, d)
    top = d.geom("head").xpos[2] + m.geom("head").size[0]
    assert 1.2 <= top <= 1.35
    rng = np.random.default_rng(0)
    for side in SIDES:
        names = [
            f"{side}_{j}"
            for j in (
                "shoulder_pitch",
                "shoulder_roll",
                "shoulder_yaw",
                "elbow",
                "wrist_roll",
                "wrist_pitch",
                "wrist_yaw",
            )
        ]
        q = rng.uniform(-0.8, 0.8, 7)
        for n, v in zip(names, q, strict=True):
            d.qpos[m.joint(n).qposadr[0]] = v
        mujoco.mj_forward(m, d)
        rp = d.xmat[m.body("pelvis").id].reshape(3, 3)
        want = rp.T @ (d.site(f"{side}_grasp").xpos - d.xpos[m.body("pelvis").id])
        pos, rot = arm_fk(p, side, jnp.zeros(()), jnp.asarray(q))
        np.testing.assert_allclose(np.asarray(pos), want, atol=1e-5)
        want_rot = rp.T @ d.site(f"{side}_grasp").xmat.reshape(3, 3)
        np.testing.assert_allclose(np.asarray(rot), want_rot, atol=1e-5)


def test_arm_ik_reaches_fk_target():
    env = envs.make("humanoid_door")
    q_true = jnp.array([-0.6, -0.2, 0.3, 0.4, 0.2, -0.3, 0.1])
    pos, rot = arm_fk(env.params, "right", jnp.zeros(()), q_true)
    q0 = jnp.asarray(env._default[12 + 7 : 12 + 14])
    q = jax.jit(lambda a, b, c: env.arm_ik(1, a, b, c, iters=30))(q0, pos, rot)
    p2, r2 = arm_fk(env.params, "right", jnp.zeros(()), q)
    assert float(jnp.linalg.norm(p2 - pos)) < 5e-3
    assert float(jnp.linalg.norm(r2 - rot)) < 5e-2


def test_domain_randomization_hooks():
    env = envs.make("humanoid_box_pickup")
    task = env.blank_task().replace(payload=jnp.array([0.5, 1.0]), friction=jnp.asarray(0.4))
    m = env._model(task)
    hands = env._hands
    np.testing.assert_allclose(np.asarray(m.body_mass[hands]) - env.mj_model.body_mass[hands],
                               [0.5, 1.0], atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(np.asarray(m.pair_friction[env._floor_pairs, :2]), 0.4)
    force, start, end = env._sample_push(jax.random.PRNGKey(0), jnp.asarray(10))
    c = env.cfg
    assert (
        10 + c.push_interval[0] / env.dt - 1 <= int(start) <= 10 + c.push_interval[1] / env.dt + 1
    )
    assert int(end) > int(start) and float(jnp.linalg.norm(force)) <= c.push_force + 1e-4


def test_push_angle_sets_the_pushes_direction():
    """``push_angle`` (experiments/llc_falls.py): pushes drawn in the configured world-frame
    directions only; the default covers the whole circle."""
    keys = jax.random.split(jax.random.PRNGKey(1), 64)

    def angles(**over):
        env = envs.make("humanoid_llc", **over)
        forces = jax.vmap(lambda k: env._sample_push(k, jnp.asarray(0))[0])(keys)
        return np.arctan2(np.asarray(forces[:, 1]), np.asarray(forces[:, 0]))

    np.testing.assert_allclose(angles(push_angle=(0.5, 0.5)), 0.5, atol=1e-5)
    back = angles(push_angle=(3.0, 3.2))  # around -x, across the +-pi seam
    assert np.all(np.abs(np.cos(back) - np.cos(3.1)) < 0.01)
    every = angles()
    assert every.min() < -2.0 and every.max() > 2.0 and np.abs(every).min() < 1.0
    with pytest.raises(ValueError, match="push_angle"):
        envs.make("humanoid_llc", push_angle=(1.0, 0.0))


def test_capture_point_against_mujocos_subtree_velocity():
    """``capture_point`` = centre of mass + its velocity x sqrt(h / g), the velocity from the
    bodies' com-based velocities and the episode's masses (a hand payload included), against
    MuJoCo's own subtree centre of mass and velocity (mj_subtreeVel) at a random state. The
    reward term is off by default and peaks at 1 x its weight with the point over the feet."""
    env = envs.make("humanoid_llc")
    rng = np.random.default_rng(0)
    m = copy.deepcopy(env.mj_model)
    m.body_mass[env._hands[1]] += 0.8  # a payload in the right hand
    d = mujoco.MjData(m)
    mujoco.mj_setConst(m, d)  # the subtree masses MuJoCo divides by, payload included
    q0, _ = env.standing_state()
    d.qpos[:] = q0
    d.qvel[:] = rng.normal(0.0, 0.5, m.nv)
    mujoco.mj_forward(m, d)
    mujoco.mj_subtreeVel(m, d)
    p = env._pelvis
    com, vel = d.subtree_com[p], d.subtree_linvel[p]
    h = com[2] - d.site_xpos[env._soles, 2].mean()
    want = com[:2] + vel[:2] * np.sqrt(h / 9.81)
    task = env.blank_task().replace(payload=jnp.array([0.0, 0.8]))
    dx = mjx.forward(env._model(task), mjx.put_data(m, d))
    got = np.asarray(env.capture_point(env._model(task), dx))
    assert np.linalg.norm(vel[:2]) > 0.1  # a moving state: the velocity term matters
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert envs.make("humanoid_llc").cfg.w_capture_point == 0.0
    s = jax.jit(envs.make("humanoid_llc", w_capture_point=2.0).reset)(jax.random.PRNGKey(0))
    cp = s.metrics["r/capture_point"]
    assert float(cp) == 0.0  # reset reports zeros; a step computes it
    env2 = envs.make("humanoid_llc", w_capture_point=2.0, push_force=0.0)
    s = jax.jit(env2.step)(s, jnp.zeros(env2.action_size))
    r = float(s.metrics["r/capture_point"]) / env2.cfg.reward_scale
    assert 0.5 < r <= 2.0  # standing still: the point lies within a few cm of the feet
    with pytest.raises(ValueError, match="sigma_capture_point"):
        envs.make("humanoid_llc", sigma_capture_point=0.0)


def test_actor_history_appends_the_earlier_steps_proprioception():
    """With ``actor_history = 2`` the observation ends with the proprioception (gravity, joint
    positions and velocities, angular velocity: entries 0-60 and 149-151) of the two steps
    before, newest first (at reset: the current one); the rest of the observation and the
    dynamics are those of the env without history, and the critic sees the same."""
    e0 = envs.make("humanoid_llc")
    e2 = envs.make("humanoid_llc", actor_history=2)
    assert (e2.observation_size, e2.privileged_observation_size) == (280, 308)
    assert "actor_history" not in e0.interface() and e2.interface()["actor_history"] == 2
    key = jax.random.PRNGKey(5)
    s0, s2 = jax.jit(e0.reset)(key), jax.jit(e2.reset)(key)
    p = np.r_[0:61, 149:152]
    obs = [np.asarray(s2.obs)]
    np.testing.assert_array_equal(obs[0][152:216], obs[0][p])
    np.testing.assert_array_equal(obs[0][216:280], obs[0][p])
    step0, step2 = jax.jit(e0.step), jax.jit(e2.step)
    acts = jax.random.uniform(jax.random.PRNGKey(6), (3, 26), minval=-0.5, maxval=0.5)
    for a in acts:
        s0, s2 = step0(s0, a), step2(s2, a)
        obs.append(np.asarray(s2.obs))
    for t in (2, 3):
        np.testing.assert_array_equal(obs[t][152:216], obs[t - 1][p])
        np.testing.assert_array_equal(obs[t][216:280], obs[t - 2][p])
    np.testing.assert_allclose(obs[3][:152], np.asarray(s0.obs), atol=1e-5)
    priv = np.asarray(s2.privileged_obs)
    np.testing.assert_array_equal(priv[:280], obs[3])
    np.testing.assert_allclose(priv[280:], np.asarray(s0.privileged_obs)[152:], atol=1e-5)
    with pytest.raises(ValueError, match="actor_history"):
        envs.make("humanoid_llc", actor_history=-1)


def test_push_force_min_sets_the_smallest_push():
    """Push magnitudes are uniform in [push_force_min, push_force] (0 by default)."""
    keys = jax.random.split(jax.random.PRNGKey(2), 256)

    def magnitudes(**over):
        env = envs.make("humanoid_llc", **over)
        forces = jax.vmap(lambda k: env._sample_push(k, jnp.asarray(0))[0])(keys)
        return np.linalg.norm(np.asarray(forces), axis=1)

    default = magnitudes(push_force=80.0)
    assert default.min() < 5.0 and 75.0 < default.max() <= 80.0 + 1e-4
    hard = magnitudes(push_force=80.0, push_force_min=50)  # an int, as --set parses it
    assert hard.min() >= 50.0 - 1e-4 and hard.max() <= 80.0 + 1e-4
    assert abs(hard.mean() - 65.0) < 2.0
    with pytest.raises(ValueError, match="push_force_min"):
        envs.make("humanoid_llc", push_force=40.0, push_force_min=50.0)


def test_unknown_override_and_bad_values_are_clear_errors():
    with pytest.raises(ValueError, match="no_such_field"):
        envs.make("humanoid_door", no_such_field=1.0)
    with pytest.raises(ConfigError):
        envs.make("humanoid_door", vx_range=(1.0, -1.0))


# -- the walking tasks' planners vs the walking LLC's trained commands -------------------------
WALKING = ("humanoid_box_pickup", "humanoid_pick_place", "humanoid_door", "humanoid_platform")


def test_walk_to_keeps_the_direction_inside_the_command_range():
    """walk_to's planar velocity is shrunk as a whole into the range (vx -0.4..0.8, vy
    +-0.4 m/s): close to the target it points at it (a per-axis clip turned a 0.5 m/s side-step
    at 30 degrees into another direction), and every output is inside the range."""
    from types import SimpleNamespace

    from refine_dp_jax.envs.humanoid_config import HumanoidConfig
    from refine_dp_jax.envs.humanoid_tasks import walk_to

    c = HumanoidConfig()
    rng = np.random.default_rng(0)
    lo = np.array([c.vx_range[0], c.vy_range[0], c.yaw_rate_range[0]])
    hi = np.array([c.vx_range[1], c.vy_range[1], c.yaw_rate_range[1]])
    f = SimpleNamespace(base_pos=jnp.zeros(3), yaw=jnp.asarray(0.3))
    fn = jax.jit(jax.vmap(lambda t, s: walk_to(f, t, 0.0, c, s)[0], in_axes=(0, None)))
    targets = rng.uniform(-2.0, 2.0, (400, 2)).astype(np.float32)
    for speed in (0.5, 0.4):
        vel = np.asarray(fn(jnp.asarray(targets), speed))
        assert np.all(vel >= lo - 1e-6) and np.all(vel <= hi + 1e-6)
        near = np.linalg.norm(targets, axis=1) < 0.6
        err_b = targets @ np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
        moving = near & (np.linalg.norm(vel[:, :2], axis=1) > 1e-6)
        cos = np.sum(vel[moving, :2] * err_b[moving], axis=1) / (
            np.linalg.norm(vel[moving, :2], axis=1) * np.linalg.norm(err_b[moving], axis=1)
        )
        assert moving.sum() > 20 and cos.min() > 1 - 1e-5, cos.min()


def _walk_llc_velocity_range():
    """(low, high) base velocity the walking LLC is trained on: its experiment's command range
    times the command curriculum's level (the stored LLC's card once one is committed: the
    level it reached; before, the experiment's target, the whole range)."""
    import json
    import os

    import experiments
    from refine_dp_jax import pipeline

    cfg = experiments.get("humanoid_llc_walk")
    env = envs.make(cfg.env, **dict(cfg.env_overrides))
    card = os.path.join(pipeline.resolve_path(experiments.humanoid.WALK_LLC), "llc.json")
    scale = 1.0
    if os.path.exists(card):
        scale = json.load(open(card)).get("speed_scale") or 1.0
    return env, scale * np.asarray(env.command_low[:3]), scale * np.asarray(env.command_high[:3])


@pytest.mark.parametrize("name", WALKING)
def test_walking_planner_commands_what_the_walking_llc_is_trained_on(name):
    """Each walking task's command range is the walking LLC's (the loader's interface check),
    and its stage planner, from the robot's start ranges (near and far, facing the work place
    or turned away), commands base velocities inside the LLC's trained range."""
    from typing import NamedTuple

    llc_env, lo, hi = _walk_llc_velocity_range()
    env = envs.make(name)
    np.testing.assert_array_equal(np.asarray(env.command_low), np.asarray(llc_env.command_low))
    np.testing.assert_array_equal(np.asarray(env.command_high), np.asarray(llc_env.command_high))
    c, t = env.cfg, env.task_spec

    class PlannerState(NamedTuple):  # what the planners read of an EnvState
        command: jax.Array
        task: object

    anchor = np.asarray(t.anchor(c))
    datas, goals = [], []
    for r in c.start_distance:
        for theta in (-c.start_angle, 0.0, c.start_angle):
            for turn in (0.0, c.start_heading, np.pi):
                xy = anchor + r * np.array([np.cos(t.approach_yaw + np.pi + theta),
                                            np.sin(t.approach_yaw + np.pi + theta)])  # fmt: skip
                face = np.arctan2(*(anchor - xy)[::-1]) + turn
                m, d = env.mj_model, mujoco.MjData(env.mj_model)
                qpos, _ = env.standing_state()
                qpos[:2], qpos[3:7] = xy, [np.cos(face / 2), 0, 0, np.sin(face / 2)]
                qpos, goal = t.place(env, jax.random.PRNGKey(len(datas)), jnp.asarray(qpos))
                d.qpos[:] = np.asarray(qpos)
                mujoco.mj_forward(m, d)
                datas.append(mjx.put_data(m, d))
                goals.append(goal)
    data = jax.tree.map(lambda *x: jnp.stack(x), *datas)

    @jax.jit
    @jax.vmap
    def plan(d, goal):
        f = env.features(d)
        task = env.blank_task(goal=goal)
        return env.task_spec.expert(env, PlannerState(jnp.zeros(env.command_size), task), f)

    vel = np.asarray(plan(data, jnp.stack(goals)))[:, :3]
    assert np.abs(vel).max() > 0.1  # the starts are away from the work place: it walks
    assert np.all(vel >= lo - 1e-6) and np.all(vel <= hi + 1e-6), (vel.min(0), vel.max(0), lo, hi)


@pytest.mark.parametrize("task", ["humanoid_table_lift", "humanoid_table_place"])
def test_an_object_pressed_down_off_centre_stays_on_the_table(task):
    """A downward push on the object's top inside its footprint (a gripper pressing on it)
    must not tip it through the table. With three support spheres (two -x corners and the
    middle of the +x edge) a push outside their triangle tipped the box about that edge and
    it sank through the table top (plain MuJoCo, 1 s of five times the object's weight at 60 %
    of the way to each +x top corner in turn)."""
    env = envs.make(task)
    m = env.mj_model
    body = m.body("box")
    half = np.asarray(m.geom(f"{body.name}_geom").size)
    rest = env.cfg.table_height + half[2]
    for sy in (-1.0, 1.0):
        d = mujoco.MjData(m)
        d.qpos[:], _ = env.standing_state()
        d.qpos[:2] = (-2.0, 0.0)  # the robot out of the way
        mujoco.mj_forward(m, d)
        lowest = np.inf
        for _ in range(int(1.0 / m.opt.timestep)):
            d.xfrc_applied[:] = 0.0
            corner = d.xpos[body.id] + d.xmat[body.id].reshape(3, 3) @ (half * [0.6, 0.6 * sy, 1.0])
            force = np.array([0.0, 0.0, -5.0 * 9.81 * m.body_subtreemass[body.id]])
            d.xfrc_applied[body.id] = [*force, *np.cross(corner - d.xipos[body.id], force)]
            mujoco.mj_step(m, d)
            lowest = min(lowest, d.xpos[body.id][2])
        assert lowest > rest - 0.03, (sy, lowest, rest)


@pytest.mark.parametrize("task", ["humanoid_table_lift", "humanoid_table_place"])
def test_standing_tasks_start_with_the_hands_clear_of_the_object(task):
    """At reset the arms hold the hands wide of the object (``start_hands``, solved by IK),
    not at the default pose's ready poses 0.26 m ahead of the pelvis, where the grippers were
    inside the table-lift box and kicked it over at the first step. Checked in plain
    MuJoCo at the nearest start (the object 0.28 m ahead): no gripper geom touches the object,
    and the grasp sites sit where the config puts them."""
    env = envs.make(task)
    assert env.cfg.start_hands is not None and env.cfg.arm_randomization_prob == 0.0
    m = env.mj_model
    d = mujoco.MjData(m)
    d.qpos[:], _ = env.standing_state()
    d.qpos[:2] = (-0.28, 0.0)
    arm = env._qadr[12:26]
    d.qpos[arm] = env._arm_start
    mujoco.mj_forward(m, d)
    obj = m.geom("box_geom").id
    touching = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, int(g))
                for c in d.contact[: d.ncon] for g in (c.geom1, c.geom2)
                if obj in (c.geom1, c.geom2) and g != obj]  # fmt: skip
    assert not [g for g in touching if "jaw" in g or "finger" in g or "palm" in g], touching
    want = np.asarray(env.cfg.start_hands)
    for k, mirror in ((0, 1.0), (1, -1.0)):
        site = d.site(f"{SIDES[k]}_grasp").xpos - d.qpos[:3]
        np.testing.assert_allclose(site, want * [1.0, mirror, 1.0], atol=0.01)
    # the default arm pose (what the tasks started from before) puts a gripper in the box
    d.qpos[arm] = env._default[12:26]
    mujoco.mj_forward(m, d)
    if task.endswith("lift"):  # (the place box starts 10 cm to the left of the pelvis)
        assert any(obj in (c.geom1, c.geom2) for c in d.contact[: d.ncon])


def test_start_hands_out_of_reach_is_a_config_error():
    with pytest.raises(ConfigError, match="start_hands"):
        envs.make("humanoid_table_lift", start_hands=(0.9, 0.2, 0.0))
