"""Sweeps as one compiled program: S seeds x H values of dynamic DPPO hyperparameters are a
leading vmap axis of the fine-tuning state, not S*H recompiles.

Dynamic (sweepable) fields are those of ``DPPOHyper``: actor_lr, critic_lr, clip_eps,
clip_eps_base, gamma, gae_lambda, gamma_denoise, vf_coef, sample_std_floor, logprob_std_floor.
Member m of the sweep equals the single run ``finetune`` with ``seed`` and the hyperparameter
values of member m (tested).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from refine_dp_jax.checkpoint import mark_done, read_done
from refine_dp_jax.config import ConfigError, replace
from refine_dp_jax.pipeline import (
    ExperimentConfig,
    Parts,
    build,
    finetune_state,
    finetune_step,
    stage_dir,
)
from refine_dp_jax.train.dppo import DPPOHyper
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
) -> dict:
    """Fine-tunes every member from the run's pre-trained DP and LLC, in one vmapped program."""
    for need in ("llc", "dp"):
        if read_done(os.path.join(out, need)) is None:
            raise FileNotFoundError(f"{out}/{need} is not done: run the pipeline stages first")
    joint = cfg.finetune.joint if joint is None else joint
    members = sweep_members(seeds, grid)
    parts: Parts = build(cfg)
    states = [finetune_state(parts, member_config(cfg, s, v), out, joint) for s, v in members]
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
    with open(os.path.join(path, "members.json"), "w") as f:
        json.dump([{"member": i, "seed": s, **v} for i, (s, v) in enumerate(members)], f, indent=1)
    state, _ = run_loop(
        path, state, flat_step, cfg.finetune.iterations, cfg.ckpt_every,
        f"sweep: {len(members)} members in one program",
        plot_keys=[f"m{i}/dp/success_rate" for i in range(min(6, len(members)))], mesh=None,
    )  # fmt: skip
    from refine_dp_jax.logs import read_jsonl

    rows = read_jsonl(os.path.join(path, "metrics.jsonl"))[-3:]
    result = {
        "members": [
            {
                "member": i,
                "seed": s,
                **v,
                "success_rate": float(np.mean([r[f"m{i}/dp/success_rate"] for r in rows])),
            }
            for i, (s, v) in enumerate(members)
        ],  # fmt: skip
        "seconds": time.time() - t0,
    }
    mark_done(path, result)
    return {"state": state, **result}
