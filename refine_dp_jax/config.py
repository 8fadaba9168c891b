"""Frozen configuration dataclasses. Static sizes are Python ints; values that a sweep may vary
are turned into array leaves of the training state (see ``train.dppo.DPPOHyper``).

Every config validates itself in ``__post_init__`` so that bad values fail with a clear
message before anything is compiled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from refine_dp_jax.diffusion.networks import DenoiserConfig
from refine_dp_jax.errors import ConfigError


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


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
        _check(self.obs_history >= 1, f"obs_history (To) must be >= 1, got {self.obs_history}")
        _check(self.horizon >= 1, f"horizon (Ta) must be >= 1, got {self.horizon}")
        _check(
            1 <= self.exec_steps <= self.horizon,
            f"exec_steps (Ta_exec={self.exec_steps}) must be in [1, horizon Ta={self.horizon}]",
        )
        _check(self.num_steps >= 1, f"num_steps (K) must be >= 1, got {self.num_steps}")
        _check(self.sampler in ("ddpm", "ddim"), f"sampler must be ddpm|ddim, got {self.sampler!r}")
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
        _check(self.eta_train >= 0 and self.eta_eval >= 0, "DDIM eta must be >= 0")
        _check(
            self.final_step_variance in ("dppo", "ddpm_clipped"),
            f"final_step_variance must be dppo|ddpm_clipped, got {self.final_step_variance!r}",
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
        _check(self.steps >= 1, f"pretrain steps must be >= 1, got {self.steps}")
        _check(self.batch_size >= 1, f"pretrain batch_size must be >= 1, got {self.batch_size}")
        _check(self.lr > 0, f"pretrain lr must be > 0, got {self.lr}")
        _check(0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}")


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
    # Fit V(s) once per decision instead of once per (decision, denoising step) pair: V depends
    # on the decision only, so the per-pair loss is the same regression repeated K' times.
    critic_per_decision: bool = True

    def __post_init__(self):
        _check(
            self.sample_std_floor > 0, f"sample_std_floor must be > 0, got {self.sample_std_floor}"
        )
        _check(
            self.logprob_std_floor > 0,
            f"logprob_std_floor must be > 0, got {self.logprob_std_floor}",
        )
        _check(self.actor_lr > 0 and self.critic_lr > 0, "learning rates must be > 0")
        _check(
            0 < self.clip_eps_base <= self.clip_eps,
            f"need 0 < clip_eps_base ({self.clip_eps_base}) <= clip_eps ({self.clip_eps})",
        )
        _check(0 < self.gamma <= 1 and 0 <= self.gae_lambda <= 1, "gamma in (0,1], lambda in [0,1]")
        _check(0 < self.gamma_denoise <= 1, "gamma_denoise must be in (0, 1]")
        _check(
            self.noise_clip > 0 and self.x0_clip > 0 and self.final_clip > 0, "clips must be > 0"
        )
        _check(self.epochs >= 1 and self.minibatches >= 1, "epochs and minibatches must be >= 1")
        _check(self.max_grad_norm >= 0, "max_grad_norm must be >= 0")
        _check(
            len(self.critic_hidden) >= 1 and all(h >= 1 for h in self.critic_hidden),
            f"critic_hidden needs >= 1 layer of width >= 1, got {self.critic_hidden}",
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
    for head, sub in nested.items():
        flat[head] = replace(getattr(cfg, head), **sub)
    return dataclasses.replace(cfg, **flat)
