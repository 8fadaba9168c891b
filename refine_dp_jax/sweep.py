"""Sweeps as one compiled program: S seeds x H values of dynamic DPPO hyperparameters are a
leading vmap axis of the fine-tuning state, not S*H recompiles.

Dynamic (sweepable) fields are those of ``DPPOHyper``: actor_lr, critic_lr, clip_eps,
clip_eps_base, gamma, gae_lambda, gamma_denoise, vf_coef, sample_std_floor, logprob_std_floor.
Member m of the sweep equals the single run ``finetune`` with ``seed`` and the hyperparameter
values of member m (tested).

After training, every member (and the pre-trained DP they all start from) is evaluated
deterministically on ``eval_episodes`` first episodes from ONE set of initial states (the run's
own evaluation key), vmapped over members; ``<sweep>/results.json`` and ``results.md`` group the
members by grid point (mean and sample std across seeds) and ``success.png`` draws each grid
point's training success against the iteration, mean with a band of +-1 std across seeds.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from refine_dp_jax.checkpoint import mark_done, read_done
from refine_dp_jax.config import ConfigError, replace
from refine_dp_jax.logs import label_axes, save_figure, write_json
from refine_dp_jax.pipeline import (
    ExperimentConfig,
    Parts,
    build,
    finetune_state,
    finetune_step,
    llc_steps_per_iteration,
    make_evaluator,
    stage_dir,
    stage_key,
)
from refine_dp_jax.train.dppo import DPPOHyper
from refine_dp_jax.train.finetune import dp_plan_fn
from refine_dp_jax.train.loop import guard_nonfinite, run_loop

SWEEPABLE = tuple(f.name for f in dataclasses.fields(DPPOHyper))


def sweep_members(
    seeds: list[int], grid: dict[str, list[float]]
) -> list[tuple[int, dict[str, float]]]:
    """The cross product seeds x grid values, in a fixed order."""
    for name in grid:
        if name not in SWEEPABLE:
            raise ConfigError(
                f"cannot sweep {name!r} in one program: only {', '.join(SWEEPABLE)} are dynamic"
            )
    names = sorted(grid)
    combos = list(itertools.product(*(grid[n] for n in names))) or [()]
    return [(s, dict(zip(names, c, strict=True))) for s in seeds for c in combos]


def member_config(cfg: ExperimentConfig, seed: int, values: dict[str, float]) -> ExperimentConfig:
    return replace(cfg, seed=seed, **{f"dppo.{k}": v for k, v in values.items()})


def run_sweep(
    cfg: ExperimentConfig,
    out: str,
    seeds: list[int],
    grid: dict[str, list[float]],
    joint: bool | None = None,
    name: str = "sweep",
    minutes: float | None = None,
    sources: list[str] | None = None,
) -> dict:
    """Fine-tunes every member from the run's pre-trained DP and LLC, in one vmapped program.

    ``sources``: one run directory per member to take its pre-trained DP and LLC from (e.g.
    DPs pre-trained with different seeds or demonstrations); default: ``out`` for all. Each
    distinct source's pre-trained DP is evaluated too (``pretrained_eval_success_rate`` per
    member, and their mean at the top level).

    ``minutes``: a wall-clock budget for training (compile included): training stops after the
    iteration that ends past it, with a checkpoint, and the members are evaluated as they are
    then; the results say how many iterations that was (``iterations_done``), and the sweep is
    marked done only once all ``finetune.iterations`` ran (a rerun resumes and re-evaluates)."""
    members = sweep_members(seeds, grid)
    sources = [out] * len(members) if sources is None else list(sources)
    if len(sources) != len(members):
        raise ConfigError(f"sweep: {len(sources)} sources for {len(members)} members")
    for src in dict.fromkeys(sources):
        for need in ("llc", "dp"):
            if read_done(os.path.join(src, need)) is None:
                raise FileNotFoundError(f"{src}/{need} is not done: run the pipeline stages first")
    joint = cfg.finetune.joint if joint is None else joint
    parts: Parts = build(cfg)
    states = [
        finetune_state(parts, member_config(cfg, s, v), src, joint)
        for (s, v), src in zip(members, sources, strict=True)
    ]
    state = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    step = jax.vmap(guard_nonfinite(finetune_step(parts, cfg, joint)))

    def flat_step(state):
        state, metrics = step(state)
        out_m = {}
        for k, v in metrics.items():
            for i in range(len(members)):
                out_m[f"m{i}/{k}"] = v[i]
        return state, out_m

    path = stage_dir(out, name)
    t0 = time.time()
    deadline = None if minutes is None else t0 + 60.0 * minutes
    timing: dict = {}
    write_json(os.path.join(path, "members.json"),
               [{"member": i, "seed": s, **v} for i, (s, v) in enumerate(members)])  # fmt: skip
    state, _ = run_loop(
        path, state, flat_step, cfg.finetune.iterations, cfg.ckpt_every,
        f"sweep: {len(members)} members in one program",
        plot_keys=[f"m{i}/dp/success_rate" for i in range(min(6, len(members)))], mesh=None,
        deadline=deadline, timing=timing,
    )  # fmt: skip
    from refine_dp_jax.logs import read_jsonl

    rows = read_jsonl(os.path.join(path, "metrics.jsonl"))
    curves = [[r[f"m{i}/dp/success_rate"] for r in rows] for i in range(len(members))]
    distinct = list(dict.fromkeys(sources))
    first = [states[sources.index(src)] for src in distinct]  # one start per source
    final, pre = evaluate_members(parts, first, state)
    pre_of = [pre[distinct.index(src)] for src in sources]
    result = {
        "members": [
            {
                "member": i,
                "seed": s,
                **v,
                "success_rate": float(np.mean(curves[i][-3:])),  # training, last 3 iterations
                "eval_success_rate": final[i],
                "pretrained_eval_success_rate": pre_of[i],
                **({"source": sources[i]} if len(distinct) > 1 else {}),
            }
            for i, (s, v) in enumerate(members)
        ],  # fmt: skip
        "pretrained_eval_success_rate": float(np.mean(pre)),
        "eval_episodes": cfg.eval_episodes,
        "grid_points": group_members(members, final, curves),
        "seconds": time.time() - t0,
        "iterations_done": len(rows),
        "iterations": cfg.finetune.iterations,
        **throughput(cfg, len(members), timing),
        "device": f"{jax.devices()[0].device_kind} x {jax.device_count()}",
    }
    write_results(path, result, cfg)
    if len(rows) >= cfg.finetune.iterations:
        mark_done(path, result)
    return {"state": state, **result}


def throughput(cfg: ExperimentConfig, n_members: int, timing: dict) -> dict:
    """Compile seconds and steady speed of this call's training iterations (the median
    iteration; LLC steps count every member's environments)."""
    its = timing.get("iteration_s") or []
    if not its:
        return {"compile_s": timing.get("compile_s", 0.0)}
    per_it = float(np.median(its))
    f = cfg.finetune
    return {
        "compile_s": timing["compile_s"],
        "seconds_per_iteration": per_it,
        "llc_steps_per_s": n_members * llc_steps_per_iteration(cfg) / per_it,
        "decisions_per_s": n_members * f.num_envs * f.decisions / per_it,
    }


