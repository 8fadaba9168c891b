"""Physics cost of the humanoid tasks: vmapped ``mjx.step`` throughput of each task's model
next to brax's classic humanoid (``brax/envs/assets/humanoid.xml`` from the installed brax,
with brax's solver settings: Newton, 1 iteration, 4 line-search iterations), in one run.

Each model is compiled ahead of time (``jit(...).lower(...).compile()``: compile seconds are
reported apart), then every model is timed in interleaved rounds (the machine may be shared:
interleaving exposes all models to the same load); steps/s is the median over rounds.
One JSON line per model goes to benchmarks/results.jsonl (benchmark = "physics_cost", field
``ratio_to_brax_humanoid``; ``cpu_cores`` says how many cores the process could use: the
recorded numbers were taken under ``taskset -c 1``, one core).

    taskset -c 1 python -m benchmarks.physics_cost [--batch 512] [--steps 20] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from mujoco import mjx  # noqa: E402

from benchmarks.common import append_result  # noqa: E402
from refine_dp_jax import envs  # noqa: E402
from refine_dp_jax.envs.base import put_model  # noqa: E402

TASKS = ("humanoid_llc", "humanoid_table_lift", "humanoid_table_place", "humanoid_box_pickup",
         "humanoid_pick_place", "humanoid_door", "humanoid_platform")  # fmt: skip
BRAX = "brax_humanoid"


def brax_humanoid() -> tuple[mujoco.MjModel, np.ndarray, np.ndarray]:
    import brax

    path = os.path.join(os.path.dirname(brax.__file__), "envs", "assets", "humanoid.xml")
    m = mujoco.MjModel.from_xml_path(path)
    m.opt.iterations, m.opt.ls_iterations = 1, 4  # brax's settings for this model
    return m, np.array(m.qpos0), np.zeros(m.nu)


def compiled_rollout(m: mujoco.MjModel, qpos, ctrl, batch: int, steps: int):
    """(compiled fn, batched data, compile seconds) for ``steps`` vmapped mjx.step calls."""
    mx = put_model(m)
    d = mjx.make_data(mx).replace(qpos=jnp.asarray(qpos, jnp.float32),
                                  ctrl=jnp.asarray(ctrl, jnp.float32))  # fmt: skip
    d = jax.tree.map(lambda x: jnp.broadcast_to(x, (batch, *x.shape)), d)

    def roll(d):
        return jax.lax.fori_loop(0, steps, lambda _, x: jax.vmap(mjx.step, (None, 0))(mx, x), d)

    t = time.perf_counter()
    fn = jax.jit(roll).lower(d).compile()
    compile_s = time.perf_counter() - t
    d = fn(d)  # warm-up (and a state in contact)
    jax.block_until_ready(d)
    return fn, d, compile_s


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20, help="mjx.step calls per timed call")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--envs", nargs="*", default=list(TASKS))
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)

    models = {BRAX: brax_humanoid()}
    for name in args.envs:
        env = envs.make(name)
        models[name] = (env.mj_model, *env.standing_state())
    runs = {}
    for name, (m, qpos, ctrl) in models.items():
        fn, d, cs = compiled_rollout(m, qpos, ctrl, args.batch, args.steps)
        runs[name] = [fn, d, cs, []]
        print(f"{name}: nv={m.nv} nbody={m.nbody} pairs={m.npair} compile {cs:.1f} s", flush=True)
    for _ in range(args.rounds):
        for r in runs.values():
            t = time.perf_counter()
            r[1] = r[0](r[1])
            jax.block_until_ready(r[1])
            r[3].append(args.batch * args.steps / (time.perf_counter() - t))
    rate = {n: float(np.median(r[3])) for n, r in runs.items()}
    rows = {}
    for name, r in runs.items():
        m = models[name][0]
        row = dict(env=name, batch=args.batch, steps_per_s=rate[name], compile_s=r[2],
                   ratio_to_brax_humanoid=rate[name] / rate[BRAX],
                   steps_per_s_best=float(np.max(r[3])), rounds=args.rounds,
                   steps_per_call=args.steps, nv=m.nv, nbody=m.nbody, npair=m.npair,
                   solver_iterations=m.opt.iterations, ls_iterations=m.opt.ls_iterations,
                   timestep=m.opt.timestep, cpu_cores=len(os.sched_getaffinity(0)),
                   note="vmapped mjx.step from a standing pose, ctrl fixed")  # fmt: skip
        print(f"{name:22s} {rate[name]:9.0f} steps/s  ratio {row['ratio_to_brax_humanoid']:.2f}"
              f"  (best {row['steps_per_s_best']:.0f})", flush=True)  # fmt: skip
        rows[name] = row if args.no_write else append_result("physics_cost", **row)
    return rows


if __name__ == "__main__":
    main()
