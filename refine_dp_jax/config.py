"""Frozen configuration dataclasses. Static sizes are Python ints; values that a sweep may vary
are turned into array leaves of the training state (see ``train.dppo.DPPOHyper``).

Every config validates itself in ``__post_init__`` so that bad values fail with a clear
message before anything is compiled: ``check_fields`` checks the type of every field (numbers
finite, integers integral, flags bool, nested configs of their class) and the allowed range
of each (``Rule``s), then the cross-field checks follow. Messages name the field, the value and
what is allowed: ``pretrain.lr = inf: must be a finite number > 0``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from refine_dp_jax.diffusion.networks import _ACTIVATIONS, DenoiserConfig
from refine_dp_jax.errors import ConfigError


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


# ---------------------------------------------------------------------------------------------
# Field validation


@dataclass(frozen=True)
class Rule:
    """An allowed range: ``ok(value)`` and its description (``"> 0"``)."""

    ok: Callable[[Any], bool]
    text: str


def at_least(lo) -> Rule:
    return Rule(lambda v: v >= lo, f">= {lo}")


def above(lo) -> Rule:
    return Rule(lambda v: v > lo, f"> {lo}")


def within(lo, hi, lo_open: bool = False, hi_open: bool = False) -> Rule:
    def ok(v):
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    return Rule(ok, f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")


def one_of(*names: str) -> Rule:
    return Rule(lambda v: v in names, "one of " + "|".join(names))


POSITIVE, NONNEG, ONE_PLUS = above(0), at_least(0), at_least(1)
UNIT, DISCOUNT = within(0, 1), within(0, 1, lo_open=True)
WIDTHS = Rule(lambda v: len(v) >= 1 and all(w >= 1 for w in v), "at least one width, each >= 1")
_NUMBER = (int, float)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: no type checks for this class
        return {}


def _type_problem(hint: Any, v: Any) -> str | None:
    """What ``v`` must be to match ``hint`` (None when it does)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:  # checked by the config itself (ExperimentConfig.env_overrides)
        return None
    if hint is bool:
        return None if isinstance(v, bool) else "must be true or false"
    if hint is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
        return None if ok else "must be an integer"
    if hint is float:
        if isinstance(v, bool) or not isinstance(v, _NUMBER) or not math.isfinite(v):
            return "must be a finite number"
        return None
    if hint is str:
        return None if isinstance(v, str) else "must be a string"
    if origin is tuple:
        if not isinstance(v, tuple):
            return "must be a tuple"
        items = args[:1] * len(v) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(v):
            return f"must be a tuple of {len(items)} values"
        for h, x in zip(items, v, strict=True):
            if (p := _type_problem(h, x)) is not None:
                return p if "(each" in p else f"{p} (each element)"
        return None
    if origin in (typing.Union, types.UnionType):
        probs = [_type_problem(h, v) for h in args]
        return None if any(p is None for p in probs) else " or ".join(p for p in probs if p)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(v, hint):
            return None
        first = dataclasses.fields(hint)[0].name
        return (f"is a config section ({hint.__name__}); set its fields, e.g. "
                f"NAME.{first}=...")  # fmt: skip
    return None


def check_value(cls: type, name: str, value: Any, rules: dict[str, Rule] | None = None) -> None:
    """Type of ``value`` for field ``name`` of ``cls`` (finite numbers), then its range rule."""
    problem = _type_problem(_hints(cls).get(name, Any), value)
    rule = (rules or {}).get(name) or EXTERNAL_RULES.get(cls, {}).get(name)
    if problem is not None:
        if rule is not None and problem == "must be a finite number":
            problem += f" {rule.text}"
        raise ConfigError.for_field(name, value, problem.replace("NAME", name))
    if rule is not None:
        try:
            ok = bool(rule.ok(value))
        except TypeError:
            ok = False
        if not ok:
            prefix = "a finite number " if isinstance(value, float) else ""
            raise ConfigError.for_field(name, value, f"must be {prefix}{rule.text}")


def check_fields(cfg: Any, rules: dict[str, Rule] | None = None) -> None:
    """Checks every field of the config dataclass ``cfg`` (see ``check_value``). Nested configs
    validate themselves; those that do not (``EXTERNAL_RULES``) are checked here too."""
    if rules is not None:
        _SELF_CHECKING.add(type(cfg))
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        check_value(type(cfg), f.name, v, rules)
        if dataclasses.is_dataclass(v) and type(v) in EXTERNAL_RULES:
            try:
                check_fields(v)
            except ConfigError as e:
                raise e.prefixed(f.name) from None