def evaluate_members(parts: Parts, starts: list, state) -> tuple[list[float], list[float]]:
    """Deterministic success of every member of the stacked ``state`` and of each pre-trained
    DP (``starts``: initial member states, one per distinct pre-trained DP), on the same
    ``eval_episodes`` initial states, in one compiled evaluation."""
    cfg = parts.cfg
    ev = make_evaluator(parts, dp_plan_fn(parts.dppo, cfg.diffusion.ft_steps), cfg.eval_episodes)
    key = stage_key(parts, "eval")  # the run's own evaluation: the same initial states

    def one(planner, normalizer, llc):
        return ev((planner, normalizer), llc, key, cfg.task_curriculum)["success_rate"]

    # the pre-trained DPs as more members: one compiled evaluation for all of them
    trained = (state.planner, state.normalizer, state.llc)
    firsts = [(s.planner, s.normalizer, s.llc) for s in starts]
    pre = jax.tree.map(lambda *xs: jnp.stack(xs), *firsts)
    both = jax.tree.map(lambda x, y: jnp.concatenate([x, y]), trained, pre)
    rates = [float(x) for x in np.asarray(jax.jit(jax.vmap(one))(*both))]
    m = len(rates) - len(starts)
    return rates[:m], rates[m:]


def group_members(
    members: list[tuple[int, dict[str, float]]], final: list[float], curves: list[list[float]]
) -> list[dict]:
    """Members grouped by grid point (their hyperparameter values), in first-seen order: the
    seeds, each seed's evaluated success, their mean and sample std (0 for one seed), and the
    training-success curve's mean and std across seeds per iteration."""
    groups: dict[tuple, list[int]] = {}
    for i, (_, values) in enumerate(members):
        groups.setdefault(tuple(sorted(values.items())), []).append(i)
    out = []
    for key, idx in groups.items():
        ev = np.array([final[i] for i in idx])
        cv = np.array([curves[i] for i in idx])
        ddof = 1 if len(idx) > 1 else 0
        out.append({
            "values": dict(key), "seeds": [members[i][0] for i in idx],
            "eval_success_rate": ev.tolist(), "mean": float(ev.mean()),
            "std": float(ev.std(ddof=ddof)),
            "curve_mean": cv.mean(0).tolist(), "curve_std": cv.std(0, ddof=ddof).tolist(),
        })  # fmt: skip
    return out


