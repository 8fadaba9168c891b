"""Where a standing LLC's falls come from: its fall rate against the largest torso push, and
against the push's direction, on the evaluation episodes of ``refine-dp eval-llc``.

    python -m experiments.llc_falls --out docs/results/llc_falls       # the committed LLC
    python -m experiments.llc_falls --llc DIR --out OUT --episodes 256

Each row is one deterministic evaluation of ``--episodes`` randomized 10 s episodes of the
LLC's own task (``pipeline.evaluate_llc``, the training's commands, the same episode keys for
every row): one row per largest push (``push_force``, directions uniform on the circle), then
one per direction sector at ``--sector-force``: pushes drawn within 45 degrees of the robot's
forward, left, backward and right (the robot starts facing +x: ``start_angle`` and
``start_heading`` 0 in those rows). Everything else as in the LLC's training (payloads,
friction, arm configurations), unless ``--set`` changes it for every row; ``--sectors`` picks
directions and ``--forces`` (possibly none) the any-direction rows, e.g. the forward pushes
without hand payloads:

    python -m experiments.llc_falls --llc DIR --out OUT --forces --sectors forward \
        --set env_overrides.payload_prob=0

Every row also tallies its pushes (``pipeline.evaluate_llc(pushes=True)``): per push-size bin
(10 N) and direction relative to the pelvis heading, how many pushes there were and how many
were followed by a fall within 3 s. The third panel of the plot pools them over all rows:
the chance that one push topples the LLC, against its size and direction.

Writes ``OUT/falls.json`` after every row (a rerun skips the rows it holds for the same LLC,
episodes and ``--set``) and ``OUT/falls.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time

from refine_dp_jax.train.llc_eval import PUSH_SECTOR_CENTRES as SECTORS


def rows_wanted(
    forces: list[float], sector_force: float, sectors: list[str] | None = None
) -> list[tuple[str, dict]]:
    """(name, env overrides) of every evaluation, in order (``sectors``: those directions only,
    default all four)."""
    rows = [(f"push {f:g} N", {"push_force": f}) for f in forces]
    for name, centre in SECTORS.items():
        if sectors is not None and name not in sectors:
            continue
        sector = (centre - math.pi / 4, centre + math.pi / 4)
        over = {"push_force": sector_force, "push_angle": sector, "start_angle": 0.0,
                "start_heading": 0.0}  # fmt: skip
        rows.append((f"{name} push {sector_force:g} N", over))
    return rows


def run(args) -> dict:
    from refine_dp_jax import pipeline
    from refine_dp_jax.cli import experiment_config
    from refine_dp_jax.logs import write_json
    from refine_dp_jax.policy_store import load_llc

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "falls.json")
    ident = {"llc": os.path.normpath(args.llc), "episodes": args.episodes,
             "experiment": args.experiment, "set": list(args.set)}  # fmt: skip
    result = {**ident, "rows": {}}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if all(old.get(k, [] if k == "set" else None) == v for k, v in ident.items()):
            result = old
    base = experiment_config(args.experiment, (f"llc.eval_episodes={args.episodes}", *args.set))
    todo = rows_wanted(args.forces, args.sector_force, args.sectors)
    for i, (name, over) in enumerate(todo):
        if "push_recovery" in result["rows"].get(name, {}):
            continue
        env_over = {**dict(base.env_overrides), **over}
        cfg = dataclasses.replace(base, env_overrides=tuple(env_over.items()))
        parts = pipeline.build(cfg)
        learner = load_llc(pipeline.resolve_path(args.llc), parts)  # as the experiments do
        t = time.perf_counter()
        ev = pipeline.evaluate_llc(parts, learner, variants=False, pushes=True)["llc"]
        row = {"overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in over.items()},
               **ev, "seconds": round(time.perf_counter() - t, 1)}  # fmt: skip
        result["rows"][name] = row
        print(f"[{i + 1}/{len(todo)}] {name}: falls {100 * ev['fall_rate']:.1f} % "
              f"({row['seconds']:.0f} s)", flush=True)  # fmt: skip
        write_json(path, result)
    plot(result, args.forces, args.sector_force, os.path.join(args.out, "falls.png"))
    return result


def plot(result: dict, forces: list[float], sector_force: float, png: str) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from refine_dp_jax.logs import label_axes, save_figure

    rows, n = result["rows"], result["episodes"]
    se = lambda p: 100 * math.sqrt(max(p * (1 - p), 1e-12) / n)  # noqa: E731
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 3.8))
    got = [(f, rows[f"push {f:g} N"]["fall_rate"]) for f in forces if f"push {f:g} N" in rows]
    if got:
        xs, ps = zip(*got, strict=True)
        a.errorbar(xs, [100 * p for p in ps], yerr=[se(p) for p in ps], marker="o", capsize=3,
                   label="any direction")  # fmt: skip
        a.axhline(2.0, color="gray", ls="--", label="target 2 %")
        label_axes(a, "largest push on the torso (N, 0.15 s)", "falls in 10 s episodes (%)")
    else:
        a.set_axis_off()
    names = [s for s in SECTORS if f"{s} push {sector_force:g} N" in rows]
    if names:
        ps = [rows[f"{s} push {sector_force:g} N"]["fall_rate"] for s in names]
        b.bar(names, [100 * p for p in ps], yerr=[se(p) for p in ps], capsize=3,
              label=f"pushes up to {sector_force:g} N")  # fmt: skip
        b.axhline(2.0, color="gray", ls="--", label="target 2 %")
        label_axes(b, "push direction (within 45 degrees)", "falls in 10 s episodes (%)")
    else:
        b.set_axis_off()
    pooled = pool_pushes(rows)
    if pooled is not None:
        w = pooled["bin_width"]
        for name in SECTORS:
            pu, fa = (np.asarray(pooled[name][k], float) for k in ("pushes", "falls"))
            ok = pu >= 10  # bins with at least 10 pushes
            x = np.asarray(pooled["bins"])[ok] + 0.5 * w
            p_ = fa[ok] / pu[ok]
            c.errorbar(x, 100 * p_, yerr=100 * np.sqrt(np.maximum(p_ * (1 - p_), 1e-12) / pu[ok]),
                       marker="o", capsize=3, label=name)  # fmt: skip
        label_axes(c, f"push size (N, {w:g} N bins, 0.15 s)", "falls within 3 s of the push (%)")
        c.set_title("one push, all rows pooled", fontsize=9)
    else:
        c.set_axis_off()
    fig.suptitle(f"standing LLC falls, {n} deterministic episodes each (bars: one standard error)")
    save_figure(fig, png)


def pool_pushes(rows: dict) -> dict | None:
    """The rows' ``push_recovery`` tallies summed (bins padded to the longest), or None."""
    tables = [r["push_recovery"] for r in rows.values() if "push_recovery" in r]
    if not tables:
        return None
    longest = max(tables, key=lambda t: len(t["bins"]))
    out = {"bins": longest["bins"], "bin_width": longest["bin_width"]}
    n = len(longest["bins"])
    for name in SECTORS:
        out[name] = {
            k: [sum(t[name][k][i] for t in tables if i < len(t[name][k])) for i in range(n)]
            for k in ("pushes", "falls")
        }
    return out


def main() -> None:
    from refine_dp_jax.cli import setup_process

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--llc", default="refine_dp_jax/assets/llc/humanoid_llc_stand",
                   help="a stored LLC (refine-dp export-llc)")  # fmt: skip
    p.add_argument("--experiment", default="humanoid_llc_stand")
    p.add_argument("--out", default="runs/llc_falls")
    p.add_argument("--episodes", type=int, default=256)
    p.add_argument("--forces", type=float, nargs="*", default=[0.0, 20.0, 40.0, 60.0, 80.0])
    p.add_argument("--sector-force", type=float, default=60.0)
    p.add_argument("--sectors", nargs="*", choices=list(SECTORS), default=None,
                   help="push directions to evaluate (default: all four)")  # fmt: skip
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides for every row (env_overrides.payload_prob=0)")  # fmt: skip
    args = p.parse_args()
    if args.episodes < 1 or any(f < 0 for f in args.forces) or args.sector_force < 0:
        p.error("--episodes >= 1 and push forces >= 0")
    setup_process()
    run(args)


if __name__ == "__main__":
    main()