_SELF_CHECKING: set[type] = set()  # classes whose __post_init__ calls check_fields

# Configs defined outside this module's ownership that do not call ``check_fields`` themselves.
EXTERNAL_RULES: dict[type, dict[str, Rule]] = {
    DenoiserConfig: {
        "kind": one_of("mlp", "dit"),
        "hidden": ONE_PLUS,
        "depth": ONE_PLUS,
        "heads": ONE_PLUS,
        "time_dim": at_least(2),
        "activation": one_of(*sorted(_ACTIVATIONS)),
    },
}


@dataclass(frozen=True)
class DiffusionConfig:
    """The diffusion policy: chunking, noise schedule, sampler and the DPPO split."""

    obs_history: int = 2  # To: past DP observations fed to the denoiser
    horizon: int = 8  # Ta: commands per denoised chunk
    exec_steps: int = 4  # Ta_exec: commands executed before replanning
    num_steps: int = 10  # K: training noise levels (cosine schedule)
    sampler: str = "ddpm"  # 'ddpm' (N = K steps) or 'ddim' (N = ddim_steps)
    ddim_steps: int = 5  # N for DDIM; must divide K
    ft_steps: int = 5  # K': last chain steps served by the trainable copy
    eta_train: float = 1.0  # DDIM eta while fine-tuning (stochastic chain)
    eta_eval: float = 0.0  # DDIM eta at evaluation
    # Variance of the last DDPM step (k = 0), whose true posterior variance is 0:
    # 'dppo' clamps it at 1e-20 (DPPO's code), so the std floors of sampling and likelihood set
    # it; 'ddpm_clipped' copies the k = 1 variance into k = 0 (the DDPM paper's clipped log).
    final_step_variance: str = "dppo"
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)

    def __post_init__(self):
        check_fields(self, {
            "obs_history": ONE_PLUS, "horizon": ONE_PLUS, "exec_steps": ONE_PLUS,
            "num_steps": ONE_PLUS, "sampler": one_of("ddpm", "ddim"), "ddim_steps": ONE_PLUS,
            "ft_steps": ONE_PLUS, "eta_train": NONNEG, "eta_eval": NONNEG,
            "final_step_variance": one_of("dppo", "ddpm_clipped"),
        })  # fmt: skip
        _check(
            1 <= self.exec_steps <= self.horizon,
            f"exec_steps (Ta_exec={self.exec_steps}) must be in [1, horizon Ta={self.horizon}]",
        )
        if self.sampler == "ddim":
            _check(
                1 <= self.ddim_steps <= self.num_steps and self.num_steps % self.ddim_steps == 0,
                f"ddim_steps={self.ddim_steps} must divide K={self.num_steps}",
            )
        _check(
            1 <= self.ft_steps <= self.chain_steps,
            f"ft_steps (K'={self.ft_steps}) must be in [1, {self.chain_steps}] "
            f"(the number of {self.sampler} chain steps)",
        )

    @property
    def chain_steps(self) -> int:
        """N: sampling steps of the chain."""
        return self.num_steps if self.sampler == "ddpm" else self.ddim_steps


@dataclass(frozen=True)
class PretrainConfig:
    """Behaviour-cloning pre-training of the DP (eps-prediction)."""

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-6
    ema_decay: float = 0.995  # EMA of the parameters; the EMA copy is what gets fine-tuned
    warmup_steps: int = 100

    def __post_init__(self):
        check_fields(self, {
            "steps": ONE_PLUS, "batch_size": ONE_PLUS, "lr": POSITIVE, "weight_decay": NONNEG,
            "ema_decay": within(0, 1, hi_open=True), "warmup_steps": NONNEG,
        })  # fmt: skip


