"""Which jax to pin: physics and denoising throughput of this interpreter's jax on this CPU.

Run it under each candidate environment (``python -m benchmarks.jax_version``); it appends one
JSON line per measurement to benchmarks/results.jsonl (compile time apart from steady rate).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import jax
import mujoco
from mujoco import mjx

from benchmarks.common import append_result, timed_compile


def brax_dir() -> str:
    """The installed brax package folder, found without importing brax."""
    spec = importlib.util.find_spec("brax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("brax is not installed; it ships the reference humanoid.xml")
    return list(spec.submodule_search_locations)[0]


def humanoid_model(brax_settings: bool) -> mujoco.MjModel:
    path = os.path.join(brax_dir(), "envs", "assets", "humanoid.xml")
    m = mujoco.MjModel.from_xml_path(path)
    if brax_settings:  # what brax's humanoid env uses
        m.opt.solver = mujoco.mjtSolver.mjSOL_NEWTON
        m.opt.iterations = 1
        m.opt.ls_iterations = 4
    return m


def physics_rate(m: mujoco.MjModel, batch: int, steps: int, reps: int) -> tuple[float, float]:
    mx = mjx.put_model(m)
    d0 = mjx.make_data(mx)
    keys = jax.random.split(jax.random.key(0), batch)
    qpos = jax.vmap(lambda k: d0.qpos + 0.01 * jax.random.normal(k, d0.qpos.shape))(keys)
    data = jax.vmap(lambda q: d0.replace(qpos=q))(qpos)

    def roll(d):
        return jax.lax.fori_loop(0, steps, lambda _, x: jax.vmap(mjx.step, (None, 0))(mx, x), d)

    fn, compile_s = timed_compile(roll, data)
    jax.block_until_ready(fn(data))
    t = time.perf_counter()
    for _ in range(reps):
        data = fn(data)
    jax.block_until_ready(data)
    return batch * steps * reps / (time.perf_counter() - t), compile_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    for brax_settings in (True, False):
        rate, comp = physics_rate(humanoid_model(brax_settings), args.batch, args.steps, args.reps)
        cfg = "brax_solver" if brax_settings else "file_solver"
        print(f"jax {jax.__version__} humanoid {cfg}: {rate:,.0f} steps/s (compile {comp:.1f}s)")
        append_result(
            "jax_version_physics",
            env="brax_humanoid",
            config=cfg,
            batch=args.batch,
            steps_per_s=rate,
            compile_s=comp,
        )


if __name__ == "__main__":
    main()
