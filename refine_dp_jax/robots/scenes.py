"""Scene building blocks: a floor, tables, free boxes, a hinged door, a platform and a shelf,
composed with the humanoid by the task specs (``refine_dp_jax.envs.humanoid_tasks``).

Every geom is non-colliding by default; ``add_pairs`` declares the contacts a task needs.
Free objects rest on their supports through four small corner spheres (sphere-box pairs are
far cheaper in MJX than box-box, which always produces 8 contacts). Static furniture is made
of world geoms, not bodies: MJX's per-step cost grows with the body count (its applied-force
accumulation alone is quadratic in it), whereas static geoms cost almost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import mujoco
import numpy as np

from refine_dp_jax.robots.humanoid import (
    HumanoidParams,
    PhysicsOptions,
    _geom,
    add_humanoid,
    foot_contact_geoms,
)

_BOX = mujoco.mjtGeom.mjGEOM_BOX
_SPHERE = mujoco.mjtGeom.mjGEOM_SPHERE
_CAPSULE = mujoco.mjtGeom.mjGEOM_CAPSULE
_CYL = mujoco.mjtGeom.mjGEOM_CYLINDER
WOOD = (0.6, 0.45, 0.3, 1.0)


def new_scene(name: str, opts: PhysicsOptions) -> mujoco.MjSpec:
    """An empty world: solver options, floor, light, offscreen buffer for 640x480 renders."""
    spec = mujoco.MjSpec()
    spec.modelname = name
    spec.compiler.degree = False  # angles (joint ranges) in radians, as everywhere in this code
    o = spec.option
    o.timestep = opts.timestep
    o.iterations = opts.iterations
    o.ls_iterations = opts.ls_iterations
    o.solver = mujoco.mjtSolver.mjSOL_NEWTON
    o.integrator = mujoco.mjtIntegrator.mjINT_EULER
    o.cone = (
        mujoco.mjtCone.mjCONE_ELLIPTIC if opts.elliptic_cone else mujoco.mjtCone.mjCONE_PYRAMIDAL
    )
    o.disableflags |= mujoco.mjtDisableBit.mjDSBL_EULERDAMP  # servo damping is in the actuators
    spec.visual.global_.offwidth = 640
    spec.visual.global_.offheight = 480
    tex = spec.add_texture()
    tex.name = "grid"
    tex.type = mujoco.mjtTexture.mjTEXTURE_2D
    tex.builtin = mujoco.mjtBuiltin.mjBUILTIN_CHECKER
    tex.rgb1 = np.array([0.82, 0.82, 0.82])
    tex.rgb2 = np.array([0.72, 0.72, 0.74])
    tex.width = tex.height = 256
    mat = spec.add_material()
    mat.name = "grid"
    mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "grid"
    mat.texrepeat = np.array([10.0, 10.0])
    floor = spec.worldbody.add_geom()
    floor.name = "floor"
    floor.type = mujoco.mjtGeom.mjGEOM_PLANE
    floor.size = np.array([8.0, 8.0, 0.1])
    floor.material = "grid"
    floor.contype = 0
    floor.conaffinity = 0
    light = spec.worldbody.add_light()
    light.pos = np.array([0.0, 0.0, 4.0])
    light.dir = np.array([0.2, 0.1, -1.0])
    light.type = mujoco.mjtLightType.mjLIGHT_DIRECTIONAL
    light.diffuse = np.array([0.8, 0.8, 0.8])
    light.castshadow = False
    return spec


def add_pairs(spec: mujoco.MjSpec, geoms1: Sequence[str], geoms2: Sequence[str],
              friction: float, condim: int = 3, torsion: float = 0.005) -> None:  # fmt: skip
    """One explicit contact pair per (g1, g2) combination (``torsion``: m, torsional
    friction, active with condim >= 4)."""
    for g1 in geoms1:
        for g2 in geoms2:
            pr = spec.add_pair()
            pr.geomname1 = g1
            pr.geomname2 = g2
            pr.condim = condim
            pr.friction = np.array([friction, friction, torsion, 0.0001, 0.0001])


def robot_scene(name: str, p: HumanoidParams, opts: PhysicsOptions) -> mujoco.MjSpec:
    """Floor + humanoid + feet-floor contacts."""
    spec = new_scene(name, opts)
    add_humanoid(spec, p, opts)
    feet = foot_contact_geoms(p, "left") + foot_contact_geoms(p, "right")
    add_pairs(spec, feet, ["floor"], opts.floor_friction)
    return spec


def add_table(spec: mujoco.MjSpec, name: str, center: Sequence[float],
              half: Sequence[float], height: float) -> str:  # fmt: skip
    """A static table (world geoms); returns the name of its top geom (surface at ``height``)."""
    w = spec.worldbody
    cx, cy = center[0], center[1]
    top = f"{name}_top"
    _geom(w, top, _BOX, (half[0], half[1], 0.02), pos=(cx, cy, height - 0.02), rgba=WOOD)
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = cx + sx * (half[0] - 0.04), cy + sy * (half[1] - 0.04)
            _geom(w, None, _CAPSULE, (0.02,), fromto=(x, y, 0.0, x, y, height - 0.04), rgba=WOOD)
    return top


def add_free_box(spec: mujoco.MjSpec, name: str, half: Sequence[float], mass: float,
                 pos: Sequence[float], rgba=(0.85, 0.25, 0.2, 1.0)) -> list[str]:  # fmt: skip
    """A free box with a site ``name`` at its centre; returns its 8 corner spheres (its
    contacts with supports: the box geom itself has none). Three bottom spheres (two corners
    at -x, the middle of the +x edge) let a box pressed down outside that triangle tip about
    its edge and sink through the table: measured, the squeezing jaws pushed the box through
    the table in 20 of 28 failed scripted table-lift episodes. With the 4 bottom corners
    only, a box dropped on its side still fell through; with all 8, whichever face it lands
    on rests on 4 of them."""
    body = spec.worldbody.add_body()
    body.name = name
    body.pos = np.asarray(pos, dtype=float)
    fj = body.add_freejoint()
    fj.name = name
    _geom(body, f"{name}_geom", _BOX, half, mass=mass, rgba=rgba)
    site = body.add_site()
    site.name = name
    r = 0.006
    corners = []
    signs = [(sx, sy, sz) for sz in (-1, 1) for sx in (-1, 1) for sy in (-1, 1)]
    for i, sign in enumerate(signs):
        g = f"{name}_c{i}"
        _geom(body, g, _SPHERE, (r,), pos=np.asarray(sign) * (np.asarray(half) - r), rgba=rgba)
        corners.append(g)
    return corners


def add_goal_marker(spec: mujoco.MjSpec, radius: float, pos: Sequence[float]) -> None:
    """A thin green disc marking a target region (visual only)."""
    _geom(spec.worldbody, None, _CYL, (radius, 0.002), pos=pos, rgba=(0.1, 0.8, 0.2, 0.6))


def add_door(spec: mujoco.MjSpec, width: float, height: float, damping: float,
             handle_height: float, mass: float) -> tuple[str, str, list[str]]:  # fmt: skip
    """A latched push door in the plane x = 0, hinged at y = -width/2, opening toward +x.

    Hinge ``door_hinge`` (angle 0 closed, grows as the door opens, up to 1.8 rad, with
    ``damping``). A lever handle near the free edge on the -x face, on its own hinge
    ``door_lever`` (0 at rest, pressed down up to 0.9 rad against a spring; site ``handle`` on
    the lever): the env keeps the door latched shut until the lever is pressed
    (``HumanoidConfig.latch_release_angle``). Frame posts and walls beside the doorway are
    solid (their geoms are returned for contact pairs with the robot).
    Returns (panel geom, handle geom, [post and wall geoms]).
    """
    frame = spec.worldbody
    grey = (0.75, 0.75, 0.7, 1.0)
    solid = []
    for s, side in ((-1, "r"), (1, "l")):
        _geom(frame, f"door_post_{side}", _BOX, (0.05, 0.05, height / 2 + 0.05),
              pos=(0, s * (width / 2 + 0.05), height / 2 + 0.05), rgba=grey)  # fmt: skip
        _geom(frame, f"door_wall_{side}", _BOX, (0.05, 0.9, height / 2 + 0.05),
              pos=(0, s * (width / 2 + 1.0), height / 2 + 0.05),
              rgba=(0.85, 0.83, 0.78, 1.0))  # fmt: skip
        solid += [f"door_post_{side}", f"door_wall_{side}"]
    _geom(frame, None, _BOX, (0.05, width / 2 + 0.1, 0.05), pos=(0, 0, height + 0.1), rgba=grey)
    door = spec.worldbody.add_body()
    door.name = "door"
    door.pos = np.array([0.0, -width / 2, 0.0])
    hinge = door.add_joint()
    hinge.name = "door_hinge"
    hinge.type = mujoco.mjtJoint.mjJNT_HINGE
    hinge.axis = np.array([0.0, 0.0, -1.0])
    hinge.range = np.array([0.0, 1.8])
    hinge.limited = mujoco.mjtLimited.mjLIMITED_TRUE
    hinge.damping = np.array([damping, 0.0, 0.0])
    hinge.armature = 0.05
    panel = (0.02, width / 2 - 0.01, height / 2)
    _geom(door, "door_panel", _BOX, panel, pos=(0, width / 2, height / 2 + 0.01), mass=mass,
          rgba=(0.55, 0.35, 0.2, 1.0))  # fmt: skip
    hy = width - 0.12
    _geom(door, None, _BOX, (0.03, 0.01, 0.01), pos=(-0.04, hy + 0.06, handle_height),
          rgba=(0.8, 0.8, 0.8, 1.0))  # fmt: skip
    # the lever turns about the door's normal at its outer end (pressing its free end down)
    lever = door.add_body()
    lever.name = "door_lever"
    lever.pos = np.array([-0.07, hy + 0.06, handle_height])
    lj = lever.add_joint()
    lj.name = "door_lever"
    lj.type = mujoco.mjtJoint.mjJNT_HINGE
    lj.axis = np.array([1.0, 0.0, 0.0])  # positive: the free end (toward -y) goes down
    lj.range = np.array([0.0, 0.9])
    lj.limited = mujoco.mjtLimited.mjLIMITED_TRUE
    lj.stiffness = np.array([3.0, 0.0, 0.0])  # N m / rad back to horizontal
    lj.damping = np.array([0.2, 0.0, 0.0])
    lj.armature = 0.01
    _geom(lever, "door_handle", _CAPSULE, (0.015,), fromto=(0, -0.12, 0, 0, 0, 0), mass=0.2,
          rgba=(0.85, 0.85, 0.85, 1.0))  # fmt: skip
    site = lever.add_site()
    site.name = "handle"
    site.pos = np.array([0.0, -0.06, 0.0])
    return "door_panel", "door_handle", solid


def add_platform(spec: mujoco.MjSpec, front_x: float, half: Sequence[float],
                 height: float) -> str:  # fmt: skip
    """A static platform box whose front edge is at x = ``front_x``; returns its geom."""
    _geom(spec.worldbody, "platform", _BOX, (half[0], half[1], height / 2),
          pos=(front_x + half[0], 0.0, height / 2), rgba=(0.45, 0.5, 0.6, 1.0))  # fmt: skip
    return "platform"


def add_shelf(spec: mujoco.MjSpec, center: Sequence[float], half: Sequence[float],
              top: float, base: float = 0.0) -> str:  # fmt: skip
    """A shelf board (top surface at ``top``) on two visual side panels standing at height
    ``base``; returns the board geom."""
    w = spec.worldbody
    cx, cy = center[0], center[1]
    board = "shelf_board"
    _geom(w, board, _BOX, (half[0], half[1], 0.015), pos=(cx, cy, top - 0.015), rgba=WOOD)
    h = (top + 0.3 - base) / 2
    for s in (-1, 1):
        _geom(w, None, _BOX, (half[0], 0.015, h), pos=(cx, cy + s * (half[1] + 0.015), base + h),
              rgba=WOOD)  # fmt: skip
    return board
