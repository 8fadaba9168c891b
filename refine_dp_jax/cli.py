"""The ``refine-dp`` command line. Each subcommand is a function whose arguments tyro turns into
flags (configs are frozen dataclasses; any field can be overridden, e.g.
``refine-dp probe --cfg.dppo.actor-lr 3e-4``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# Entry point only: before anything imports jaxlib (its C++ logging reads this once). XLA logs
# a harmless CPU-feature mismatch on every persistent-cache hit; keep stderr clean.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tyro  # noqa: E402

from refine_dp_jax.errors import ConfigError  # noqa: E402
from refine_dp_jax.probe import BanditProbeConfig  # noqa: E402


def setup_process() -> None:
    """Entry-point-only process setup (library code never sets flags or env vars at import)."""
    from refine_dp_jax.gl import choose_gl_backend

    choose_gl_backend()
    import jax

    cache = os.environ.get("REFINE_DP_JAX_CACHE", os.path.expanduser("~/.cache/refine_dp_jax/xla"))
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def probe(cfg: BanditProbeConfig = BanditProbeConfig(), out: Path | None = None) -> None:
    """DPPO bandit probe: pre-train a DP on bimodal demos, fine-tune it with DPPO on the sparse
    reward of one mode, print the rewarded fraction before and after (JSON; also to ``out``)."""
    setup_process()
    from refine_dp_jax.probe import run_bandit_probe

    text = json.dumps(run_bandit_probe(cfg), indent=1)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def _experiment(experiment: str, overrides: tuple[str, ...]):
    import experiments
    from refine_dp_jax.config import replace

    try:
        cfg = experiments.get(experiment)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None
    changes = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        changes[k.strip()] = _parse_value(cfg, k.strip(), v.strip())
    return replace(cfg, **changes) if changes else cfg


def _parse_value(cfg, dotted: str, text: str):
    """Parses ``text`` with the type of the current value of field ``dotted``."""
    obj = cfg
    for part in dotted.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{type(obj).__name__} has no field {part!r} (in {dotted!r})")
        obj = getattr(obj, part)
    try:
        if isinstance(obj, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if isinstance(obj, tuple):
            return tuple(int(x) for x in text.strip("()").split(",") if x.strip())
        return type(obj)(text)
    except ValueError:
        raise ConfigError(f"{dotted}: cannot read {text!r} as {type(obj).__name__}") from None


def _stage_command(stage: str):
    def run(
        experiment: str = "testbed",
        out: Path = Path("runs/testbed"),
        set: tuple[str, ...] = (),  # noqa: A002
    ) -> None:
        setup_process()
        from refine_dp_jax import pipeline

        cfg = _experiment(experiment, set)
        os.makedirs(out, exist_ok=True)
        pipeline.save_config(cfg, str(out))
        if stage == "pipeline":
            pipeline.run_pipeline(cfg, str(out))
            return
        parts = pipeline.build(cfg)
        fn = {
            "train-llc": lambda: pipeline.stage_llc(parts, str(out)),
            "collect-demos": lambda: pipeline.stage_demos(parts, str(out)),
            "pretrain": lambda: pipeline.stage_pretrain(parts, str(out)),
            "finetune": lambda: pipeline.stage_finetune(parts, str(out), joint=False),
            "finetune-joint": lambda: pipeline.stage_finetune(parts, str(out), joint=True),
            "baseline": lambda: pipeline.stage_baseline(parts, str(out)),
            "evaluate": lambda: pipeline.stage_evaluate(parts, str(out)),
        }[stage]
        print(json.dumps(fn(), indent=1, default=str))
        pipeline.write_summary(cfg, str(out))

    run.__doc__ = _STAGE_DOCS[stage] + (
        " Named experiments live in experiments/; override any field with --set key=value"
        " (dotted, e.g. --set dppo.actor_lr=3e-4). Rerunning resumes from the last checkpoint."
    )
    return run


_STAGE_DOCS = {
    "pipeline": "All stages in order (each skipped if already done in --out).",
    "train-llc": "Stage 1: train the LLC with PPO on tracking rewards (random commands).",
    "collect-demos": "Stage 2: scripted planner through the frozen LLC; keep successes.",
    "pretrain": "Stage 3: pre-train the diffusion policy on demonstration chunks.",
    "finetune": "Stage 4, DP-only ablation: DPPO on the sparse task reward.",
    "finetune-joint": "Stage 4, joint optimization: alternate LLC PPO and DP DPPO.",
    "baseline": "Baseline: behaviour-cloned MLP planner fine-tuned with Gaussian PPO.",
    "evaluate": "Evaluate every trained policy (success, completion time, tracking), video.",
}


def sweep(
    experiment: str = "testbed",
    out: Path = Path("runs/testbed"),
    seeds: tuple[int, ...] = (0, 1),
    grid: tuple[str, ...] = (),
    set: tuple[str, ...] = (),  # noqa: A002
    joint: bool | None = None,
) -> None:
    """Fine-tunes S seeds x H hyperparameter values in ONE compiled program (a vmap axis), from
    the pre-trained DP and LLC in --out. --grid takes name=v1,v2,... for the dynamic DPPO fields
    (actor_lr, critic_lr, clip_eps, clip_eps_base, gamma, gae_lambda, gamma_denoise, vf_coef,
    sample_std_floor, logprob_std_floor); e.g. --grid actor_lr=1e-4,3e-4 --seeds 0 1 2."""
    setup_process()
    from refine_dp_jax.sweep import run_sweep

    cfg = _experiment(experiment, set)
    values = {}
    for item in grid:
        if "=" not in item:
            raise ConfigError(f"--grid expects name=v1,v2,..., got {item!r}")
        k, v = item.split("=", 1)
        try:
            values[k.strip()] = [float(x) for x in v.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--grid {k}: values must be numbers, got {v!r}") from None
    result = run_sweep(cfg, str(out), list(seeds), values, joint)
    print(json.dumps({k: v for k, v in result.items() if k != "state"}, indent=1))


def commands() -> dict:
    return {
        "probe": probe,
        **{name: _stage_command(name) for name in _STAGE_DOCS},
        "sweep": sweep,
    }


def main(argv: list[str] | None = None) -> None:
    try:
        tyro.extras.subcommand_cli_from_dict(
            commands(), args=sys.argv[1:] if argv is None else argv
        )
    except ConfigError as e:
        print(f"refine-dp: invalid configuration: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
