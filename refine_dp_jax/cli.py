"""The ``refine-dp`` command line. Each subcommand is a function whose arguments tyro turns into
flags (configs are frozen dataclasses; any field can be overridden, e.g.
``refine-dp probe --cfg.dppo.actor-lr 3e-4``)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import typing
from pathlib import Path

# Entry point only: before anything imports jaxlib (its C++ logging reads this once). XLA logs
# a harmless CPU-feature mismatch on every persistent-cache hit; keep stderr clean.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tyro  # noqa: E402

from refine_dp_jax.errors import ConfigError, CorruptArtifactError, RefineDPError  # noqa: E402
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


# ``--set a=1 b=2 --set c=3``: every --set flag is kept (tyro's append action), each taking
# one or more key=value items.
SetFlags = tyro.conf.UseAppendAction[tuple[tuple[str, ...], ...]]


def _flat(sets) -> tuple[str, ...]:
    return tuple(x for group in sets for x in ((group,) if isinstance(group, str) else group))


def experiment_config(experiment: str, overrides):
    """The named experiment with the ``--set`` overrides applied (each key at most once);
    every value is validated (``ConfigError``) before anything is written or compiled."""
    import experiments
    from refine_dp_jax.config import replace

    try:
        cfg = experiments.get(experiment)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None
    changes: dict = {}
    texts: dict[str, str] = {}
    env_over = dict(cfg.env_overrides)
    for item in _flat(overrides):
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        k, v = (x.strip() for x in item.split("=", 1))
        if k in texts:
            raise ConfigError(f"--set {k} is given twice ({texts[k]!r} and {v!r}); give it once")
        texts[k] = v
        if k.startswith("env_overrides."):
            env_over[k.split(".", 1)[1]] = _parse_any(v)
        elif k == "env_overrides":
            if v.strip("() ") != "":
                raise ConfigError.for_field(
                    k, v, "set environment fields one at a time, e.g. "
                    "--set env_overrides.episode_seconds=10 (or env_overrides= to clear them)",
                )  # fmt: skip
            env_over = {}
        else:
            changes[k] = _parse_value(cfg, k, v)
    if any(k == "env_overrides" or k.startswith("env_overrides.") for k in texts):
        changes["env_overrides"] = tuple(env_over.items())
    return replace(cfg, **changes) if changes else cfg


def _parse_any(text: str):
    """An environment field's value: bool, int, float, comma-separated numbers (optionally in
    brackets or parentheses: ``1.5,3.5``, ``[1.5,3.5]``, ``(1.5, 3.5)``), or a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if "," in text:
        try:
            return tuple(float(x) for x in text.strip("()[] ").split(",") if x.strip())
        except ValueError:
            pass
    return text


def _parse_value(cfg, dotted: str, text: str):
    """Parses ``text`` with the declared type of field ``dotted`` of ``cfg``."""
    from refine_dp_jax.config import _hints

    obj, hint = cfg, None
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(f"{dotted}: {type(obj).__name__} value has no field {part!r}")
        if part not in {f.name for f in dataclasses.fields(obj)}:
            raise ConfigError(f"{type(obj).__name__} has no field {part!r} (in {dotted!r})")
        hint = _hints(type(obj)).get(part, type(getattr(obj, part)))
        obj = getattr(obj, part)
    if dataclasses.is_dataclass(obj):
        first = dataclasses.fields(obj)[0].name
        raise ConfigError.for_field(dotted, text, f"is a config section ({type(obj).__name__}); "
                                    f"set its fields, e.g. --set {dotted}.{first}=...")  # fmt: skip
    args = typing.get_args(hint)
    try:
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if typing.get_origin(hint) is tuple:
            conv = args[0] if args and args[0] in (int, float, str) else int
            return tuple(conv(x.strip()) for x in text.strip("()").split(",") if x.strip())
        if hint in (int, float, str):
            return hint(text)
        return type(obj)(text)
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a number"}.get(hint)
        if typing.get_origin(hint) is tuple:
            kind = "comma-separated " + ("integers" if not args or args[0] is int else "numbers")
        raise ConfigError.for_field(dotted, text, f"must be {kind or type(obj).__name__}") from None


