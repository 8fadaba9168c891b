"""Experiments on ``point_reach``, the probe environment (seconds per stage)."""

from __future__ import annotations

from experiments import register
from refine_dp_jax.config import DiffusionConfig, DPPOConfig, PretrainConfig
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
    return ExperimentConfig(
        env="point_reach",
        hold=2,
        llc=LLCConfig(
            num_envs=8,
            rollout_steps=8,
            iterations=2,
            ppo=PPOConfig(epochs=1, minibatches=2, actor_hidden=(16,), critic_hidden=(16,)),
        ),  # fmt: skip
        demos=DemoConfig(num_episodes=2, batch_envs=8, max_batches=1, executor="reference"),
        diffusion=DiffusionConfig(
            obs_history=2,
            horizon=4,
            exec_steps=2,
            num_steps=4,
            ft_steps=2,
            denoiser=DenoiserConfig(kind="mlp", hidden=16, depth=1, time_dim=4),
        ),  # fmt: skip
        pretrain=PretrainConfig(steps=4, batch_size=8, warmup_steps=1),
        dppo=DPPOConfig(epochs=1, minibatches=2),
        finetune=FinetuneConfig(num_envs=4, decisions=2, iterations=2),
        baseline=BaselineConfig(
            bc_steps=2,
            ppo=PPOConfig(
                epochs=1,
                minibatches=2,
                actor_hidden=(16,),
                critic_hidden=(16,),
                normalize_inputs=False,
            ),
        ),
        eval_episodes=4,
        video_episodes=0,
        ckpt_every=1,
        pretrain_chunk=2,
    )
