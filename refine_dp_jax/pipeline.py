"""The REFINE-DP pipeline as stages, each reading the previous stage's artifact:

  llc -> demos -> dp (pre-train) -> finetune_dp (DPPO only) / finetune_joint (Algorithm 1)
      -> mlp_ppo (baseline) -> eval (+ video, plots, summary.json)

Run directory layout (``--out DIR``)::

  config.json               resolved experiment config (+ versions, commit, the command)
  <stage>/ckpt/<step>/      orbax checkpoints of the full training state while it runs
  <stage>/final/            the stage's artifact (orbax)
  <stage>/metrics.jsonl     one line per iteration; <stage>/tb/ TensorBoard; curves.png
  <stage>/done.json         written when the stage has finished (its numbers, seconds, env steps)
  demos/demos.{npz,json}    demonstrations
  eval/results.json, eval/success.png, eval/video.mp4
  summary.json, report.md  one page that shows the run (refine-dp report)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from refine_dp_jax.checkpoint import (
    complete_steps,
    load_artifact,
    mark_done,
    read_done,
    save_artifact,
)
from refine_dp_jax.config import (
    NONNEG,
    ONE_PLUS,
    POSITIVE,
    ConfigError,
    DiffusionConfig,
    DPPOConfig,
    PretrainConfig,
    _check,
    check_divisible,
    check_fields,
    check_value,
    one_of,
    within,
)
from refine_dp_jax.data.demos import (
    DemoConfig,
    chunk_dataset,
    collect_demos,
    load_demos,
    save_demos,
)
from refine_dp_jax.diffusion.networks import Critic, make_denoiser
from refine_dp_jax.envs import make as make_env
from refine_dp_jax.evaluate import make_evaluate, make_trajectory_recorder, render_video
from refine_dp_jax.logs import save_figure, write_json
from refine_dp_jax.memory import compile_checked
from refine_dp_jax.report import write_report
from refine_dp_jax.train.dppo import DPPOHyper, make_dppo
from refine_dp_jax.train.finetune import (
    FinetuneConfig,
    FinetuneState,
    dp_plan_fn,
    make_dppo_train,
    make_mlp_ppo_train,
    mlp_plan_fn,
)
from refine_dp_jax.train.gaussian_ppo import PPOConfig, make_gaussian_ppo
from refine_dp_jax.train.hierarchy import OUTCOMES, ObsNormalizer, hier_init
from refine_dp_jax.train.llc import LLCConfig, make_llc_ppo, make_llc_train
from refine_dp_jax.train.loop import run_loop
from refine_dp_jax.train.pretrain import make_pretrain_epoch, pretrain_init


@dataclass(frozen=True)
class BaselineConfig:
    """The MLP behaviour-cloning planner fine-tuned with Gaussian PPO (same budget as DPPO)."""

    bc_steps: int = 2000
    bc_lr: float = 1e-3
    bc_batch: int = 256
    ppo: PPOConfig = field(
        default_factory=lambda: PPOConfig(
            lr=1e-4,
            critic_lr=1e-3,
            clip_eps=0.1,
            gamma=0.99,
            epochs=5,
            minibatches=4,
            init_log_std=-2.0,
            actor_hidden=(256, 256),
            critic_hidden=(256, 256),
            normalize_inputs=False,
        )  # fmt: skip
    )

    def __post_init__(self):
        check_fields(self, {"bc_steps": NONNEG, "bc_lr": POSITIVE, "bc_batch": ONE_PLUS})


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: environment, the four stages, baseline and evaluation."""

    env: str = "testbed_pick_place"
    # (field, value) pairs passed to ``envs.make(env, **overrides)`` (the env's own config)
    env_overrides: tuple[tuple[str, Any], ...] = ()
    seed: int = 0
    hold: int = 2  # LLC steps per command (the DP's command rate = LLC rate / hold)
    llc: LLCConfig = field(default_factory=LLCConfig)
    demos: DemoConfig = field(default_factory=DemoConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    dppo: DPPOConfig = field(default_factory=DPPOConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    # Scale of the initial-pose ranges (radial distance, polar angle, heading) for fine-tuning
    # and evaluation; demonstrations are collected at 1.0. Above 1 this is the paper's
    # out-of-distribution setting; how each range grows is the environment's business (the
    # testbed reaches the paper's widened ranges, 320 %, 125 %, 600 %, at 2.0).
    task_curriculum: float = 1.0
    eval_episodes: int = 200  # first episodes of this many envs, deterministic sampling
    video_episodes: int = 2
    ckpt_every: int = 10  # iterations between checkpoints
    pretrain_chunk: int = 250  # pre-training steps per compiled call (checkpoint granularity)
    run_baseline: bool = True
    run_dp_only: bool = True  # DP-only ablation next to joint optimization
    # A stored LLC (``refine_dp_jax.policy_store``: llc.npz + llc.json, e.g. the committed
    # ``refine_dp_jax/assets/llc/humanoid_llc_stand``): stage 1 loads it, after checking that
    # it was trained for this robot, interface and network, instead of training. A relative
    # path is looked up from the working directory, then from the repository root.
    llc_checkpoint: str = ""
    # A stored LLC (as ``llc_checkpoint``, checked the same way) whose parameters and
    # normalizer statistics start stage 1's PPO instead of random ones: training a stored LLC
    # further (fresh optimizer state; the reward curriculum restarts at iteration 0).
    llc_init: str = ""
    # With ``llc_init``: restart the exploration noise at ``llc.ppo.init_log_std`` instead of
    # the stored LLC's (a converged policy's noise is too small to find a new skill: the
    # standing LLC's leg noise is ~0.03 rad, a step needs tenths of a radian).
    llc_init_reset_noise: bool = False

    def __post_init__(self):
        from refine_dp_jax.envs import names as env_names

        if not isinstance(self.env_overrides, tuple):
            raise ConfigError.for_field("env_overrides", self.env_overrides,
                                        "must be a tuple of (field name, value) pairs")  # fmt: skip
        for i, pair in enumerate(self.env_overrides):
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
                raise ConfigError.for_field(f"env_overrides[{i}]", pair,
                                            "must be a (field name, value) pair")  # fmt: skip
            values = pair[1] if isinstance(pair[1], tuple) else (pair[1],)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ConfigError.for_field(f"env_overrides.{pair[0]}", pair[1], "must be finite")
        for name in ("llc_checkpoint", "llc_init"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError.for_field(name, getattr(self, name),
                                            "must be a folder path (a string)")  # fmt: skip
        _check(
            self.llc_init or not self.llc_init_reset_noise,
            "llc_init_reset_noise restarts the noise of a stored LLC: set llc_init too",
        )
        _check(not (self.llc_checkpoint and self.llc_init),
               "llc_checkpoint (load a stored LLC, no training) and llc_init (train a stored "
               "LLC further) exclude each other: set one")  # fmt: skip
        check_fields(self, {
            "env": one_of(*env_names()), "seed": within(0, 2**31 - 1), "hold": ONE_PLUS,
            "task_curriculum": NONNEG, "eval_episodes": ONE_PLUS, "video_episodes": NONNEG,
            "ckpt_every": ONE_PLUS, "pretrain_chunk": ONE_PLUS,
        })  # fmt: skip
        _check(self.hold >= 1, f"hold must be >= 1, got {self.hold}")
        _check(self.task_curriculum >= 0, "task_curriculum must be >= 0")
        _check(self.eval_episodes >= 1, "eval_episodes must be >= 1")
        _check(self.ckpt_every >= 1 and self.pretrain_chunk >= 1, "ckpt_every, pretrain_chunk >= 1")
        d, f = self.diffusion, self.finetune
        check_divisible(self.llc.num_envs * self.llc.rollout_steps, self.llc.ppo.minibatches,
                        "LLC PPO (llc.num_envs * llc.rollout_steps)")  # fmt: skip
        check_divisible(
            f.num_envs * f.decisions * d.ft_steps,
            self.dppo.minibatches,
            "DPPO (finetune.num_envs * finetune.decisions * diffusion.ft_steps)",
        )
        if self.dppo.critic_per_decision:
            check_divisible(
                f.num_envs * f.decisions, self.dppo.minibatches,
                "DPPO critic per decision (finetune.num_envs * finetune.decisions)",
            )  # fmt: skip
        check_divisible(
            f.num_envs * f.decisions * d.exec_steps * self.hold,
            self.llc.ppo.minibatches,
            "joint LLC PPO (num_envs*decisions*exec*hold)",
        )
        check_divisible(f.num_envs * f.decisions, self.baseline.ppo.minibatches,
                        "baseline PPO (finetune.num_envs * finetune.decisions)")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Shared construction


@dataclass
class Parts:
    """Everything built from the config (static: networks, pure functions)."""

    cfg: ExperimentConfig
    env: Any
    llc_ppo: Any
    denoiser: Any
    critic: Any
    dppo: Any


def build(cfg: ExperimentConfig) -> Parts:
    """Builds the environment and networks (nothing is compiled); bad ``env_overrides`` raise
    ``ConfigError``."""
    overrides = dict(cfg.env_overrides)
    try:
        env = make_env(cfg.env, **overrides)
    except ConfigError as e:
        raise ConfigError(f"env_overrides: {e}") from None
    except (TypeError, ValueError, ArithmeticError) as e:
        raise ConfigError(f"env_overrides {overrides}: {cfg.env} refuses them ({e})") from None
    env_cfg = getattr(env, "cfg", None)
    if dataclasses.is_dataclass(env_cfg):
        for k in overrides:
            try:
                check_value(type(env_cfg), k, getattr(env_cfg, k))
            except ConfigError as e:
                raise e.prefixed("env_overrides") from None
    denoiser = make_denoiser(cfg.diffusion.denoiser)
    critic = Critic(hidden=cfg.dppo.critic_hidden)
    fns = make_dppo(denoiser, critic, cfg.diffusion, cfg.dppo, env.command_size)
    parts = Parts(cfg, env, make_llc_ppo(env, cfg.llc), denoiser, critic, fns)
    if cfg.llc_checkpoint or cfg.llc_init:  # a missing or mismatched LLC: refused before
        from refine_dp_jax.policy_store import check_llc  # anything compiles

        # llc_init: a stored LLC with less actor history is widened (policy_store.load_llc)
        folder = resolve_path(cfg.llc_checkpoint or cfg.llc_init)
        check_llc(folder, parts, widen=not cfg.llc_checkpoint)
    return parts


def resolve_path(path: str) -> str:
    """``path`` as given if it exists (absolute, or relative to the working directory), else
    relative to the repository root (committed assets)."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(root, path)


def seed_key(seed: int, name: str):
    """The PRNG key of a stage: the experiment seed folded with the stage name."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), sum(map(ord, name)))


def stage_key(parts: Parts, name: str):
    return seed_key(parts.cfg.seed, name)


def llc_template(parts: Parts):
    return parts.llc_ppo.init(jax.random.PRNGKey(0))


def denoiser_template(parts: Parts):
    d = parts.cfg.diffusion
    ta, dc = d.horizon, parts.env.command_size
    x = jnp.zeros((1, ta, dc))
    cond = jnp.zeros((1, d.obs_history, parts.env.dp_observation_size))
    return parts.denoiser.init(jax.random.PRNGKey(0), x, jnp.zeros((1,), jnp.int32), cond)["params"]


def normalizer_template(parts: Parts) -> ObsNormalizer:
    ds = parts.env.dp_observation_size
    return ObsNormalizer(jnp.zeros((ds,)), jnp.ones((ds,)))


_HINT = "lower llc.num_envs / finetune.num_envs / eval_episodes or the batch sizes"


def _init_hier(parts: Parts, num_envs: int, key):
    obs_history, c = parts.cfg.diffusion.obs_history, parts.cfg.task_curriculum
    init = jax.jit(lambda k: hier_init(parts.env, k, num_envs, obs_history, c))
    compile_checked(init, key, what=f"the environment state of {num_envs} envs", hint=_HINT)
    return init(key)


def committed(state):
    """``state`` with every leaf committed to this process's first device. A state that mixes
    committed leaves (restored from a checkpoint) with uncommitted ones (fresh arrays) makes
    the jitted step compile twice: once for it, once for its own (committed) output."""
    return jax.device_put(state, jax.local_devices()[0])


def stage_dir(out: str, name: str) -> str:
    path = os.path.join(out, name)
    os.makedirs(path, exist_ok=True)
    return path


def finish(path: str, t0: float, record: dict) -> dict:
    prev = read_done(path) or {}
    record = {**record, "seconds": prev.get("seconds", 0.0) + time.time() - t0}
    mark_done(path, record)
    return record


def load_llc(parts: Parts, out: str, which: str = "llc"):
    state, _ = load_artifact(os.path.join(out, which, "final"), {"llc": llc_template(parts)})
    return state["llc"]


# ---------------------------------------------------------------------------------------------
# Stages


@struct.dataclass
class PTState:
    """Pre-training loop state: the optimizer state plus the loop's PRNG key."""

    inner: Any
    key: jax.Array


def stage_llc(parts: Parts, out: str, stop_after: int | None = None,
              minutes: float | None = None) -> dict:  # fmt: skip
    """Stage 1: PPO on the LLC's tracking rewards with random commands. ``minutes``: train at
    most this long (compile included), then checkpoint and return ``{"interrupted": True,
    ...}`` as a kill would (a rerun resumes); the stage is done only once all iterations ran."""
    path = stage_dir(out, "llc")
    if (done := read_done(path, "final")) is not None:
        return done
    cfg, t0 = parts.cfg, time.time()
    if cfg.llc_checkpoint:
        from refine_dp_jax.policy_store import load_llc as load_stored

        src = resolve_path(cfg.llc_checkpoint)
        save_artifact(os.path.join(path, "final"), {"llc": load_stored(src, parts)},
                      {"stage": "llc", "from": src})  # fmt: skip
        return finish(path, t0, {"loaded_from": src, "env_steps": 0})
    init, step, _ = make_llc_train(parts.env, cfg.llc)
    key = stage_key(parts, "llc")
    init_j = jax.jit(init)
    compile_checked(init_j, key, what="stage 1 (LLC PPO) initial state", hint=_HINT)
    state = init_j(key)
    if cfg.llc_init:
        from refine_dp_jax.policy_store import load_llc as load_stored

        stored = load_stored(resolve_path(cfg.llc_init), parts, widen=True)
        params = stored.params
        if cfg.llc_init_reset_noise:
            params = params.replace(log_std=state.learner.params.log_std)  # init_log_std
        state = state.replace(learner=state.learner.replace(
            params=params, actor_stats=stored.actor_stats,
            critic_stats=stored.critic_stats))  # fmt: skip
    keys = ["reward", "hand_err", "hand_rot_err", "terminations", "base_height", "vel_err",
            "entropy", "v_loss", "reward_curriculum", "nonfinite_resets", "actor_lr",
            "approx_kl", "fall_rate", "episode_seconds", "foot_err_moving", "vel_err_moving",
            "progress_ratio", "speed_scale"]  # fmt: skip
    deadline = None if minutes is None else t0 + 60.0 * minutes
    timing: dict = {}
    state, rows = run_loop(
        path, state, step, cfg.llc.iterations, cfg.ckpt_every, "stage 1: LLC PPO",
        plot_keys=keys, postfix_keys=("reward", "hand_err"), stop_after=stop_after,
        deadline=deadline, timing=timing,
    )  # fmt: skip
    done_its = int(state.iteration)
    its = timing["iteration_s"]  # this call's iterations (none when resumed at the end)
    speed = {"compile_s": timing.get("compile_s", 0.0),
             "seconds_per_iteration": float(np.median(its)) if its else None}  # fmt: skip
    if done_its < cfg.llc.iterations:  # stopped early (stop_after or the deadline)
        return {"interrupted": True, "iterations_done": done_its, **speed}
    save_artifact(os.path.join(path, "final"), {"llc": state.learner}, {"stage": "llc"})
    last = _tail_mean(os.path.join(path, "metrics.jsonl"), 5)
    env_steps = cfg.llc.iterations * cfg.llc.num_envs * cfg.llc.rollout_steps
    record = {"final_metrics": last, "env_steps": env_steps,
              "speed_scale": float(state.speed_scale), **speed}  # fmt: skip
    if cfg.llc.eval_episodes > 0:
        record["eval"] = evaluate_llc(parts, state.learner, path)
    return finish(path, t0, record)


def latest_llc(parts: Parts, out: str) -> tuple[Any, dict]:
    """Stage 1's LLC in ``out``: its final artifact when the stage is done, else its newest
    verified checkpoint (a run stopped by ``--minutes`` or a kill). Returns (learner, info:
    ``finished``, ``iterations_done``, ``speed_scale`` reached when known); raises
    ``ConfigError`` when the stage has neither."""
    from refine_dp_jax.checkpoint import Checkpointer

    path = stage_dir(out, "llc")
    if (done := read_done(path, "final")) is not None:
        info = {"finished": True, "iterations_done": parts.cfg.llc.iterations,
                "speed_scale": done.get("speed_scale")}  # fmt: skip
        return load_llc(parts, out), info
    ckpt = os.path.join(path, "ckpt")
    if not complete_steps(ckpt):
        raise ConfigError(f"{path}: stage llc has neither finished nor a checkpoint (train it "
                          "first: refine-dp train-llc)")  # fmt: skip
    init, _, _ = make_llc_train(parts.env, parts.cfg.llc)
    template = jax.eval_shape(init, stage_key(parts, "llc"))  # shapes only: nothing compiled
    step, state, _ = Checkpointer(ckpt).restore_latest(template)
    llc = parts.cfg.llc
    info = {"finished": False, "iterations_done": int(step),
            "env_steps": int(step) * llc.num_envs * llc.rollout_steps,
            "speed_scale": float(state.speed_scale)}  # fmt: skip
    return state.learner, info


def evaluate_llc(parts: Parts, learner, path: str | None = None, info: dict | None = None,
                 variants: bool = True, pushes: bool = False) -> dict:  # fmt: skip
    """The trained LLC (deterministic) on ``llc.eval_episodes`` randomized episodes of its own
    task (``train/llc_eval.py``), with the commands of its training (``llc``) and with hand
    targets that are reachable by construction (``llc_reachable``: forward kinematics of
    random arm joints only; humanoid envs, whose reach-box targets lie partly out of reach),
    and the zero residual (the arm prior and the default legs alone) on the latter
    (``prior_only_reachable``). ``variants=False``: the first only (one compile). Written to
    ``path/eval.json`` when ``path`` is given, with ``info`` (``latest_llc``'s: which
    iteration was evaluated) under ``"llc_state"``. ``pushes`` (envs with torso pushes): each
    evaluation also tallies its pushes by magnitude and direction, and the falls within 3 s
    of them, under ``"push_recovery"`` (``llc_eval.push_recovery``)."""
    from refine_dp_jax.train.llc_eval import (
        make_llc_eval,
        push_outcomes,
        push_recovery,
        summarize,
        zero_policy,
    )

    cfg, env, ppo = parts.cfg, parts.env, parts.llc_ppo
    act = lambda p, obs: ppo.act(p, obs, jax.random.PRNGKey(0), True)[0]  # noqa: E731
    runs = {"llc": (env, act, learner)}
    if variants and hasattr(env.cfg, "command_reach_prob"):
        reach_env = make_env(cfg.env, **{**dict(cfg.env_overrides), "command_reach_prob": 0.0})
        runs["llc_reachable"] = (reach_env, act, learner)
        runs["prior_only_reachable"] = (reach_env, zero_policy(reach_env), None)
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 7)  # the same episodes for all
    out = {}
    for name, (e, policy, params) in runs.items():
        run = make_llc_eval(e, cfg.llc.eval_episodes, cfg.llc.command_hold_steps, policy,
                            cfg.llc.velocity_hold_steps, record_pushes=pushes)  # fmt: skip
        outs = run(params, key)
        out[name] = summarize(outs, e.dt)
        if pushes:
            out[name]["push_recovery"] = push_recovery(push_outcomes(outs, e.dt))
    if path is not None:
        write_json(os.path.join(path, "eval.json"), {**out, "llc_state": info} if info else out)
    return out


def stage_demos(parts: Parts, out: str) -> dict:
    """Stage 2: scripted planner -> frozen LLC -> MJX, keep successes."""
    path = stage_dir(out, "demos")
    if (done := read_done(path, ".")) is not None:
        return done
    cfg, t0 = parts.cfg, time.time()
    llc = load_llc(parts, out)
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.demos.num_episodes, desc="stage 2: demonstrations")

    def progress(kept, attempted):
        bar.n = min(kept, cfg.demos.num_episodes)
        bar.set_postfix(attempted=attempted)
        bar.refresh()

    demos = collect_demos(
        parts.env, parts.llc_ppo, llc, cfg.demos, cfg.hold, stage_key(parts, "demos"), progress
    )
    bar.close()
    save_demos(demos, path)
    attempted = demos.meta["collection"]["attempted"]
    steps = math.ceil(parts.env.episode_steps / cfg.hold) * cfg.hold
    return finish(path, t0, {**demos.meta["collection"], "kept": demos.meta["num_episodes"],
                             "env_steps": attempted * steps})  # fmt: skip


def stage_pretrain(parts: Parts, out: str, stop_after: int | None = None) -> dict:
    """Stage 3: noise-prediction pre-training of the DP on demonstration chunks."""
    path = stage_dir(out, "dp")
    if (done := read_done(path, "final")) is not None:
        return done
    cfg, t0 = parts.cfg, time.time()
    d = cfg.diffusion
    demos = load_demos(os.path.join(out, "demos"), parts.env)
    conds, actions, mean, std = chunk_dataset(demos, parts.env, d.obs_history, d.horizon)
    from refine_dp_jax.diffusion.schedule import make_schedule

    apply = lambda p, *a: parts.denoiser.apply({"params": p}, *a)
    chunk = cfg.pretrain_chunk
    n_calls = math.ceil(cfg.pretrain.steps / chunk)
    epoch = make_pretrain_epoch(apply, make_schedule(d.num_steps), cfg.pretrain, chunk)
    conds_j, actions_j = jnp.asarray(conds), jnp.asarray(actions)

    def step(s: PTState):
        key, k = jax.random.split(s.key)
        inner, losses = epoch(s.inner, actions_j, conds_j, k)
        return PTState(inner, key), {"loss": jnp.mean(losses)}

    state = PTState(pretrain_init(denoiser_template(parts)), stage_key(parts, "dp"))
    state, rows = run_loop(
        path, state, step, n_calls, 1, "stage 3: DP pre-training", plot_keys=["loss"],
        postfix_keys=("loss",), stop_after=stop_after,
    )  # fmt: skip
    if stop_after is not None and len(rows) >= stop_after:
        return {"interrupted": True}
    normalizer = ObsNormalizer(jnp.asarray(mean), jnp.asarray(std))
    save_artifact(
        os.path.join(path, "final"), {"params": state.inner.ema, "normalizer": normalizer},
        {"stage": "dp", "samples": int(len(conds))},
    )  # fmt: skip
    return finish(path, t0, {"samples": int(len(conds)), "final_metrics": _tail_mean(
        os.path.join(path, "metrics.jsonl"), 2), "env_steps": 0})  # fmt: skip


def load_dp(parts: Parts, out: str):
    target = {"params": denoiser_template(parts), "normalizer": normalizer_template(parts)}
    state, _ = load_artifact(os.path.join(out, "dp", "final"), target)
    return state["params"], state["normalizer"]


def finetune_env_steps(cfg: ExperimentConfig, rollouts: int) -> int:
    f, d = cfg.finetune, cfg.diffusion
    return f.iterations * rollouts * f.num_envs * f.decisions * d.exec_steps * cfg.hold


def finetune_state(parts: Parts, cfg: ExperimentConfig, out: str, joint: bool) -> FinetuneState:
    """Initial stage-4 state from the run's pre-trained DP and LLC, seeded by ``cfg.seed`` and
    with ``cfg.dppo``'s dynamic hyperparameters (so sweep members differ only in leaves)."""
    name = "finetune_joint" if joint else "finetune_dp"
    params, normalizer = load_dp(parts, out)
    k_c, k_env, k_state = jax.random.split(seed_key(cfg.seed, name), 3)
    own = joint and cfg.finetune.llc_own_envs  # the LLC phase's own envs
    d = cfg.diffusion
    critic_params = parts.critic.init(
        k_c, jnp.zeros((1, d.obs_history, parts.env.dp_observation_size))
    )["params"]
    planner = parts.dppo.init(params, critic_params, cfg.finetune.num_envs)
    return committed(FinetuneState(
        planner=planner.replace(hyper=DPPOHyper.from_config(cfg.dppo)),
        normalizer=normalizer,
        llc=load_llc(parts, out),
        hier=_init_hier(parts, cfg.finetune.num_envs, k_env),
        key=k_state,
        hier_llc=_init_hier(parts, cfg.finetune.num_envs, jax.random.fold_in(k_env, 1)) if own
        else None,
    ))  # fmt: skip


def finetune_step(parts: Parts, cfg: ExperimentConfig, joint: bool):
    fcfg = dataclasses.replace(cfg.finetune, joint=joint)
    return make_dppo_train(
        parts.env, parts.dppo, parts.llc_ppo, cfg.diffusion, cfg.dppo, fcfg, cfg.llc, cfg.hold
    )


def stage_finetune(parts: Parts, out: str, joint: bool, stop_after: int | None = None) -> dict:
    """Stage 4: DPPO on the DP (and PPO on the LLC when ``joint``), one jitted step each."""
    name = "finetune_joint" if joint else "finetune_dp"
    path = stage_dir(out, name)
    if (done := read_done(path, "final")) is not None:
        return done
    cfg, t0 = parts.cfg, time.time()
    state = finetune_state(parts, cfg, out, joint)
    keys = ["dp/success_rate", "dp/task_reward", "dp/v_loss", "dp/kl_after_update", "dp/clip_frac",
            "dp/hand_err", "llc/tracking_reward", "llc/v_loss", "dp/nonfinite_resets"]  # fmt: skip
    state, rows = run_loop(
        path, state, finetune_step(parts, cfg, joint), cfg.finetune.iterations, cfg.ckpt_every,
        f"stage 4: {'joint DPPO + LLC PPO' if joint else 'DPPO (DP only)'}", plot_keys=keys,
        postfix_keys=("dp/success_rate", "dp/kl_after_update"), stop_after=stop_after,
    )  # fmt: skip
    if stop_after is not None and len(rows) >= stop_after:
        return {"interrupted": True}
    save_artifact(
        os.path.join(path, "final"),
        {"planner": state.planner, "normalizer": state.normalizer, "llc": state.llc},
        {"stage": name},
    )
    return finish(path, t0, {
        "final_metrics": _tail_mean(os.path.join(path, "metrics.jsonl"), 5),
        "env_steps": finetune_env_steps(cfg, 2 if joint else 1),
        "dp_updates": cfg.finetune.iterations,
    })  # fmt: skip


def baseline_ppo(parts: Parts):
    cfg = parts.cfg
    d = cfg.diffusion
    in_dim = d.obs_history * parts.env.dp_observation_size
    out_dim = d.exec_steps * parts.env.command_size
    return make_gaussian_ppo(cfg.baseline.ppo, in_dim, in_dim, out_dim)


def stage_baseline(parts: Parts, out: str, stop_after: int | None = None) -> dict:
    """Baseline: behaviour-cloned MLP planner, fine-tuned with Gaussian PPO, same budget."""
    path = stage_dir(out, "mlp_ppo")
    if (done := read_done(path, "final")) is not None:
        return done
    cfg, t0 = parts.cfg, time.time()
    d, b = cfg.diffusion, cfg.baseline
    ppo = baseline_ppo(parts)
    demos = load_demos(os.path.join(out, "demos"), parts.env)
    conds, actions, mean, std = chunk_dataset(demos, parts.env, d.obs_history, d.exec_steps)
    x = jnp.asarray(conds.reshape(len(conds), -1))
    y = jnp.asarray(actions.reshape(len(actions), -1))
    key = stage_key(parts, "mlp_ppo")
    k_init, k_bc, k_env, k_state = jax.random.split(key, 4)
    learner = bc_train(ppo, cfg.baseline, x, y, k_init, k_bc)
    normalizer = ObsNormalizer(jnp.asarray(mean), jnp.asarray(std))
    step = make_mlp_ppo_train(parts.env, ppo, parts.llc_ppo, b.ppo, d, cfg.finetune, cfg.hold)
    state = committed(FinetuneState(
        planner=learner, normalizer=normalizer, llc=load_llc(parts, out),
        hier=_init_hier(parts, cfg.finetune.num_envs, k_env),
        key=k_state,
    ))  # fmt: skip
    state, rows = run_loop(
        path, state, step, cfg.finetune.iterations, cfg.ckpt_every, "baseline: MLP + PPO",
        plot_keys=["mlp/success_rate", "mlp/task_reward", "mlp/v_loss", "mlp/approx_kl"],
        postfix_keys=("mlp/success_rate",), stop_after=stop_after,
    )  # fmt: skip
    if stop_after is not None and len(rows) >= stop_after:
        return {"interrupted": True}
    save_artifact(
        os.path.join(path, "final"),
        {"planner": state.planner, "normalizer": state.normalizer},
        {"stage": "mlp_ppo"},
    )
    return finish(path, t0, {"final_metrics": _tail_mean(os.path.join(path, "metrics.jsonl"), 5),
                             "env_steps": finetune_env_steps(cfg, 1)})  # fmt: skip


def bc_train(ppo, bcfg: BaselineConfig, x, y, k_init, k_bc):
    """Behaviour cloning of the Gaussian planner's mean (MSE), one compiled scan."""
    from refine_dp_jax.train.optim import adam_apply, adam_init

    learner = ppo.init(k_init)

    @jax.jit
    def run(learner, key):
        def body(carry, k):
            params, opt = carry
            idx = jax.random.randint(k, (bcfg.bc_batch,), 0, x.shape[0])

            def loss(p):
                mean, _ = ppo.act(learner.replace(params=learner.params.replace(actor=p)),
                                  x[idx], k, True)  # fmt: skip
                return jnp.mean(jnp.square(mean - y[idx]))

            value, g = jax.value_and_grad(loss)(params)
            params, opt, _ = adam_apply(params, g, opt, bcfg.bc_lr)
            return (params, opt), value

        actor = learner.params.actor
        (actor, _), losses = jax.lax.scan(
            body, (actor, adam_init(actor)), jax.random.split(key, bcfg.bc_steps)
        )
        return learner.replace(params=learner.params.replace(actor=actor)), losses

    learner, _ = run(learner, k_bc)
    return learner


def load_finetuned(parts: Parts, out: str, name: str):
    target = {
        "planner": parts.dppo.init(denoiser_template(parts), parts.critic.init(
            jax.random.PRNGKey(0),
            jnp.zeros((1, parts.cfg.diffusion.obs_history, parts.env.dp_observation_size)),
        )["params"], parts.cfg.finetune.num_envs),
        "normalizer": normalizer_template(parts),
        "llc": llc_template(parts),
    }  # fmt: skip
    state, _ = load_artifact(os.path.join(out, name, "final"), target)
    return state


def load_policy(parts: Parts, out: str, name: str):
    """(DPPO learner, DP observation normalizer, LLC learner) of the run's DP policy ``name``:
    ``pretrained`` (stage 3's DP with the stage-1 LLC), ``finetune_dp`` or ``finetune_joint``."""
    if name == "pretrained":
        params, normalizer = load_dp(parts, out)
        d = parts.cfg.diffusion
        critic0 = parts.critic.init(
            jax.random.PRNGKey(0), jnp.zeros((1, d.obs_history, parts.env.dp_observation_size))
        )["params"]
        return parts.dppo.init(params, critic0, 1), normalizer, load_llc(parts, out)
    st = load_finetuned(parts, out, name)
    return st["planner"], st["normalizer"], st["llc"]


def load_mlp_policy(parts: Parts, out: str):
    """(planner function, (MLP-PPO learner, observation normalizer)) of the run's baseline; it
    runs on the stage-1 LLC."""
    ppo = baseline_ppo(parts)
    tmpl = {"planner": ppo.init(jax.random.PRNGKey(0)), "normalizer": normalizer_template(parts)}
    st, _ = load_artifact(os.path.join(out, "mlp_ppo", "final"), tmpl)
    plan = mlp_plan_fn(ppo, parts.cfg.diffusion.exec_steps, parts.env.command_size)
    return plan, (st["planner"], st["normalizer"])


def llc_steps_per_iteration(cfg: ExperimentConfig) -> int:
    """LLC steps of one DPPO iteration's rollout (every env, every executed command's hold)."""
    f = cfg.finetune
    return f.num_envs * f.decisions * cfg.diffusion.exec_steps * cfg.hold


def make_evaluator(parts: Parts, plan, num_envs: int, env=None, llc_ppo=None):
    """Jitted deterministic evaluation of the planner function ``plan`` on the first episodes
    of ``num_envs`` envs: ``f(planner_params, llc, key, curriculum) -> metrics``. ``env`` and
    ``llc_ppo`` replace the run's (sim-to-sim: another physics, an exported LLC)."""
    d = parts.cfg.diffusion
    return jax.jit(make_evaluate(
        env or parts.env, llc_ppo or parts.llc_ppo, plan, num_envs=num_envs,
        obs_history=d.obs_history, exec_steps=d.exec_steps, hold=parts.cfg.hold,
    ))  # fmt: skip


def stage_evaluate(parts: Parts, out: str) -> dict:
    """Success rate (first episode of each of ``eval_episodes`` envs, deterministic sampling),
    completion time, hand tracking error for every policy; a video of the fine-tuned policy
    that succeeded most; a bar chart."""
    path = stage_dir(out, "eval")
    if (done := read_done(path)) is not None:
        return done
    cfg, t0 = parts.cfg, time.time()
    d = cfg.diffusion
    env = parts.env
    dp_plan = dp_plan_fn(parts.dppo, d.ft_steps)
    eval_dp = make_evaluator(parts, dp_plan, cfg.eval_episodes)
    key = stage_key(parts, "eval")
    results: dict[str, dict] = {}
    policies = {}
    for name in ("pretrained", "finetune_dp", "finetune_joint"):
        if name == "pretrained" or read_done(os.path.join(out, name)) is not None:
            planner, normalizer, llc_p = load_policy(parts, out, name)
            policies[name] = ((planner, normalizer), llc_p)
    llc = policies["pretrained"][1]  # the stage-1 LLC (the baseline runs on it)
    policies = committed(policies)  # one compilation of eval_dp for all of them
    pp0, llc0 = policies["pretrained"]
    what = f"evaluation on {cfg.eval_episodes} envs"
    hint = "lower eval_episodes"
    compile_checked(eval_dp, pp0, llc0, key, cfg.task_curriculum, what=what, hint=hint)
    for name, (pp, llc_l) in policies.items():
        results[name] = _floats(eval_dp(pp, llc_l, key, cfg.task_curriculum))
        print(f"eval {name}: {results[name]}")
    if read_done(os.path.join(out, "mlp_ppo")) is not None:
        plan, params = load_mlp_policy(parts, out)
        eval_mlp = make_evaluator(parts, plan, cfg.eval_episodes)
        results["mlp_ppo"] = _floats(eval_mlp(params, llc, key, cfg.task_curriculum))
        print(f"eval mlp_ppo: {results['mlp_ppo']}")
    write_json(os.path.join(path, "results.json"), results)
    _plot_success(results, os.path.join(path, "success.png"))
    video = None
    # the video shows the fine-tuned DP policy that succeeded most (ties: the later stage)
    tuned = [n for n in policies if n != "pretrained"] or ["pretrained"]
    best = max(reversed(tuned), key=lambda n: results[n]["success_rate"])
    if cfg.video_episodes > 0:
        try:
            rec = jax.jit(
                make_trajectory_recorder(
                    env,
                    parts.llc_ppo,
                    dp_plan,
                    d.obs_history,
                    d.exec_steps,
                    cfg.hold,
                    cfg.video_episodes,
                )
            )
            pp, llc_l = policies[best]
            qpos, mocap = jax.tree.map(np.asarray, rec(pp, llc_l, key))
            video = render_video(
                env, qpos, os.path.join(path, "video.mp4"), fps=1.0 / env.dt, mocap_pos=mocap
            )
        except Exception as e:  # rendering needs an OpenGL backend (libosmesa6)
            print(f"warning: video not rendered ({type(e).__name__}: {e})")
    steps = cfg.eval_episodes * (len(results)) * env.episode_steps
    return finish(path, t0, {"results": results, "video": video, "video_policy": best,
                             "env_steps": steps})  # fmt: skip


STAGES = ("llc", "demos", "dp", "finetune_dp", "finetune_joint", "mlp_ppo", "eval")


def write_summary(cfg: ExperimentConfig, out: str) -> dict:
    done = {s: read_done(os.path.join(out, s)) for s in STAGES}
    res = (done.get("eval") or {}).get("results", {})
    sr = lambda n: res.get(n, {}).get("success_rate")
    summary = {
        "experiment_env": cfg.env,
        "success_rate_pretrained": sr("pretrained"),
        "success_rate_finetuned": sr("finetune_dp"),
        "success_rate_joint": sr("finetune_joint"),
        "success_rate_mlp_ppo": sr("mlp_ppo"),
        "completion_time_s": {k: v.get("completion_time_s") for k, v in res.items()},
        "hand_err": {k: v.get("hand_err") for k, v in res.items()},
        # how the evaluation's failed episodes ended (shares of all episodes; older runs: None)
        "outcomes": {k: {o: v.get(f"{o}_rate") for o in OUTCOMES} for k, v in res.items()},
        "eval_episodes": cfg.eval_episodes,
        "dp_updates": cfg.finetune.iterations,
        "demonstrations": (done.get("demos") or {}).get("kept"),
        "demo_collection_success_rate": (done.get("demos") or {}).get("success_rate"),
        "env_steps": int(sum((r or {}).get("env_steps", 0) for r in done.values())),
        "wall_seconds": float(sum((r or {}).get("seconds", 0.0) for r in done.values())),
        "stage_seconds": {s: (r or {}).get("seconds") for s, r in done.items()},
        "stages_done": [s for s, r in done.items() if r is not None],
    }
    write_json(os.path.join(out, "summary.json"), summary)
    return summary


def run_pipeline(cfg: ExperimentConfig, out: str) -> dict:
    parts = build(cfg)  # checks env and env_overrides before anything is written
    os.makedirs(out, exist_ok=True)
    save_config(cfg, out)
    stage_llc(parts, out)
    stage_demos(parts, out)
    stage_pretrain(parts, out)
    if cfg.run_dp_only:
        stage_finetune(parts, out, joint=False)
    if cfg.finetune.joint:
        stage_finetune(parts, out, joint=True)
    if cfg.run_baseline:
        stage_baseline(parts, out)
    stage_evaluate(parts, out)
    summary = write_summary(cfg, out)
    print(json.dumps(summary, indent=1))
    print(f"report: {write_report(out)}")
    return summary


# ---------------------------------------------------------------------------------------------
# Config persistence


def config_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _commit() -> str | None:
    """Commit of the checkout this package runs from (+ "-dirty" with uncommitted changes to
    tracked files); None outside a git checkout."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        git = lambda *a: subprocess.run(
            ["git", "-C", root, *a], capture_output=True, text=True, timeout=10
        )
        head = git("rev-parse", "--short=12", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def save_config(cfg: ExperimentConfig, out: str, run: dict | None = None) -> None:
    """Writes config.json; refuses to mix a run directory with a different config. ``run``:
    how the run was started (experiment, overrides, command), kept from an earlier write when
    not given; versions and commit are those of the latest write."""
    path = os.path.join(out, "config.json")
    stored = refuse_other_config(cfg, out)  # always checked, whether ``run`` is given or not
    run = run or stored.get("run")
    import mujoco

    versions = {"jax": jax.__version__, "mujoco": mujoco.__version__, "commit": _commit()}
    record = {"config": config_dict(cfg), "versions": versions, **({"run": run} if run else {})}
    write_json(path, record)


def refuse_other_config(cfg: ExperimentConfig, out: str) -> dict:
    """ConfigError if the run directory ``out`` was started with a config other than ``cfg``
    (nothing to refuse where it holds no config.json yet); else its stored config.json record
    ({} where there is none)."""
    path = os.path.join(out, "config.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        stored = json.load(f)
    old = stored.get("config")
    new = config_dict(cfg)
    if old is not None and old != new:
        diff = _diff(old, new)
        raise ConfigError(
            f"{out} was started with another config ({'; '.join(diff[:5])}); "
            "use a new --out or the same settings"
        )
    return stored


def _diff(a, b) -> list[str]:
    from refine_dp_jax.report import config_diff

    return [f"{k}: {x} -> {y}" for k, x, y in config_diff(a, b)]


def _floats(m: dict) -> dict:
    return {k: float(np.asarray(v)) for k, v in m.items()}


def _tail_mean(path: str, n: int) -> dict:
    from refine_dp_jax.logs import read_jsonl

    rows = read_jsonl(path)[-n:]
    if not rows:
        return {}
    keys = [k for k in rows[-1] if k != "iteration"]
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}


def _plot_success(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    vals = [results[n]["success_rate"] * 100 for n in names]
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 1, 3))
    bars = ax.bar(names, vals, color=["#999", "#4c72b0", "#55a868", "#c44e52"][: len(names)])
    for bar_, v in zip(bars, vals, strict=True):
        ax.text(bar_.get_x() + bar_.get_width() / 2, v + 1, f"{v:.0f}%", ha="center", fontsize=9)
    ax.set_ylim(0, 105)
    ax.set_ylabel("success rate (%)")
    ax.set_title(f"{results[names[0]]['episodes']:.0f} episodes each, deterministic sampling")
    save_figure(fig, path)