def _check_out(out: Path) -> None:
    """``--out`` must be a folder this process can create and write in."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder: give a folder path")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out {out} cannot be used: {e.strerror or e}") from None


_STAGE_OF = {"train-llc": "llc", "collect-demos": "demos", "pretrain": "dp",
             "finetune": "finetune_dp", "finetune-joint": "finetune_joint",
             "baseline": "mlp_ppo", "evaluate": "eval"}  # fmt: skip
_COMMAND_OF = {v: k for k, v in _STAGE_OF.items()}


def _command(cmd: str, experiment: str, out: Path, sets) -> str:
    words = ["refine-dp", cmd, "--experiment", experiment, "--out", str(out)]
    flat = _flat(sets)
    if flat:
        words += ["--set", *flat]
    return " ".join(shlex.quote(w) for w in words)


def _where_stopped(cfg, cmd: str, out: Path) -> str:
    """Which stage a run interrupted in ``out`` was in, and its newest checkpoint."""
    from refine_dp_jax import pipeline

    if cmd == "pipeline":
        stages = [s for s in pipeline.STAGES
                  if not (s == "finetune_dp" and not cfg.run_dp_only)
                  and not (s == "finetune_joint" and not cfg.finetune.joint)
                  and not (s == "mlp_ppo" and not cfg.run_baseline)]  # fmt: skip
        todo = [s for s in stages if not os.path.exists(out / s / "done.json")]
        if not todo:
            return "after its last stage"
        stage = todo[0]
    else:
        stage = _STAGE_OF[cmd]
    from refine_dp_jax.checkpoint import complete_steps

    ckpt = out / stage / "ckpt"
    steps = complete_steps(str(ckpt))
    if steps:
        return f"in stage {stage} (last checkpoint: iteration {steps[-1]}, {ckpt / str(steps[-1])})"
    return f"in stage {stage} (no checkpoint yet: the stage starts over)"


def _stage_command(stage: str):
    def run(
        experiment: str = "testbed",
        out: Path = Path("runs/testbed"),
        set: SetFlags = (),  # noqa: A002
        minutes: float | None = None,
    ) -> None:
        setup_process()
        if minutes is not None and (minutes <= 0 or stage != "train-llc"):
            raise ConfigError(f"--minutes (> 0, got {minutes}) bounds train-llc only")
        from refine_dp_jax import pipeline

        cfg = experiment_config(experiment, set)
        parts = pipeline.build(cfg)  # environment and its overrides checked
        _check_out(out)
        run = {"experiment": experiment, "sets": list(_flat(set)),
               "command": _command(stage, experiment, out, set)}  # fmt: skip
        pipeline.save_config(cfg, str(out), run)
        try:
            _run_stage(pipeline, parts, cfg, out, minutes, run["command"])
        except KeyboardInterrupt:
            where = _where_stopped(cfg, stage, out)
            resume = _command(stage, experiment, out, set)
            raise Interrupted(f"interrupted {where}; resume with: {resume}") from None
        except CorruptArtifactError as e:
            if e.stage not in _COMMAND_OF:
                raise
            redo = _command(_COMMAND_OF[e.stage], experiment, out, set)
            if os.path.basename(os.path.normpath(str(e.path))) == "ckpt":  # no good checkpoint
                ckpt = shlex.quote(str(out / e.stage / "ckpt"))
                fix = f"to restart stage {e.stage} from scratch: rm -r {ckpt} && {redo}"
            else:  # a stage's artifact: its done check fails too, so rerunning redoes it
                fix = f"redo stage {e.stage} with: {redo}"
            raise CorruptArtifactError(f"{e}; {fix}") from None

    def _run_stage(pipeline, parts, cfg, out: Path, minutes: float | None, again: str) -> None:
        if stage == "pipeline":
            pipeline.run_pipeline(cfg, str(out))
            return
        fn = {
            "train-llc": lambda: pipeline.stage_llc(parts, str(out), minutes=minutes),
            "collect-demos": lambda: pipeline.stage_demos(parts, str(out)),
            "pretrain": lambda: pipeline.stage_pretrain(parts, str(out)),
            "finetune": lambda: pipeline.stage_finetune(parts, str(out), joint=False),
            "finetune-joint": lambda: pipeline.stage_finetune(parts, str(out), joint=True),
            "baseline": lambda: pipeline.stage_baseline(parts, str(out)),
            "evaluate": lambda: pipeline.stage_evaluate(parts, str(out)),
        }[stage]
        record = fn()
        print(json.dumps(record, indent=1, default=str))
        if record.get("interrupted"):
            print(f"stopped after --minutes {minutes}; resume with: {again}")
        pipeline.write_summary(cfg, str(out))
        print(f"report: {pipeline.write_report(str(out))}")

    run.__doc__ = _STAGE_DOCS[stage] + (
        " Named experiments live in experiments/; override any field with --set key=value"
        " (dotted, e.g. --set dppo.actor_lr=3e-4 seed=1; --set may be repeated). Rerunning"
        " resumes from the last checkpoint (train-llc --minutes M: stop after M minutes with a"
        " checkpoint, for a machine lent for a fixed time). Exit codes: 2 bad input, 3 corrupt"
        " or missing checkpoint/data, 4 not enough memory, 130 Ctrl-C."
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
    set: SetFlags = (),  # noqa: A002
    joint: bool | None = None,
    minutes: float | None = None,
) -> None:
    """Fine-tunes S seeds x H hyperparameter values in ONE compiled program (a vmap axis), from
    the pre-trained DP and LLC in --out. --grid takes name=v1,v2,... for the dynamic DPPO fields
    (actor_lr, critic_lr, clip_eps, clip_eps_base, gamma, gae_lambda, gamma_denoise, vf_coef,
    sample_std_floor, logprob_std_floor); e.g. --grid actor_lr=1e-4,3e-4 --seeds 0 1 2.
    --minutes: train at most this long (compile included), then evaluate what was trained (for
    a machine lent for a fixed time; a rerun resumes the remaining iterations)."""
    setup_process()
    from refine_dp_jax.sweep import run_sweep

    cfg = experiment_config(experiment, set)
    values = {}
    for item in grid:
        if "=" not in item:
            raise ConfigError(f"--grid expects name=v1,v2,..., got {item!r}")
        k, v = item.split("=", 1)
        try:
            values[k.strip()] = [float(x) for x in v.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--grid {k}: values must be numbers, got {v!r}") from None
    if minutes is not None and minutes <= 0:
        raise ConfigError(f"--minutes must be > 0, got {minutes}")
    result = run_sweep(cfg, str(out), list(seeds), values, joint, minutes=minutes)
    keys = ("pretrained_eval_success_rate", "seconds", "iterations_done", "compile_s",
            "seconds_per_iteration", "llc_steps_per_s", "device")  # fmt: skip
    short = {k: result[k] for k in keys if k in result}
    short["grid_points"] = [
        {k: g[k] for k in ("values", "seeds", "eval_success_rate", "mean", "std")}
        for g in result["grid_points"]
    ]
    print(json.dumps(short, indent=1))
    print(f"table and plot: {out / 'sweep' / 'results.md'}")


def _trained_llc(experiment: str, out: Path, sets):
    """(config, parts, learner, done record or {} , info) of the LLC trained in ``out``: the
    finished stage's, else its newest checkpoint (a run stopped by --minutes; ``info``:
    finished, iterations_done, speed_scale); else a one-line error naming the command that
    trains it."""
    from refine_dp_jax import pipeline
    from refine_dp_jax.checkpoint import read_done

    cfg = experiment_config(experiment, sets)
    parts = pipeline.build(cfg)
    try:
        learner, info = pipeline.latest_llc(parts, str(out))
    except ConfigError:
        raise ConfigError(f"--out {out}: stage llc has no trained LLC (train it first: "
                          f"{_command('train-llc', experiment, out, sets)})") from None  # fmt: skip
    if not info["finished"]:
        print(f"stage llc is not finished: using its checkpoint of iteration "
              f"{info['iterations_done']} of {cfg.llc.iterations}")  # fmt: skip
    return cfg, parts, learner, read_done(str(out / "llc")) or {}, info


def export_llc(
    to: Path,
    experiment: str = "humanoid_llc_stand",
    out: Path = Path("runs/humanoid_llc_stand"),
    set: SetFlags = (),  # noqa: A002
    note: str = "",
) -> None:
    """Writes the LLC trained in --out (stage 1's final LLC, or its newest checkpoint while
    unfinished: the card says which iteration) to --to as a small, pickle-free stored
    LLC (llc.npz + llc.json: robot, interface, networks, the command that trained it, its
    evaluation), with its learning curves (metrics.jsonl, PNG). Experiments load it with
    --set llc_checkpoint=DIR; the loader refuses it for another robot, interface or network."""
    setup_process()
    import shutil

    from refine_dp_jax.policy_store import save_llc

    cfg, parts, learner, done, info = _trained_llc(experiment, out, set)
    extra = {k: done[k] for k in ("eval", "env_steps", "seconds", "final_metrics") if k in done}
    if not info["finished"] and (out / "llc" / "eval.json").exists():
        extra["eval"] = json.loads((out / "llc" / "eval.json").read_text())
    extra.update(info)  # finished, iterations_done, speed_scale (the command curriculum)
    extra["note"] = note  # e.g. the commit of the code that trained it
    record = save_llc(str(to), parts, learner, _command("train-llc", experiment, out, set), extra)
    for name in ("metrics.jsonl", "curves.png", "eval.json"):
        src = out / "llc" / name
        if src.exists():
            shutil.copy(src, to / name)
    (to / "README.md").write_text(_llc_readme(record))
    print(json.dumps({k: record[k] for k in ("env", "sizes", "sha256")}, indent=1))


def _llc_readme(record: dict) -> str:
    """The stored LLC's card: what made it and how good it is (from llc.json)."""
    lines = [
        f"# Stored LLC: {record['env']}",
        "",
        "Made by (from the repository root, then `refine-dp export-llc`):",
        "",
        f"    {record['command']}",
        "",
        *([record["note"], ""] if record.get("note") else []),
        f"Environment steps: {record.get('env_steps', '?')}, training wall time: "
        f"{record.get('seconds', 0.0) / 60:.1f} min. Sizes: {record['sizes']}.",
        *(
            [f"Unfinished run: the checkpoint of iteration {record['iterations_done']}."]
            if record.get("finished") is False
            else []
        ),
        *(
            [
                f"Command curriculum: base velocities at {record['speed_scale']:.2f} x the env's "
                "range when it was stored."
            ]
            if record.get("speed_scale") is not None
            else []
        ),
        "Files: `llc.npz` (parameters and normalizer statistics, no pickle), `llc.json` "
        "(robot digest, interface, networks, LLC config, sha256 of the npz; the loader checks "
        "them), `metrics.jsonl` and `curves.png` (learning curves), `eval.json`.",
        "",
    ]
    ev = record.get("eval") or {}
    if ev:
        names = [n for n in ev if n != "llc_state"]
        lines += ["| metric | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
        for key in ev[names[0]]:
            vals = " | ".join(f"{ev[n].get(key, float('nan')):.4g}" for n in names)
            lines.append(f"| {key} | {vals} |")
        lines.append("")
    return "\n".join(lines)


def eval_llc(
    experiment: str = "humanoid_llc_stand",
    out: Path = Path("runs/humanoid_llc_stand"),
    set: SetFlags = (),  # noqa: A002
) -> None:
    """Evaluates the LLC trained in --out (stage 1's final LLC, or its newest checkpoint while
    unfinished) on its own task, deterministic, over
    llc.eval_episodes randomized episodes (fall rate, hand errors, gripper following; trained
    LLC vs the zero residual); writes --out/llc/eval.json."""
    setup_process()
    from refine_dp_jax import pipeline
    from refine_dp_jax.checkpoint import mark_done

    cfg, parts, learner, done, info = _trained_llc(experiment, out, set)
    if cfg.llc.eval_episodes < 1:
        raise ConfigError("llc.eval_episodes must be >= 1 to evaluate (--set llc.eval_episodes=N)")
    result = pipeline.evaluate_llc(parts, learner, str(out / "llc"), info)
    if info["finished"]:
        mark_done(str(out / "llc"), {**done, "eval": result})
    print(json.dumps(result, indent=1))


def report(out: Path = Path("runs/testbed")) -> None:
    """Writes --out/report.md, one page that shows the run: the command that made it,
    versions and commit, the config fields that differ from the experiment's defaults, the
    evaluation table, stage timings, learning curves and the video's key frames. Reads only
    the run directory (works while a run is going, or on a run from another machine)."""
    from refine_dp_jax.report import write_report

    if not (out / "config.json").exists():
        raise ConfigError(f"--out {out}: no config.json, not a run directory")
    print(write_report(str(out)))


def export(
    experiment: str = "testbed",
    out: Path = Path("runs/testbed"),
    policy: str = "",
    set: SetFlags = (),  # noqa: A002
) -> None:
    """Writes a trained policy of --out (--policy finetune_joint, finetune_dp or pretrained;
    default: the most trained one) to --out/export/<policy> as jax.export artifacts: the DP's
    deterministic sampler with its observation normalizer and command mapping, and the LLC,
    both for any batch size, plus policy.json (shapes, rates, command bounds, joint order) and
    load_policy.py, a loader that needs only jax and numpy."""
    setup_process()
    from refine_dp_jax import pipeline
    from refine_dp_jax.policy_export import export_policy

    cfg = experiment_config(experiment, set)
    print(export_policy(pipeline.build(cfg), str(out), policy or None))


def sim2sim(
    experiment: str = "testbed",
    out: Path = Path("runs/testbed"),
    policy: str = "",
    episodes: int = 0,
    set: SetFlags = (),  # noqa: A002
) -> None:
    """Sim-to-sim: exports a trained policy of --out (as `export`) and evaluates the exported
    artifacts with the run's environment stepped by MuJoCo's own C physics (mujoco.mj_step, same
    MJCF and rates) next to MJX, on the run's evaluation initial states (--episodes, default
    eval_episodes). Writes --out/sim2sim/<policy>/results.{json,md}. Envs: the testbed and
    point_reach (the humanoid's per-episode randomized model is not supported)."""
    setup_process()
    from refine_dp_jax import pipeline
    from refine_dp_jax.sim2sim import results_markdown, run_sim2sim

    if episodes < 0:
        raise ConfigError(f"--episodes must be >= 0 (0: eval_episodes), got {episodes}")
    cfg = experiment_config(experiment, set)
    record = run_sim2sim(pipeline.build(cfg), str(out), policy or None, episodes or None)
    print(results_markdown(record))


def commands() -> dict:
    return {
        "probe": probe,
        **{name: _stage_command(name) for name in _STAGE_DOCS},
        "sweep": sweep,
        "export-llc": export_llc,
        "eval-llc": eval_llc,
        "report": report,
        "export": export,
        "sim2sim": sim2sim,
    }


class Interrupted(RefineDPError):
    """Ctrl-C: the message says where the run stopped and how to resume it."""

    exit_code = 130


def main(argv: list[str] | None = None) -> None:
    """Runs a command. Errors end in one line on stderr and an exit code: 2 bad input
    (``ConfigError``), 3 a corrupt checkpoint or dataset, 4 not enough memory, 130 Ctrl-C."""
    try:
        tyro.extras.subcommand_cli_from_dict(
            commands(), args=sys.argv[1:] if argv is None else argv
        )
    except ConfigError as e:
        print(f"refine-dp: invalid configuration: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except RefineDPError as e:
        print(f"refine-dp: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        print("refine-dp: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
