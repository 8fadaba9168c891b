"""One command for a lent GPU: throughput figures, then the walking LLC trained for a wall
budget, evaluated, stored, with its curves and a video, all under ``--out`` (bring the folder
back and commit what it made).

    make gpu-llc ARGS="--out /tmp/gpu_llc"          # experiments/gpu_llc.sh: carried wheels
    python -m experiments.gpu_llc --out OUT [--phase all|bench|train] [--minutes 8]
        [--envs 4096] [--bench-envs 1024 4096] [--experiment humanoid_llc_walk_gpu]

Phases (one device call each if the machine limits a call's length; ``all`` runs both):

- ``bench``: the device; vmapped ``mjx.step`` of the LLC scene (``--physics-env``; physics
  steps/s) at the largest of ``--bench-envs`` and the fused DPPO step on
  ``humanoid_table_lift`` (``--dppo-experiment``; LLC steps/s incl. denoising and the update)
  at each of them, compile seconds apart: ``OUT/bench.jsonl``, one row per measurement, each
  naming the device (append them to ``benchmarks/results.jsonl`` when committing; the
  compass figure for the fused step is 200k humanoid env steps/s on one GPU).
- ``train``: ``refine-dp train-llc`` of ``--experiment`` in ``OUT/run`` with ``--envs``
  environments for at most ``--minutes`` (compile included; its LLC PPO throughput, env
  steps/s of the training iterations themselves, goes to ``OUT/bench.jsonl``), then the
  deterministic evaluation of what was trained (fall rate, hand, footstep and velocity
  tracking, forward progress; ``llc.eval_episodes``), the stored LLC (``OUT/export``:
  llc.npz + llc.json + curves, loadable with ``--set llc_checkpoint=``), and a video of two
  episodes where OpenGL rendering is available.

Safe on a device lent for 15 minutes in all: nothing is downloaded; the training budget is
enforced by the trainer (it stops after the iteration that ends past it, with a checkpoint);
a kill at any point leaves the newest checkpoint (every ``ckpt_every`` iterations) in
``OUT/run/llc/ckpt``, and rerunning with the same ``--out`` resumes the training.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def device_info() -> dict:
    import jax

    d = jax.devices()[0]
    return {"platform": d.platform, "device_kind": d.device_kind,
            "device_count": jax.device_count(), "jax": jax.__version__}  # fmt: skip


def _keep(out: str, row: dict) -> dict:
    """Prints a throughput row (``benchmarks.common.append_result`` has written it to
    ``out/bench.jsonl`` at once: a kill keeps the ones done)."""
    keys = ("benchmark", "env", "batch", "steps_per_s", "compile_s", "device_kind")
    print(json.dumps({k: row[k] for k in keys if k in row}))
    return row


def bench(out: str, physics_env: str, dppo_experiment: str, envs_list: list[int],
          reps: int) -> list:  # fmt: skip
    """Throughput rows (``benchmarks.run``'s measurements)."""
    import experiments
    from benchmarks import run as b

    rows = [_keep(out, b.physics_limit(physics_env, max(envs_list), steps=20, reps=reps))]
    dppo_cfg = experiments.get(dppo_experiment)
    rows += [_keep(out, b.dppo_step(dppo_cfg, n, reps, None)) for n in envs_list]
    return rows


def llc_video(parts, learner, path: str, episodes: int, key) -> str:
    """``episodes`` evaluation episodes of the LLC (its training commands) side by side."""
    import jax

    from refine_dp_jax.evaluate import render_video
    from refine_dp_jax.train.llc_eval import make_llc_eval

    cfg, env, ppo = parts.cfg, parts.env, parts.llc_ppo
    act = lambda p, obs: ppo.act(p, obs, jax.random.PRNGKey(0), True)[0]  # noqa: E731
    run = make_llc_eval(env, episodes, cfg.llc.command_hold_steps, act,
                        cfg.llc.velocity_hold_steps, record_qpos=True)  # fmt: skip
    qpos = jax.device_get(run(learner, key)["qpos"])
    return render_video(env, qpos, path, fps=1.0 / env.dt)


def train(out: str, cfg, command: str, minutes: float, video_episodes: int) -> dict:
    """The walking LLC for at most ``minutes``, then its evaluation, export and video."""
    import jax

    from refine_dp_jax import pipeline
    from refine_dp_jax.gl import choose_gl_backend, rendering_available
    from refine_dp_jax.logs import write_json
    from refine_dp_jax.policy_store import save_llc

    parts = pipeline.build(cfg)
    run_dir = os.path.join(out, "run")
    os.makedirs(run_dir, exist_ok=True)
    pipeline.save_config(cfg, run_dir, {"command": command})
    t0 = time.time()
    record = pipeline.stage_llc(parts, run_dir, minutes=minutes)
    train_s = time.time() - t0
    if record.get("seconds_per_iteration"):  # iterations ran in this call: their throughput
        from benchmarks.common import append_result

        llc = cfg.llc
        row = append_result("llc_ppo", env=cfg.env, batch=llc.num_envs,
                            steps_per_s=llc.num_envs * llc.rollout_steps
                            / record["seconds_per_iteration"],
                            compile_s=record["compile_s"], unroll_length=llc.rollout_steps,
                            hidden=list(llc.ppo.actor_hidden), source="training run")  # fmt: skip
        _keep(out, row)
    learner, info = pipeline.latest_llc(parts, run_dir)
    llc_dir = os.path.join(run_dir, "llc")
    ev = record.get("eval") or pipeline.evaluate_llc(parts, learner, llc_dir, info, variants=False)
    export = os.path.join(out, "export")
    extra = {"eval": ev, "seconds": train_s, **info, "note": f"device: {device_info()}"}
    save_llc(export, parts, learner, command, extra)
    for name in ("metrics.jsonl", "curves.png", "eval.json"):
        if os.path.exists(os.path.join(llc_dir, name)):
            shutil.copy(os.path.join(llc_dir, name), os.path.join(export, name))
    summary = {"device": device_info(), "train_seconds": train_s, **info, "eval": ev,
               "compile_s": record.get("compile_s")}  # fmt: skip
    choose_gl_backend()
    if video_episodes > 0 and rendering_available():
        try:
            summary["video"] = llc_video(parts, learner, os.path.join(out, "llc_walk.mp4"),
                                         video_episodes, jax.random.PRNGKey(1))  # fmt: skip
        except Exception as e:  # rendering is optional on a lent machine: say why it is missing
            summary["video"] = f"skipped: {type(e).__name__}: {e}"
    else:
        summary["video"] = "skipped: no OpenGL backend (install libosmesa6) or --video-episodes 0"
    write_json(os.path.join(out, "summary.json"), summary, default=str)
    return summary


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--out", required=True, help="output folder (rerun with it to resume)")
    ap.add_argument("--phase", choices=("all", "bench", "train"), default="all")
    ap.add_argument("--experiment", default="humanoid_llc_walk_gpu")
    ap.add_argument("--envs", type=int, default=4096, help="environments of the training run")
    ap.add_argument("--minutes", type=float, default=8.0, help="training wall budget")
    ap.add_argument("--bench-envs", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--bench-reps", type=int, default=3)
    ap.add_argument("--dppo-experiment", default="humanoid_table_lift")
    ap.add_argument("--physics-env", default="", help="physics benchmark env (default: the "
                    "experiment's)")  # fmt: skip
    ap.add_argument("--video-episodes", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides, key=value")
    a = ap.parse_args(argv)
    from refine_dp_jax.errors import ConfigError

    if a.minutes <= 0 or a.envs < 1 or min(a.bench_envs) < 1 or a.bench_reps < 1:
        raise ConfigError("--minutes must be > 0; --envs, --bench-envs, --bench-reps >= 1")
    from refine_dp_jax.cli import experiment_config, setup_process
    from refine_dp_jax.logs import write_json

    setup_process()
    os.makedirs(a.out, exist_ok=True)
    import benchmarks.common

    # throughput rows go to the output folder (brought back and appended to the repository's
    # benchmarks/results.jsonl when committed), not into this checkout
    benchmarks.common.RESULTS = os.path.join(a.out, "bench.jsonl")
    dev = device_info()
    print("device:", json.dumps(dev))
    write_json(os.path.join(a.out, "device.json"), dev)
    sets = [*a.set, f"llc.num_envs={a.envs}"]
    cfg = experiment_config(a.experiment, [sets])
    result = {"device": dev}
    if a.phase in ("all", "bench"):
        physics = a.physics_env or cfg.env
        result["bench"] = bench(a.out, physics, a.dppo_experiment, a.bench_envs, a.bench_reps)
    if a.phase in ("all", "train"):
        command = " ".join(["python -m experiments.gpu_llc", *(argv or sys.argv[1:])])
        result["train"] = train(a.out, cfg, command, a.minutes, a.video_episodes)
        keys = ("train_seconds", "iterations_done", "speed_scale", "video")
        print(json.dumps({k: result["train"].get(k) for k in keys}, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
