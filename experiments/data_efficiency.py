"""The paper's data-efficiency claim, measured: pre-trained and DPPO-fine-tuned success against
the number of demonstrations.

    python -m experiments.data_efficiency --out runs/data_efficiency \
        [--experiment testbed] [--demos 5 10 20 50] [--seeds 0 1 2] [--set key=value ...]

One LLC and one demonstration set (the largest count, collected once through the frozen LLC;
a smaller count takes that set's first episodes, so the sets are nested). For each count and
seed, a DP is pre-trained with that seed; then the seeds of a count are fine-tuned (DP only,
the experiment's DPPO settings) as the members of one vmapped sweep (``refine_dp_jax.sweep``
with one source run per member). Every pre-trained DP and every fine-tuned member is evaluated
deterministically on the same ``eval_episodes`` initial states (the run's evaluation key).
Writes ``OUT/results.json``, ``OUT/results.md`` and ``OUT/data_efficiency.png``. Every stage
is skipped when already done in OUT, so a killed run resumes by running the command again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import numpy as np

from refine_dp_jax import pipeline
from refine_dp_jax.checkpoint import mark_done, read_done
from refine_dp_jax.cli import experiment_config
from refine_dp_jax.config import ConfigError, replace
from refine_dp_jax.data.demos import Demos, load_demos, save_demos
from refine_dp_jax.logs import label_axes, save_figure, write_json
from refine_dp_jax.sweep import run_sweep


def subset_demos(src: str, dest: str, n: int) -> None:
    """``dest/demos``: the first ``n`` episodes of the demonstration folder ``src``."""
    if read_done(dest, ".") is not None:
        return
    demos = load_demos(src)
    if demos.obs.shape[0] < n:
        raise ConfigError(f"{src} holds {demos.obs.shape[0]} demonstrations, {n} asked for")
    meta = {**demos.meta, "num_episodes": n, "subset_of": os.path.abspath(src)}
    save_demos(Demos(demos.obs[:n], demos.commands[:n], demos.lengths[:n], meta), dest)
    mark_done(dest, {"kept": n, "subset_of": os.path.abspath(src)})


def run(cfg, out: str, counts: list[int], seeds: list[int]) -> dict:
    t0 = time.time()
    base = os.path.join(out, "base")
    base_cfg = replace(cfg, **{"demos.num_episodes": max(counts)})
    parts = pipeline.build(base_cfg)
    pipeline.stage_llc(parts, base)
    pipeline.stage_demos(parts, base)
    result: dict = {}
    for n in counts:
        cfg_n = replace(cfg, **{"demos.num_episodes": n})
        sources = []
        for s in seeds:
            run_dir = os.path.join(out, f"demos_{n}", f"seed_{s}")
            if not os.path.exists(os.path.join(run_dir, "llc")):
                shutil.copytree(os.path.join(base, "llc"), os.path.join(run_dir, "llc"))
            subset_demos(os.path.join(base, "demos"), os.path.join(run_dir, "demos"), n)
            pipeline.stage_pretrain(pipeline.build(replace(cfg_n, seed=s)), run_dir)
            sources.append(run_dir)
        sweep_dir = os.path.join(out, f"demos_{n}")
        if read_done(os.path.join(sweep_dir, "sweep")) is None:
            run_sweep(cfg_n, sweep_dir, seeds, {}, joint=False, sources=sources)
        rows = collect(out, counts)
        print(json.dumps(rows[-1]))
        result = {"experiment_env": cfg.env, "eval_episodes": cfg.eval_episodes,
                  "finetune_iterations": cfg.finetune.iterations, "rows": rows,
                  "seconds": time.time() - t0}  # fmt: skip
        write(out, result)  # after every count: a killed run keeps what it measured
    return result


def collect(out: str, counts: list[int]) -> list[dict]:
    """One row per count whose sweep is done: its seeds' pre-trained and fine-tuned success."""
    rows = []
    for n in counts:
        done = read_done(os.path.join(out, f"demos_{n}", "sweep"))
        if done is None:
            continue
        members = done["members"]
        rows.append({
            "demos": n, "seeds": [m["seed"] for m in members],
            "pretrained": [m["pretrained_eval_success_rate"] for m in members],
            "finetuned": [m["eval_success_rate"] for m in members],
        })  # fmt: skip
    return rows


def _mean_std(xs) -> tuple[float, float]:
    x = 100 * np.asarray(xs, dtype=float)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def write(out: str, result: dict) -> None:
    write_json(os.path.join(out, "results.json"), result)
    lines = [
        f"# Data efficiency on {result['experiment_env']}",
        "",
        f"Deterministic success on the same {result['eval_episodes']} initial states; mean +- "
        f"sample std over seeds (per seed in brackets); fine-tuning: DPPO, DP only, "
        f"{result['finetune_iterations']} iterations.",
        "",
        "| demonstrations | pre-trained DP | DPPO fine-tuned |",
        "| --- | --- | --- |",
    ]
    for r in result["rows"]:
        cells = []
        for k in ("pretrained", "finetuned"):
            m, sd = _mean_std(r[k])
            per = " / ".join(f"{100 * x:.1f}" for x in r[k])
            cells.append(f"{m:.1f} +- {sd:.1f} % ({per})")
        lines.append(f"| {r['demos']} | {cells[0]} | {cells[1]} |")
    lines += ["", "![success against demonstrations](data_efficiency.png)", ""]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    n = [r["demos"] for r in result["rows"]]
    for k, label, color in (("pretrained", "pre-trained DP", "#999"),
                            ("finetuned", "DPPO fine-tuned", "#4c72b0")):  # fmt: skip
        stats = np.array([_mean_std(r[k]) for r in result["rows"]])
        ax.errorbar(n, stats[:, 0], yerr=stats[:, 1], marker="o", capsize=3, label=label,
                    color=color)  # fmt: skip
        for r in result["rows"]:
            ax.scatter([r["demos"]] * len(r[k]), 100 * np.asarray(r[k]), s=8, color=color,
                       alpha=0.5)  # fmt: skip
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(n, [str(x) for x in n])
    label_axes(ax, "demonstrations", "success (%)", (0, 105))
    save_figure(fig, os.path.join(out, "data_efficiency.png"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", default="testbed")
    ap.add_argument("--out", default="runs/data_efficiency")
    ap.add_argument("--demos", type=int, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[], nargs="+", help="key=value overrides")
    args = ap.parse_args(argv)
    if min(args.demos) < 1:
        raise SystemExit(f"--demos must be >= 1, got {args.demos}")
    from refine_dp_jax.cli import setup_process

    setup_process()
    cfg = experiment_config(args.experiment, args.set)
    os.makedirs(args.out, exist_ok=True)
    result = run(cfg, args.out, sorted(set(args.demos)), args.seeds)
    print(f"{os.path.join(args.out, 'results.md')} ({result['seconds'] / 60:.0f} min)")


if __name__ == "__main__":
    main()
