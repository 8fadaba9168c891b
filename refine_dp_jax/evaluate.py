"""Evaluation of a planner + LLC: success rate over the FIRST episode of each of B envs with
deterministic sampling, completion time, hand tracking error; and offscreen video rendering.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from refine_dp_jax.envs.base import Env
from refine_dp_jax.train.gaussian_ppo import GaussianPPO
from refine_dp_jax.train.hierarchy import OUTCOMES, PlanFn, hier_init, make_hier_rollout


def decisions_per_episode(env: Env, exec_steps: int, hold: int) -> int:
    """Decisions that cover one whole episode (time limit) plus one."""
    return math.ceil(env.episode_steps / (exec_steps * hold)) + 1


def make_evaluate(
    env: Env,
    llc_ppo: GaussianPPO,
    plan: PlanFn,
    num_envs: int,
    obs_history: int,
    exec_steps: int,
    hold: int,
) -> Callable:
    """evaluate(planner_params, llc_learner, key) -> dict of scalars (jit it).

    Every env runs one full episode; only each env's first episode counts. How the first
    episodes ended, as shares that add up to 1 with ``unfinished / episodes``: succeeded
    (``success_rate``), the robot fell (``fell_rate``), ended early for another reason (the task
    object lost, ``lost_rate``; an exploded state, ``nonfinite_rate``), ran out of time
    (``timeout_rate``).
    """
    t_len = decisions_per_episode(env, exec_steps, hold)
    rollout = make_hier_rollout(env, llc_ppo, plan, lambda p: p[1], t_len, exec_steps, hold)

    def evaluate(planner_params, llc_learner, key, curriculum=1.0):
        k_init, k_roll = jax.random.split(key)
        hs = hier_init(env, k_init, num_envs, obs_history, curriculum)
        _, decs, _ = rollout(hs, planner_params, llc_learner, k_roll, True, False)
        before = jnp.cumsum(decs.done, axis=0) - decs.done  # episodes finished before t
        first = (before < 0.5).astype(jnp.float32)  # [T, B] decisions of the first episode
        ended = jnp.sum(first * decs.done, axis=0)  # [B]
        success = jnp.sum(first * decs.success, axis=0)
        steps = jnp.sum(first * decs.done * decs.episode_steps, axis=0)
        n_succ = jnp.sum(success)
        share = lambda x: jnp.sum(first * x) / num_envs  # noqa: E731
        return {
            "success_rate": jnp.mean(success),
            **{f"{k}_rate": share(decs.ending[k]) for k in OUTCOMES if k != "success"},
            "episodes": jnp.float32(num_envs),
            "unfinished": jnp.sum(1.0 - ended),
            "completion_time_s": jnp.sum(success * steps) * env.dt / jnp.maximum(n_succ, 1.0),
            "hand_err": jnp.sum(first * decs.hand_err) / jnp.maximum(jnp.sum(first), 1.0),
            "nonfinite": jnp.sum(first * decs.nonfinite),
        }

    return evaluate


def make_trajectory_recorder(
    env: Env, llc_ppo: GaussianPPO, plan: PlanFn, obs_history: int, exec_steps: int, hold: int,
    num_envs: int = 2, curriculum: float = 1.0, record=None,
) -> Callable:  # fmt: skip
    """record(planner_params, llc_learner, key) -> (qpos [frames, B, nq], mocap_pos
    [frames, B, nmocap, 3]), one frame per LLC step (``record``: what to record instead,
    ``hierarchy.make_qpos_rollout``). The same first episodes as ``make_evaluate``'s with the
    same key and ``num_envs``."""
    from refine_dp_jax.train.hierarchy import make_qpos_rollout

    t_len = decisions_per_episode(env, exec_steps, hold)
    rollout = make_qpos_rollout(env, llc_ppo, plan, lambda p: p[1], t_len, exec_steps, hold, record)

    def recorder(planner_params, llc_learner, key):
        k_init, k_roll = jax.random.split(key)
        hs = hier_init(env, k_init, num_envs, obs_history, curriculum)
        return rollout(hs, planner_params, llc_learner, k_roll)

    return recorder


def render_video(
    env: Env, qpos: np.ndarray, path: str, fps: float, size=(320, 240), mocap_pos=None
) -> str:
    """Renders qpos [frames, B, nq] (episodes side by side) to an mp4 with MuJoCo offscreen;
    ``mocap_pos`` [frames, B, nmocap, 3] places mocap bodies (e.g. each episode's goal)."""
    from refine_dp_jax.gl import choose_gl_backend, rendering_available

    choose_gl_backend()
    if not rendering_available():
        raise RuntimeError("no OpenGL backend: install libosmesa6 (Debian) for offscreen videos")
    import imageio.v2 as imageio
    import mujoco

    m = env.mj_model
    d = mujoco.MjData(m)
    w, h = size
    renderer = mujoco.Renderer(m, h, w)
    cam = mujoco.MjvCamera()
    mujoco.mjv_defaultFreeCamera(m, cam)
    cam.distance, cam.elevation, cam.azimuth = getattr(env, "render_camera", (4.0, -45.0, 90.0))
    frames = []
    for t in range(qpos.shape[0]):
        tiles = []
        for b in range(qpos.shape[1]):
            d.qpos[:] = qpos[t, b]
            if mocap_pos is not None and m.nmocap:
                d.mocap_pos[:] = mocap_pos[t, b]
            mujoco.mj_forward(m, d)
            cam.lookat[:] = d.qpos[:3] if m.nq >= 3 else 0.0
            cam.lookat[2] = 0.2
            renderer.update_scene(d, cam)
            tiles.append(renderer.render())
        frames.append(np.concatenate(tiles, axis=1))
    renderer.close()
    imageio.mimwrite(path, frames, fps=fps, macro_block_size=1)
    imageio.imwrite(os.path.splitext(path)[0] + "_frames.png", key_frames(np.stack(frames)))
    return path


def key_frames(frames: np.ndarray, count: int = 6, columns: int = 3) -> np.ndarray:
    """``count`` evenly spaced frames of a video [F, H, W, 3], each halved in size, on a grid
    of ``columns`` (row-major, first frame top left, last bottom right; empty cells black):
    the video as one image, for viewers that do not play MP4."""
    n = min(count, frames.shape[0])
    idx = np.round(np.linspace(0, frames.shape[0] - 1, n)).astype(int)
    small = frames[idx][:, ::2, ::2]
    rows = -(-n // columns)
    cols = min(columns, n)
    h, w = small.shape[1:3]
    grid = np.zeros((rows * h, cols * w, frames.shape[3]), frames.dtype)
    for j, img in enumerate(small):
        r, c = divmod(j, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return grid
