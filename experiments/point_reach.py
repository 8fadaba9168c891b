"""Experiments on ``point_reach``, the probe environment (seconds per stage)."""

from __future__ import annotations

from experiments import register
from experiments.testbed import testbed_tiny
from refine_dp_jax.config import DiffusionConfig, DPPOConfig, PretrainConfig, replace
from refine_dp_jax.data.demos import DemoConfig
from refine_dp_jax.diffusion.networks import DenoiserConfig
from refine_dp_jax.pipeline import BaselineConfig, ExperimentConfig
from refine_dp_jax.train.finetune import FinetuneConfig
from refine_dp_jax.train.gaussian_ppo import PPOConfig
from refine_dp_jax.train.llc import LLCConfig


@register("point_reach")
def point_reach() -> ExperimentConfig:
    return ExperimentConfig(
        env="point_reach",
        hold=2,
        llc=LLCConfig(num_envs=128, rollout_steps=16, iterations=40, command_hold_steps=10,
                      ppo=PPOConfig(actor_hidden=(32, 32), critic_hidden=(32, 32))),
        demos=DemoConfig(num_episodes=64, batch_envs=64, max_batches=4),
        diffusion=DiffusionConfig(obs_history=1, horizon=4, exec_steps=2, num_steps=10,
                                  ft_steps=5, denoiser=DenoiserConfig(hidden=64, depth=2)),
        pretrain=PretrainConfig(steps=1000, batch_size=128),
        dppo=DPPOConfig(epochs=4, minibatches=4),
        finetune=FinetuneConfig(num_envs=64, decisions=8, iterations=10),
        baseline=BaselineConfig(bc_steps=500),
        eval_episodes=200,
        video_episodes=1,
        ckpt_every=5,
    )  # fmt: skip


@register("point_reach_tiny")
def point_reach_tiny() -> ExperimentConfig:
    """The testbed's toy sizes on the puck (scripts and scale tests)."""
    return replace(testbed_tiny(), env="point_reach", run_dp_only=True)
