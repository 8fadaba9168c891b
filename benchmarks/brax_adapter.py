"""Runs brax's own PPO (``brax.training.agents.ppo.train``) on one of our MJX environments, for
the side-by-side ``brax_ppo`` benchmark. The adapter only re-wraps our pure reset/step in brax's
``State``; the physics, observations and rewards are ours, so both learners do the same work."""

from __future__ import annotations

import time

import jax
from brax.envs import base as brax_base
from brax.training.agents.ppo import networks as ppo_networks
from brax.training.agents.ppo import train as ppo_train

from refine_dp_jax import envs


class BraxAdapter(brax_base.Env):
    """Our LLC-level environment behind brax's Env interface; a random command per episode."""

    def __init__(self, env):
        self._env = env

    def reset(self, rng):
        k1, k2 = jax.random.split(rng)
        s = self._env.reset(k1)
        s = self._env.with_command(s, self._env.sample_command(k2, s))
        return brax_base.State(pipeline_state=s, obs=s.obs, reward=s.reward, done=s.done)

    def step(self, state, action):
        s = self._env.step(state.pipeline_state, action)
        return state.replace(pipeline_state=s, obs=s.obs, reward=s.reward, done=s.done)

    @property
    def observation_size(self):
        return self._env.observation_size

    @property
    def action_size(self):
        return self._env.action_size

    @property
    def backend(self):
        return "mjx"


def run_brax_ppo(cfg, num_envs: int, quick: bool) -> tuple[float, float, dict]:
    """Returns (steady training env steps/s as brax reports it, seconds to the first report,
    settings). Same envs, unroll length, minibatches, epochs and network sizes as our LLC PPO."""
    env = BraxAdapter(envs.make(cfg.env))
    ppo = cfg.llc.ppo
    unroll = cfg.llc.rollout_steps
    per_epoch = num_envs * unroll
    # brax compiles its training-epoch function on the first two blocks (see shared/DESIGN.md);
    # only the last block's training/sps is steady, so run four evaluation blocks.
    evals = 4
    epochs_per_eval = 4 if quick else 8
    times, sps = [], []
    t0 = time.perf_counter()

    def progress(step, metrics):
        times.append(time.perf_counter() - t0)
        if "training/sps" in metrics:
            sps.append(float(metrics["training/sps"]))

    network_factory = lambda obs, act, preprocess_observations_fn: ppo_networks.make_ppo_networks(
        obs, act, preprocess_observations_fn=preprocess_observations_fn,
        policy_hidden_layer_sizes=ppo.actor_hidden, value_hidden_layer_sizes=ppo.critic_hidden,
    )  # fmt: skip
    ppo_train.train(
        environment=env,
        num_timesteps=per_epoch * epochs_per_eval * (evals - 1),
        num_evals=evals,
        episode_length=envs.make(cfg.env).episode_steps,
        num_envs=num_envs,
        unroll_length=unroll,
        batch_size=max(1, num_envs // ppo.minibatches),
        num_minibatches=ppo.minibatches,
        num_updates_per_batch=ppo.epochs,
        learning_rate=ppo.lr,
        discounting=ppo.gamma,
        normalize_observations=True,
        num_eval_envs=16,
        network_factory=network_factory,
        progress_fn=progress,
        seed=0,
    )
    rate = sps[-1] if sps else float("nan")
    return rate, times[0] if times else float("nan"), {
        "unroll_length": unroll, "minibatches": ppo.minibatches, "epochs": ppo.epochs,
        "hidden": list(ppo.actor_hidden), "reported": "brax training/sps (eval excluded)",
    }  # fmt: skip
