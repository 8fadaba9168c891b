"""Deterministic-evaluation learning curve of stage 4, for choosing DPPO hyperparameters.

Starts from a run directory whose stages 1-3 are done (LLC, demonstrations, pre-trained DP),
runs the fine-tuning step for ``--iterations`` and every ``--every`` iterations evaluates the
current DP with deterministic sampling on ``--episodes`` episodes (at the experiment's task
curriculum; the same initial states every time). The closing line gives the time to the first
evaluation at or above ``--target`` (training steps only: compile and evaluations excluded,
compile reported apart). Nothing is written to the run directory; one JSON line per
iteration goes to stdout and to ``--log``. ``--plot A.jsonl B.jsonl ...`` draws the
evaluated success of several logs into one PNG. Example (the clip-range comparison in
experiments/testbed.py)::

    refine-dp pipeline --experiment testbed --out runs/testbed     # or only stages 1-3
    python -m experiments.dppo_curve --out runs/testbed --log c05.jsonl \\
        --set dppo.clip_eps=0.05 --set dppo.clip_eps_base=0.005
    python -m experiments.dppo_curve --plot c01.jsonl c05.jsonl --png clip.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def run_curve(args) -> None:
    import jax

    from refine_dp_jax import pipeline
    from refine_dp_jax.cli import experiment_config
    from refine_dp_jax.train.finetune import dp_plan_fn

    cfg = experiment_config(args.experiment, tuple(args.set))
    parts = pipeline.build(cfg)
    state = pipeline.finetune_state(parts, cfg, str(args.out), args.joint)
    t = time.perf_counter()
    step = jax.jit(pipeline.finetune_step(parts, cfg, args.joint)).lower(state).compile()
    compile_s = time.perf_counter() - t
    plan = dp_plan_fn(parts.dppo, cfg.diffusion.ft_steps)
    evaluate = pipeline.make_evaluator(parts, plan, args.episodes)
    key = jax.random.PRNGKey(args.eval_seed)

    def success():
        r = evaluate((state.planner, state.normalizer), state.llc, key, cfg.task_curriculum)
        return float(r["success_rate"])

    log = open(args.log, "w") if args.log else None  # closed after the loop
    header = {"set": list(args.set), "joint": args.joint, "episodes": args.episodes,
              **({"label": args.label} if args.label else {})}  # fmt: skip

    def emit(line):
        text = json.dumps(line)
        print(text, flush=True)
        if log:
            log.write(text + "\n")
            log.flush()

    emit({**header, "it": 0, "eval": success(), "compile_s": round(compile_s, 1)})
    train_s, reached = 0.0, None  # training time only: evaluations are not counted
    for it in range(1, args.iterations + 1):
        t = time.perf_counter()
        state, m = step(state)
        jax.block_until_ready(state)
        train_s += time.perf_counter() - t
        line = {
            "it": it,
            "t": round(train_s, 1),
            "train_success": round(float(m["dp/success_rate"]), 3),
            "approx_kl": float(m["dp/approx_kl"]),
            "kl_after_update": float(m["dp/kl_after_update"]),
            "clip_frac": float(m["dp/clip_frac"]),
        }
        if args.joint:  # the LLC phase's metrics: tracking reward, action std, losses
            line.update({k: float(v) for k, v in m.items() if k.startswith("llc/") and v.ndim == 0})
        if it % args.every == 0 or it == args.iterations:
            line["eval"] = success()
            # success is k / episodes, a float32: 180 / 200 reads 0.8999999762
            if reached is None and line["eval"] >= args.target - 1e-6:
                reached = {"iterations_to_target": it, "time_to_target_s": round(train_s, 1)}
        emit(line)
    emit({
        "target": args.target, **(reached or {"iterations_to_target": None}),
        "compile_s": round(compile_s, 1), "train_s": round(train_s, 1),
        "s_per_iteration": round(train_s / args.iterations, 3),
    })  # fmt: skip
    if log:
        log.close()


def plot(logs: list[Path], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    curves = []
    for path in logs:
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        curves.append((path, [x for x in lines if "it" in x]))  # without the summary line
    episodes = {lines[0].get("episodes", 0) for _, lines in curves}
    for path, lines in curves:
        label = lines[0].get("label") or (
            " ".join(x.removeprefix("dppo.") for x in lines[0].get("set", [])) or path.stem
        )
        label += " (joint)" if lines[0].get("joint") else ""
        if len(episodes) > 1:  # logs evaluated on different episode counts say theirs
            label += f", {lines[0].get('episodes', 0)} episodes"
        its = [x["it"] for x in lines if "eval" in x]
        ax.plot(its, [x["eval"] for x in lines if "eval" in x], marker="o", label=label)
    ax.axhline(0.9, color="grey", ls=":", lw=1)
    ax.set_xlabel("DPPO iteration")
    ax.set_ylabel(
        "success (deterministic" + (f", {episodes.pop()} episodes)" if len(episodes) == 1 else ")")
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="testbed")
    p.add_argument("--out", type=Path, default=Path("runs/testbed"), help="stages 1-3 done")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE")
    p.add_argument("--joint", action="store_true", help="Algorithm 1 (LLC PPO + DPPO)")
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--eval-seed", type=int, default=123)
    p.add_argument(
        "--target", type=float, default=0.9,
        help="the summary line reports the training time (evaluations and compile excluded) "
        "to the first evaluation at or above this success",
    )  # fmt: skip
    p.add_argument("--log", type=Path)
    p.add_argument("--label", help="the curve's name in --plot (default: the --set flags)")
    p.add_argument("--plot", type=Path, nargs="+", help="draw these logs instead of running")
    p.add_argument("--png", type=Path, default=Path("dppo_curve.png"))
    args = p.parse_args()
    if args.plot:
        plot(args.plot, args.png)
        return
    if args.iterations < 1 or args.every < 1 or args.episodes < 1:
        p.error("--iterations, --every and --episodes must be positive")
    from refine_dp_jax.cli import setup_process

    setup_process()
    run_curve(args)


if __name__ == "__main__":
    main()