@dataclass(frozen=True)
class DPPOConfig:
    """DPPO fine-tuning of the DP (defaults after DPPO's state-based settings)."""

    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    clip_eps: float = 0.01  # eps at the last denoising step
    clip_eps_base: float = 0.001  # eps at the noisiest fine-tuned step
    gamma: float = 0.99  # per decision (executed chunk)
    gae_lambda: float = 0.95
    gamma_denoise: float = 0.99
    vf_coef: float = 0.5
    sample_std_floor: float = 0.1  # exploration: min std of each sampling step
    logprob_std_floor: float = 0.1  # min std in the likelihood
    noise_clip: float = 3.0  # z clipped to +-noise_clip
    x0_clip: float = 1.0  # predicted clean action clipped
    final_clip: float = 1.0  # executed action chunk clipped
    epochs: int = 5
    minibatches: int = 4
    reward_scaling: bool = True
    critic_warmup_iters: int = 2  # critic-only iterations before the actor moves
    max_grad_norm: float = 0.0  # 0 = no clipping (DPPO's default)
    critic_hidden: tuple[int, ...] = (256, 256)  # V(s) MLP widths
    # Fit V(s) once per decision instead of once per (decision, denoising step) pair (DPPO's
    # way): V depends on the decision only, so both have the same expected gradient, and per
    # decision does K' times less critic work, but each critic minibatch then holds
    # N / minibatches decisions instead of about N (1 - (1 - 1/minibatches)^K') distinct ones:
    # a noisier critic. Off by default: on the testbed it saves ~10 % of the update there and
    # its learning curve was not better (README, "DPPO fidelity and speed").
    critic_per_decision: bool = False
    # Extra critic-only epochs after the DPPO epochs: V(s) regressed on the batch's returns
    # over its decisions, in ``minibatches`` minibatches per epoch, Adam at critic_lr. With
    # one DPPO epoch of one minibatch (the humanoid tasks' regime) the critic otherwise gets
    # one gradient step per iteration and the advantages stay as noisy as the raw returns.
    critic_epochs: int = 0

    def __post_init__(self):
        check_fields(self, {
            "actor_lr": POSITIVE, "critic_lr": POSITIVE, "clip_eps": POSITIVE,
            "clip_eps_base": POSITIVE, "gamma": DISCOUNT, "gae_lambda": UNIT,
            "gamma_denoise": DISCOUNT, "vf_coef": NONNEG, "sample_std_floor": POSITIVE,
            "logprob_std_floor": POSITIVE, "noise_clip": POSITIVE, "x0_clip": POSITIVE,
            "final_clip": POSITIVE, "epochs": ONE_PLUS, "minibatches": ONE_PLUS,
            "critic_warmup_iters": NONNEG, "max_grad_norm": NONNEG, "critic_hidden": WIDTHS,
            "critic_epochs": NONNEG,
        })  # fmt: skip
        _check(
            0 < self.clip_eps_base <= self.clip_eps,
            f"need 0 < clip_eps_base ({self.clip_eps_base}) <= clip_eps ({self.clip_eps})",
        )


def check_divisible(total: int, minibatches: int, what: str) -> int:
    """Minibatch size of ``total`` samples in ``minibatches``; a clear error if not divisible."""
    if minibatches < 1 or total % minibatches:
        raise ConfigError(
            f"{what}: batch of {total} samples is not divisible by minibatches={minibatches}"
        )
    return total // minibatches


def replace(cfg, **changes):
    """dataclasses.replace that accepts dotted keys for nested configs ('dppo.actor_lr')."""
    nested: dict[str, dict] = {}
    flat = {}
    for k, v in changes.items():
        if "." in k:
            head, rest = k.split(".", 1)
            nested.setdefault(head, {})[rest] = v
        else:
            flat[k] = v
    names = {f.name for f in dataclasses.fields(cfg)}
    for k in list(flat) + list(nested):
        if k not in names:
            raise ConfigError(f"{type(cfg).__name__} has no field {k!r}; fields: {sorted(names)}")
    if type(cfg) not in _SELF_CHECKING:  # a config without check_fields: check here
        for k, v in flat.items():
            check_value(type(cfg), k, v)
    for head, sub in nested.items():
        section = getattr(cfg, head)
        if not dataclasses.is_dataclass(section):
            raise ConfigError(f"{head} is a value, not a config section: set it as {head}=...")
        try:
            flat[head] = replace(section, **sub)
        except ConfigError as e:
            raise e.prefixed(head) from None
    try:
        return dataclasses.replace(cfg, **flat)
    except ConfigError:
        raise
    except (TypeError, ValueError, ArithmeticError) as e:  # a config without its own checks
        raise ConfigError(f"{type(cfg).__name__}: {e}") from None