def write_results(path: str, result: dict, cfg: ExperimentConfig) -> None:
    """results.json, results.md (one row per grid point) and success.png in ``path``."""
    write_json(os.path.join(path, "results.json"), result)
    label = lambda g: ", ".join(f"{k}={v:g}" for k, v in g["values"].items()) or "(no grid)"
    pre = result["pretrained_eval_success_rate"]
    lines = [
        f"# Sweep: {len(result['members'])} members, "
        f"{result.get('iterations_done', cfg.finetune.iterations)} of "
        f"{cfg.finetune.iterations} iterations",
        "",
        f"Deterministic success on the same {result['eval_episodes']} initial states "
        f"(curriculum {cfg.task_curriculum:g}); pre-trained DP: {100 * pre:.1f} %.",
        "",
        "| grid point | seeds | fine-tuned success, mean +- std | per seed |",
        "| --- | --- | --- | --- |",
    ]
    for g in result["grid_points"]:
        per = " / ".join(f"{100 * x:.1f}" for x in g["eval_success_rate"])
        lines.append(f"| {label(g)} | {', '.join(map(str, g['seeds']))} "
                     f"| {100 * g['mean']:.1f} +- {100 * g['std']:.1f} % | {per} % |")  # fmt: skip
    if "seconds_per_iteration" in result:
        r = result
        lines += ["", f"Speed on {r.get('device', '?')}: compile {r['compile_s']:.0f} s, then "
                  f"{r['seconds_per_iteration']:.2f} s per iteration "
                  f"({r['llc_steps_per_s']:,.0f} LLC steps/s, all members)."]  # fmt: skip
    lines += ["", "![training success per grid point](success.png)", ""]
    with open(os.path.join(path, "results.md"), "w") as f:
        f.write("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for g in result["grid_points"]:
        m, sd = np.array(g["curve_mean"]), np.array(g["curve_std"])
        it = np.arange(1, len(m) + 1)
        ax.plot(it, m, label=f"{label(g)} ({len(g['seeds'])} seeds)")
        ax.fill_between(it, m - sd, m + sd, alpha=0.2)
    label_axes(ax, "iteration", "training success (stochastic)", (0, 1))
    save_figure(fig, os.path.join(path, "success.png"))
