"""Pre-training of the diffusion policy by noise prediction, with an EMA copy.

Shape legend: B batch, Ta chunk, Da action dim, To history, Ds observation dim.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from refine_dp_jax.config import PretrainConfig
from refine_dp_jax.diffusion.schedule import Schedule, eps_loss
from refine_dp_jax.train.optim import adam_apply, adam_init


@struct.dataclass
class PretrainState:
    params: Any
    ema: Any  # exponential moving average of params (what is fine-tuned and evaluated)
    opt: optax.OptState
    step: jax.Array  # [] int32


def pretrain_init(params: Any) -> PretrainState:
    return PretrainState(params, params, adam_init(params), jnp.zeros((), jnp.int32))


def make_pretrain_step(
    apply: Callable, sched: Schedule, cfg: PretrainConfig
) -> Callable[[PretrainState, jax.Array, jax.Array, jax.Array], tuple[PretrainState, jax.Array]]:
    """step(state, x0 [B,Ta,Da], cond [B,To,Ds], key) -> (state, loss). Pure; jit it."""

    def step(state: PretrainState, x0, cond, key):
        loss, grads = jax.value_and_grad(lambda p: eps_loss(apply, p, sched, x0, cond, key))(
            state.params
        )
        warm = jnp.minimum(1.0, (state.step + 1) / max(cfg.warmup_steps, 1))
        params, opt, _ = adam_apply(state.params, grads, state.opt, cfg.lr * warm, cfg.weight_decay)
        # The EMA starts as a copy and is used from the first step on (decay warms up).
        decay = jnp.minimum(cfg.ema_decay, (1.0 + state.step) / (10.0 + state.step))
        ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema, params)
        return PretrainState(params, ema, opt, state.step + 1), loss

    return step


def make_pretrain_epoch(
    apply: Callable, sched: Schedule, cfg: PretrainConfig, num_steps: int
) -> Callable[[PretrainState, jax.Array, jax.Array, jax.Array], tuple[PretrainState, jax.Array]]:
    """``num_steps`` steps in one compiled scan over random minibatches of a dataset.

    run(state, actions [N,Ta,Da], conds [N,To,Ds], key) -> (state, losses [num_steps]).
    """
    step = make_pretrain_step(apply, sched, cfg)

    def run(state, actions, conds, key):
        def body(s, k):
            ki, kl = jax.random.split(k)
            idx = jax.random.randint(ki, (cfg.batch_size,), 0, actions.shape[0])
            return step(s, actions[idx], conds[idx], kl)

        return jax.lax.scan(body, state, jax.random.split(key, num_steps))

    return run
