"""Whether a push left the standing LLC anything to catch: the robot's capture point against
its feet's support polygon around every sagittal push of an evaluation (forward and backward
pushes of up to 60 N, within 45 degrees of the robot's heading; deterministic policy, the
training's commands, 512 episodes a direction). Reproduces the capture-point section of the
README next to this folder:

    python docs/results/llc_falls/push_recovery/capture.py LLC_DIR OUT [KEY=VALUE ...]

Per step: the capture point (``HumanoidEnv.capture_point``: centre of mass plus its velocity
over the pendulum frequency, the episode's masses) and the six contact spheres of the soles
(toe corners and heel of each foot). The margin is the capture point's signed distance
outside the convex hull of the spheres' ground positions (negative: inside, so a centre of
pressure exists that brings a linear inverted pendulum to rest without a step; positive:
outside, no such centre of pressure exists on these feet). Writes ``OUT/capture.json``
(``summary``: per direction, push-size bin and outcome the pushes and their median margins
before the push, at its end and at most within 1 s; falls per margin at the push's end; the
capture point's shift over a push per newton. ``pushes``: every push) and
``OUT/capture.png`` (margin against time after the push, falls against recoveries).
``CAPTURE_EPISODES=N`` in the environment: N episodes a direction.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import ConvexHull

from refine_dp_jax.cli import experiment_config, setup_process

EPISODES = int(os.environ.get("CAPTURE_EPISODES", 512))
WINDOW = 3.0  # s after a push's start in which a fall counts as the push's
AFTER = 1.0  # s of margin curve after a push's start
BINS = ((40.0, 50.0), (50.0, 60.0))  # N, the push sizes that topple the LLC


def margin(cp: np.ndarray, pts: np.ndarray) -> float:
    """Signed distance (m) of point ``cp`` [2] outside the convex hull of ``pts`` [n, 2]:
    the largest of the hull facets' signed plane distances (exact inside and off an edge,
    a lower bound off a corner)."""
    eq = ConvexHull(pts).equations  # [k, 3]: normal . x + offset <= 0 inside
    return float(np.max(eq[:, :2] @ cp + eq[:, 2]))


def collect(folder: str, sector: str, sets: tuple[str, ...]) -> dict:
    from experiments.llc_falls import rows_wanted
    from refine_dp_jax import pipeline
    from refine_dp_jax.policy_store import load_llc
    from refine_dp_jax.train.llc_eval import make_llc_eval

    ((_, over),) = rows_wanted([], 60.0, [sector])
    base = experiment_config("humanoid_llc_stand", (f"llc.eval_episodes={EPISODES}", *sets))
    cfg = dataclasses.replace(base, env_overrides=tuple({**dict(base.env_overrides),
                                                         **over}.items()))  # fmt: skip
    parts = pipeline.build(cfg)
    learner = load_llc(pipeline.resolve_path(folder), parts)
    env, ppo = parts.env, parts.llc_ppo
    spheres = np.array([env.mj_model.geom(f"{side}_foot_c{i}").id for side in ("left", "right")
                        for i in range(env.params.foot_points)])  # fmt: skip

    def record(s):
        cp = jax.vmap(lambda t, d: env.capture_point(env._model(t), d))(s.task, s.data)
        height = s.data.subtree_com[:, env._pelvis, 2] - jnp.mean(
            s.data.site_xpos[:, env._soles, 2], axis=1
        )  # centre of mass above the soles
        return {"cp": cp, "pts": s.data.geom_xpos[:, spheres, :2], "height": height}

    run = make_llc_eval(env, EPISODES, cfg.llc.command_hold_steps,
                        lambda p, obs: ppo.act(p, obs, jax.random.PRNGKey(0), True)[0],
                        cfg.llc.velocity_hold_steps, record_pushes=True,
                        extra=record)  # fmt: skip
    outs = run(learner, jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 7))
    mass = float(np.sum(env.mj_model.body_mass[env._robot_bodies]))
    return {k: np.asarray(v) for k, v in outs.items()} | {"dt": env.dt, "mass": mass}


def analyse(outs: dict) -> list[dict]:
    """One entry per push of ``push_outcomes`` (known outcome, standing robot) but the first
    step's: size (N), direction (heading frame), fell, margins (m) before it, at its end, at
    most within ``AFTER`` s and the curve over ``AFTER`` s."""
    from refine_dp_jax.train.llc_eval import push_outcomes

    dt, t_len = outs["dt"], outs["push"].shape[0]
    pushes = push_outcomes(outs, dt, WINDOW)
    on = np.linalg.norm(outs["push"], axis=-1) > 0.0
    fell = outs["fell"] > 0.5
    end_step = np.where(fell.any(0), fell.argmax(0), t_len)  # [B]: the fall, or the end
    after = int(round(AFTER / dt))
    rows = []
    for k, (t, b) in enumerate(zip(pushes["step"], pushes["episode"], strict=True)):
        if t == 0:
            continue
        length = int(on[t:, b].argmin())  # steps the push lasts
        ts = range(t - 1, min(t + after, end_step[b]))
        m = [margin(outs["cp"][i, b], outs["pts"][i, b]) for i in ts]
        rows.append({"force": float(pushes["magnitude"][k]), "angle": float(pushes["angle"][k]),
                     "fell": bool(pushes["fell"][k]), "before": m[0],
                     "end": m[min(length, len(m) - 1)], "max": max(m[1:] or m),
                     "curve": m[1:]})  # fmt: skip
    return rows


def summary(rows: list[dict]) -> dict:
    """Per push-size bin and outcome: pushes, median margins, shares outside the feet; falls
    per margin at the push's end (all pushes of 40 N or more); the capture point's shift
    over the push against its size (least squares, cm per N)."""
    out = {}
    for lo, hi in BINS:
        for fell in (True, False):
            sel = [r for r in rows if lo <= r["force"] < hi and r["fell"] == fell]
            if not sel:
                continue
            key = f"{lo:g}-{hi:g} N, {'fell' if fell else 'recovered'}"
            col = {k: np.array([r[k] for r in sel]) for k in ("before", "end", "max")}
            out[key] = {"pushes": len(sel),
                        **{f"{k}_median_cm": 100 * float(np.median(v)) for k, v in col.items()},
                        "outside_at_end": float(np.mean(col["end"] > 0)),
                        "outside_within_1s": float(np.mean(col["max"] > 0))}  # fmt: skip
    hard = [r for r in rows if r["force"] >= BINS[0][0]]
    end = np.array([100 * r["end"] for r in hard])
    fell = np.array([r["fell"] for r in hard], bool)
    bands = ((-99, -2), (-2, -1), (-1, 0), (0, 1), (1, 99))
    out["falls_by_margin_at_end_cm"] = {
        f"{lo:g} to {hi:g}": [int(np.sum(fell & (end >= lo) & (end < hi))),
                              int(np.sum((end >= lo) & (end < hi)))]
        for lo, hi in bands}  # fmt: skip
    force = np.array([r["force"] for r in rows])
    shift = np.array([100 * (r["end"] - r["before"]) for r in rows])
    slope, icpt = np.polyfit(force, shift, 1)
    out["shift_over_push_cm"] = {
        "per_N": float(slope),
        "intercept": float(icpt),
        "at_55_N": float(slope * 55 + icpt),
        "pushes": len(rows),
    }
    return out


def write(record: dict, path: str) -> None:
    """``record`` as JSON, floats to 4 decimals (0.1 mm, 0.1 mN), one push per line."""

    def rounded(x):
        if isinstance(x, float):
            return round(x, 4)
        if isinstance(x, dict):
            return {k: rounded(v) for k, v in x.items()}
        return [rounded(v) for v in x] if isinstance(x, (list, tuple)) else x

    record = rounded(record)
    pushes = record.pop("pushes")
    text = json.dumps(record, indent=1)[:-2] + ',\n "pushes": {\n'
    text += ",\n".join(f"  {json.dumps(s)}: [\n" + ",\n".join("   " + json.dumps(r) for r in rows)
                        + "\n  ]" for s, rows in pushes.items())  # fmt: skip
    with open(path, "w") as f:
        f.write(text + "\n }\n}\n")


def plot(results: dict, dt: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from refine_dp_jax.logs import label_axes, save_figure

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (sector, rows) in zip(axes[0], results.items(), strict=True):
        for fell, colour in ((False, "tab:blue"), (True, "tab:red")):
            sel = [r["curve"] for r in rows if r["force"] >= 50.0 and r["fell"] == fell]
            for c in sel:
                ax.plot(dt * np.arange(1, len(c) + 1), 100 * np.array(c), color=colour,
                        alpha=0.25, lw=0.8)  # fmt: skip
            ax.plot([], [], color=colour, label=f"{'fell' if fell else 'recovered'} ({len(sel)})")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_ylim(-12.0, 15.0)
        ax.axvspan(0.0, 0.16, color="0.9", zorder=0)
        ax.set_title(f"{sector} pushes of 50-60 N")
        label_axes(ax, "s after the push's start", "capture point outside the feet (cm)")
    save_figure(fig, path)


def main() -> None:
    setup_process()
    folder, out_dir, sets = sys.argv[1], sys.argv[2], tuple(sys.argv[3:])
    os.makedirs(out_dir, exist_ok=True)
    results, dt, body = {}, 0.02, {}
    for sector in ("forward", "backward"):
        outs = collect(folder, sector, sets)
        dt = outs["dt"]
        alive = outs["alive"] > 0.5
        body = {"mass_kg": outs["mass"], "com_height_median_m": float(np.median(
            outs["height"][alive]))}  # fmt: skip
        # the pushes within 45 degrees of this direction in the pelvis heading frame
        off = np.pi if sector == "backward" else 0.0
        near = lambda r: abs(np.angle(np.exp(1j * (r["angle"] - off)))) <= np.pi / 4  # noqa: E731
        results[sector] = [r for r in analyse(outs) if near(r)]
        print(sector, json.dumps(summary(results[sector]), indent=1), flush=True)
    pushes = {s: [{k: v for k, v in r.items() if k != "curve"} for r in rows]
              for s, rows in results.items()}  # fmt: skip
    write({"llc": folder, "set": sets, "episodes": EPISODES, **body,
           "summary": {s: summary(r) for s, r in results.items()}, "pushes": pushes},
          os.path.join(out_dir, "capture.json"))  # fmt: skip
    plot(results, dt, os.path.join(out_dir, "capture.png"))


if __name__ == "__main__":
    main()
