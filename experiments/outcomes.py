"""Why a run's policies fail: every evaluation episode of a finished run (the same initial
states as its ``eval`` stage) classified by how it ended, and for the episodes that ran out of
time, which parts of the task's success test were unmet at the end and how far they got.

    python -m experiments.outcomes --experiment humanoid_table_place --out runs/table_place

Per policy (pre-trained DP, DP only, joint, MLP + PPO; those the run has): the shares that
succeeded, fell, lost the object, exploded, ran out of time; for the timed-out episodes, the
share missing each part of the success test at the end (``TaskSpec.condition_parts``; for
the table place: in the disc, resting on the table, still, released), their most frequent
combinations of missed parts, the share whose object ever rose 2 cm / ever entered the goal
disc (tasks with a goal), the quartiles of the object's highest rise and of the longest time
the success test held (the table lift's must hold 1 s). A Markdown table on
stdout; everything in ``--json`` (default ``OUT/eval/outcomes.json``). ``--env
push_force=0``: the same policies with an env field changed (what-if; written to
``outcomes_push_force=0.json``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys


def record_fn(env):
    """record(states [B]) -> per-step diagnostics of a humanoid task (``make_qpos_rollout``)."""
    import jax
    import jax.numpy as jnp

    from refine_dp_jax.train.hierarchy import episode_ending

    spec = env.task_spec
    parts_of = spec.condition_parts or (lambda e, f, t: {"condition": spec.condition(e, f, t)})

    def one(s):
        f = env.features(s.data)
        parts = {k: v.astype(jnp.float32) for k, v in parts_of(env, f, s.task).items()}
        return {
            **episode_ending(s), "parts": parts,
            "obj_z": f.obj_pos[2], "goal_offset": f.obj_pos - s.task.goal,
            "hold": s.task.hold,  # s the success test has held (tasks that need it held)
        }  # fmt: skip

    return jax.vmap(one)


def classify(rec: dict, goal_radius: float) -> dict:
    """Outcome shares and timed-out diagnostics from ``record_fn``'s arrays [frames, B] (how
    episodes end: ``hierarchy.episode_ending``, the evaluation's rule; the goal-disc figures
    for tasks whose success test has an ``in_disc`` part)."""
    import numpy as np

    from refine_dp_jax.train.hierarchy import OUTCOMES

    done = sum(rec[k] for k in OUTCOMES) > 0.5
    n = done.shape[1]
    ended = done.any(0)
    end = np.where(ended, np.argmax(done, 0), done.shape[0] - 1)  # the first episode's end
    at_end = lambda x: x[end, np.arange(n)]  # noqa: E731
    success, fell, lost, nonfinite, timeout = (at_end(rec[k]) > 0.5 for k in OUTCOMES)
    frames = np.arange(done.shape[0])[:, None] <= end[None]  # the first episode's frames
    rise = np.where(frames, rec["obj_z"] - rec["obj_z"][:1], -np.inf).max(0)
    share = lambda m: float(m.mean())  # noqa: E731
    quart = lambda x: np.round(np.quantile(x, (0.25, 0.5, 0.75)), 3).tolist()  # noqa: E731
    out = {
        "episodes": n, "success": share(success), "fell": share(fell), "lost": share(lost),
        "nonfinite": share(nonfinite), "timeout": share(timeout), "unfinished": share(~ended),
    }  # fmt: skip
    if timeout.any():
        missed = {k: at_end(v)[timeout] < 0.5 for k, v in rec["parts"].items()}
        combos = collections.Counter(
            " + ".join(k for k in missed if missed[k][i]) or "none (hold time)"
            for i in range(int(timeout.sum()))
        )
        t = {
            "episodes": int(timeout.sum()),
            "missed_at_end": {k: share(v) for k, v in missed.items()},
            "missed_combinations": dict(combos.most_common()),
            "object_rose_2cm": share(rise[timeout] > 0.02),
            "top_rise_quartiles_m": quart(rise[timeout]),
            # the longest stretch the success test held (s; tasks with a hold time)
            "longest_hold_quartiles_s": quart(np.where(frames, rec["hold"], 0.0).max(0)[timeout]),
        }  # fmt: skip
        if "in_disc" in rec["parts"]:
            dist = np.linalg.norm(rec["goal_offset"][..., :2], axis=-1)
            closest = np.where(frames, dist, np.inf).min(0)
            t["object_entered_goal_disc"] = share(closest[timeout] < goal_radius)
            t["end_goal_distance_quartiles_m"] = quart(at_end(dist)[timeout])
            # where the object was left, from the goal (world x, y, z)
            off = at_end(rec["goal_offset"])[timeout]
            t["end_goal_offset_quartiles_m"] = {a: quart(off[:, i]) for i, a in enumerate("xyz")}
            # the object's height at the end against the goal's (a goal on a table: on the
            # table, below its top (over an edge, on the floor), above it (held))
            t["end_height_vs_goal"] = {"level": share(np.abs(off[:, 2]) <= 0.02),
                                       "below": share(off[:, 2] < -0.02),
                                       "above": share(off[:, 2] > 0.02)}  # fmt: skip
        out["timed_out"] = t
    return out


def measure(experiment: str, out: str, sets=(), episodes: int | None = None,
            policies=None, env_sets: dict | None = None) -> dict:  # fmt: skip
    import jax
    import numpy as np

    from refine_dp_jax import pipeline
    from refine_dp_jax.cli import experiment_config
    from refine_dp_jax.config import ConfigError
    from refine_dp_jax.evaluate import make_trajectory_recorder
    from refine_dp_jax.train.finetune import dp_plan_fn

    cfg = experiment_config(experiment, tuple(sets))
    if not os.path.exists(os.path.join(out, "config.json")):
        raise SystemExit(f"outcomes: {out} holds no config.json: not a run directory")
    try:  # the run's own --experiment and --set
        pipeline.refuse_other_config(cfg, out)
    except ConfigError as e:
        raise SystemExit(f"outcomes: {e}") from None
    parts = pipeline.build(cfg)
    env, d = parts.env, cfg.diffusion
    if env_sets:  # what-if: the same policies in an env with other fields (e.g. no pushes)
        from refine_dp_jax.envs import make as make_env

        env = make_env(cfg.env, **{**dict(cfg.env_overrides), **env_sets})
    if not hasattr(env, "task_spec"):
        raise SystemExit(f"outcomes: {cfg.env} is not a humanoid task")
    n = episodes or cfg.eval_episodes
    key = pipeline.stage_key(parts, "eval")  # the evaluation's initial states
    done = lambda s: pipeline.read_done(os.path.join(out, s)) is not None  # noqa: E731
    names = [p for p in ("pretrained", "finetune_dp", "finetune_joint", "mlp_ppo")
             if (p == "pretrained" and done("dp")) or done(p)]  # fmt: skip
    names = [p for p in names if not policies or p in policies]
    if not names:
        raise SystemExit(f"outcomes: no finished policy in {out}")
    recorder = lambda plan: jax.jit(make_trajectory_recorder(  # noqa: E731
        env, parts.llc_ppo, plan, d.obs_history, d.exec_steps, cfg.hold, n,
        cfg.task_curriculum, record_fn(env)))  # fmt: skip
    dp_rec = recorder(dp_plan_fn(parts.dppo, d.ft_steps))
    results = {}
    for name in names:
        if name == "mlp_ppo":
            plan, params = pipeline.load_mlp_policy(parts, out)
            llc = pipeline.load_llc(parts, out)
            rec = recorder(plan)(params, llc, key)
        else:
            planner, normalizer, llc = pipeline.load_policy(parts, out, name)
            rec = dp_rec((planner, normalizer), llc, key)
        results[name] = classify(jax.tree.map(np.asarray, rec), env.cfg.goal_radius)
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr)
    return {"experiment": experiment, "out": out, "episodes": n, "env_sets": env_sets or {},
            "curriculum": cfg.task_curriculum, "policies": results}  # fmt: skip


def table(r: dict) -> str:
    """Markdown: one row per policy."""
    pols = r["policies"]
    parts = sorted(
        {k for p in pols.values() for k in p.get("timed_out", {}).get("missed_at_end", {})}
    )
    head = ["policy", "success", "fell", "object lost", "timed out"]
    head += [f"timed out, {k} missed" for k in parts] + ["timed out, most frequent miss"]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    pct = lambda x: f"{100 * x:.1f} %"  # noqa: E731
    for name, p in pols.items():
        t = p.get("timed_out", {})
        miss = t.get("missed_at_end", {})
        combos = t.get("missed_combinations", {})
        top = next(iter(combos.items()), None)
        cells = [name, pct(p["success"]), pct(p["fell"]), pct(p["lost"]), pct(p["timeout"])]
        cells += [pct(miss[k] * p["timeout"]) if k in miss else "-" for k in parts]
        cells += [f"{top[0]} ({top[1]} of {t['episodes']})" if top else "-"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", required=True)
    p.add_argument("--out", required=True, help="a finished run's directory")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="the run's own --set overrides (its config)")  # fmt: skip
    p.add_argument("--episodes", type=int, help="default: the run's eval_episodes")
    p.add_argument("--policies", nargs="*", help="default: every finished one")
    p.add_argument("--env", nargs="*", default=[], metavar="FIELD=JSON",
                   help="what-if: env fields changed for this measurement only (e.g. "
                   "push_force=0); the policies are the run's")  # fmt: skip
    p.add_argument("--json", help="default: OUT/eval/outcomes.json")
    args = p.parse_args(argv)
    from refine_dp_jax.logs import write_json

    env_sets = {k: json.loads(v) for k, v in (a.split("=", 1) for a in args.env)}
    r = measure(args.experiment, args.out, args.set, args.episodes, args.policies, env_sets)
    tag = "".join(f"_{k}={v}" for k, v in env_sets.items())  # a what-if keeps its own file
    path = args.json or os.path.join(args.out, "eval", f"outcomes{tag}.json")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_json(path, r)
    print(table(r))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
