"""Offscreen renders of the four humanoid task scenes (docs/humanoid_<task>.png).

    python -m refine_dp_jax.robots.render_scenes [--out docs]

The robot stands in its default pose at a working position of each task (CPU MuJoCo, no
physics step); the camera frames robot and task objects.
"""

from __future__ import annotations

import argparse
import os

from refine_dp_jax.gl import choose_gl_backend, rendering_available

# (robot x, y, yaw), camera (lookat x, y, z, distance, azimuth, elevation) per task
VIEWS = {
    "humanoid_box_pickup": ((-0.45, 0.0, 0.0), (-0.1, 0.0, 0.6, 2.6, 145.0, -20.0)),
    "humanoid_pick_place": ((-0.45, 0.17, 0.0), (0.0, 1.5, 0.5, 4.6, 160.0, -25.0)),
    "humanoid_door": ((-0.75, 0.25, 0.0), (-0.3, 0.0, 0.8, 3.6, 35.0, -18.0)),
    "humanoid_platform": ((0.25, 0.0, 0.0), (0.8, 0.0, 0.6, 3.6, 35.0, -20.0)),
}


def render_task(name: str, path: str, width: int = 480, height: int = 360) -> str:
    """Renders one task scene to ``path`` (PNG) and returns the path."""
    import imageio.v2 as imageio
    import mujoco
    import numpy as np

    from refine_dp_jax import envs

    env = envs.make(name)
    m = env.mj_model
    d = mujoco.MjData(m)
    qpos, ctrl = env.standing_state()
    (x, y, yaw), (lx, ly, lz, dist, az, el) = VIEWS[name]
    qpos[:3] = [x, y, env.stand_height]
    qpos[3:7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
    d.qpos[:] = qpos
    d.ctrl[:] = ctrl
    mujoco.mj_forward(m, d)
    cam = mujoco.MjvCamera()
    cam.lookat[:] = [lx, ly, lz]
    cam.distance, cam.azimuth, cam.elevation = dist, az, el
    with mujoco.Renderer(m, height=height, width=width) as r:
        r.update_scene(d, camera=cam)
        img = r.render()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    imageio.imwrite(path, img)
    return path


def main(argv=None) -> list[str]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="docs")
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--height", type=int, default=360)
    args = ap.parse_args(argv)
    choose_gl_backend()
    if not rendering_available():
        ap.error("no OpenGL backend: install libosmesa6 (Debian) or set MUJOCO_GL")
    out = []
    for name in VIEWS:
        path = os.path.join(args.out, f"{name}.png")
        out.append(render_task(name, path, args.width, args.height))
        print(path)
    return out


if __name__ == "__main__":
    main()
