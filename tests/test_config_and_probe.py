"""Bad input fails early with a clear message; the DPPO bandit probe learns."""

import pytest

from refine_dp_jax.config import (
    ConfigError,
    DiffusionConfig,
    DPPOConfig,
    PretrainConfig,
    check_divisible,
    replace,
)
from refine_dp_jax.diffusion.networks import DenoiserConfig
from refine_dp_jax.probe import BanditProbeConfig, run_bandit_probe


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: DiffusionConfig(num_steps=10, ft_steps=11), "ft_steps"),
        (
            lambda: DiffusionConfig(sampler="ddim", num_steps=20, ddim_steps=5, ft_steps=6),
            "ft_steps",
        ),
        (lambda: DiffusionConfig(horizon=4, exec_steps=5), "exec_steps"),
        (lambda: DiffusionConfig(sampler="ddim", num_steps=20, ddim_steps=6), "ddim_steps"),
        (lambda: DiffusionConfig(sampler="euler"), "sampler"),
        (lambda: DPPOConfig(sample_std_floor=0.0), "sample_std_floor"),
        (lambda: DPPOConfig(logprob_std_floor=-0.1), "logprob_std_floor"),
        (lambda: DPPOConfig(clip_eps=0.01, clip_eps_base=0.02), "clip_eps_base"),
        (lambda: DPPOConfig(minibatches=0), "minibatches"),
        (lambda: PretrainConfig(ema_decay=1.0), "ema_decay"),
        (lambda: DenoiserConfig(kind="unet"), "denoiser kind"),
        (lambda: DenoiserConfig(kind="dit", hidden=30, heads=4), "divisible"),
        (lambda: check_divisible(100, 3, "DPPO update"), "not divisible"),
        (lambda: replace(DPPOConfig(), actor_lrr=1.0), "no field"),
    ],
)
def test_bad_config_values_raise_clear_errors(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_dotted_replace():
    cfg = replace(BanditProbeConfig(), **{"dppo.actor_lr": 5e-4, "seed": 3})
    assert cfg.dppo.actor_lr == 5e-4 and cfg.seed == 3


def test_dppo_minibatch_check_happens_before_compiling():
    cfg = BanditProbeConfig(num_envs=256)  # 256 * K'=5 = 1280 samples: not divisible by 3
    with pytest.raises(ConfigError, match="not divisible"):
        replace(cfg, **{"dppo.minibatches": 3})


def test_bandit_probe_dppo_reaches_rewarded_mode():
    """Pre-trained DP: about half its samples in the rewarded mode; after DPPO: > 95 %."""
    r = run_bandit_probe(BanditProbeConfig(seed=0))
    assert r["pretrain_loss_last"] < 0.5 * r["pretrain_loss_first"]
    assert 0.35 < r["plus_mode_before"] < 0.65
    assert r["rewarded_before_deterministic"] < 0.7
    assert r["rewarded_after_deterministic"] > 0.95
    assert r["plus_mode_after"] > 0.95
    assert r["train_reward_curve"][-1] > r["train_reward_curve"][0] + 0.2
