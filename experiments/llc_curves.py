"""Learning curves of a walking LLC run: falls, episode length, footstep and velocity
tracking, forward progress and the command curriculum's level against the iteration, and
the first 10 % of the run against the last 10 %.

    python -m experiments.llc_curves RUN/llc --out docs/results/walking

Writes ``curves.png``, ``first_last.json`` and ``first_last.md`` into ``--out`` and copies
``metrics.jsonl`` there. Falls are counted per robot-minute (terminations per environment and
iteration over the iteration's simulated time): per-episode rates are biased early in a run,
when every environment starts at once and only falls can end an episode before the time
limit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np

# (metric, label): what the README compares
MEASURES = (
    ("falls_per_min", "falls per robot-minute"),
    ("episode_seconds", "mean length of the episodes ended (s)"),
    ("foot_err_moving", "footstep error, moving commands (m)"),
    ("vel_err_moving", "velocity error, moving commands (m/s)"),
    ("progress_ratio", "forward progress (speed along command / commanded)"),
    ("speed_scale", "command curriculum level (x velocity range)"),
    ("hand_err", "hand position error (m)"),
    ("reward", "LLC reward per step"),
)


def load(llc_dir: str, dt: float, rollout_steps: int) -> list[dict]:
    """metrics.jsonl rows with ``falls_per_min`` added (terminations per env per iteration /
    the iteration's minutes of simulated time per environment)."""
    rows = [json.loads(line) for line in open(os.path.join(llc_dir, "metrics.jsonl"))]
    minutes = rollout_steps * dt / 60.0
    for r in rows:
        r["falls_per_min"] = r["terminations"] / minutes
    return rows


# measures of moving commands: left out for a run that never had one (a standing LLC)
WALKING = ("foot_err_moving", "vel_err_moving", "progress_ratio", "speed_scale")


def walks(rows: list[dict]) -> bool:
    """Whether the run had moving commands (a walking LLC)."""
    return any(r.get("moving_share", 0.0) > 0 for r in rows)


def measures(rows: list[dict]) -> tuple[tuple[str, str], ...]:
    walking = walks(rows)
    return tuple((k, label) for k, label in MEASURES if walking or k not in WALKING)


def first_last(rows: list[dict], share: float = 0.1) -> dict:
    n = max(1, int(round(share * len(rows))))
    out = {"iterations": len(rows), "window": n}
    for key, _ in measures(rows):
        vals = np.array([r[key] for r in rows if key in r], float)
        if len(vals):
            out[key] = {"first": float(vals[:n].mean()), "last": float(vals[-n:].mean())}
    return out


def plot(rows: list[dict], path: str, title: str) -> None:
    from refine_dp_jax.logs import plot_curves

    shown = measures(rows)
    plot_curves(rows, [k for k, _ in shown], path, title, labels=dict(shown),
                columns=min(4, len(shown)), smooth=True)  # fmt: skip


def markdown(summary: dict) -> str:
    head = f"First and last {summary['window']} of {summary['iterations']} iterations (means):"
    lines = [head, "", "| measure | first 10 % | last 10 % | change |", "| --- | --- | --- | --- |"]
    for key, label in MEASURES:
        if key in summary:
            a, b = summary[key]["first"], summary[key]["last"]
            change = f"{100 * (b - a) / abs(a):+.0f} %" if abs(a) > 1e-9 else "n/a"
            lines.append(f"| {label} | {a:.4g} | {b:.4g} | {change} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("llc_dir", help="a run's stage folder, RUN/llc")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", help="default: walking LLC / standing LLC, from its commands")
    a = ap.parse_args(argv)
    cfg = json.load(open(os.path.join(os.path.dirname(os.path.abspath(a.llc_dir)), "config.json")))
    c = cfg["config"]
    env = dict(c.get("env_overrides") or [])
    from refine_dp_jax import envs
    from refine_dp_jax.logs import write_json

    dt = envs.make(c["env"], **env).dt
    rows = load(a.llc_dir, dt, c["llc"]["rollout_steps"])
    os.makedirs(a.out, exist_ok=True)
    summary = first_last(rows)
    title = a.title or ("walking LLC" if walks(rows) else "standing LLC")
    plot(rows, os.path.join(a.out, "curves.png"), title)
    write_json(os.path.join(a.out, "first_last.json"), summary)
    with open(os.path.join(a.out, "first_last.md"), "w") as f:
        f.write(markdown(summary))
    shutil.copy(os.path.join(a.llc_dir, "metrics.jsonl"), os.path.join(a.out, "metrics.jsonl"))
    print(markdown(summary))
    return summary


if __name__ == "__main__":
    main()
