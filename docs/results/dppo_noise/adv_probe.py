"""Runs a ``refine-dp`` command with DPPO's advantages negated, shuffled or untouched, and
prints per iteration how the (untouched) advantages relate to the episodes' outcomes.

    python docs/results/dppo_noise/adv_probe.py MODE finetune --experiment E --out RUN [...]

MODE: ``none`` (control), ``neg`` (A -> -A), ``shuffle`` (A permuted across the batch's
decisions: the same values, no relation to what the decisions did). The line printed per
iteration: mean advantage of the decisions that ended in success / in a failure (fall,
non-finite state) / at the time limit, with their counts, and the critic's mean value.
"""

import sys

import jax
import jax.numpy as jnp

import refine_dp_jax.train.finetune as ft

MODE = "none"  # set from the command line below
gae = ft.gae


def shuffle_advantages(adv, reward):
    """``adv`` permuted across the batch: a fresh permutation per batch (keyed by its
    rewards). Also used by ``docs/results/dppo_after_ik/curve_shuffled.py``."""
    k = jax.random.fold_in(jax.random.PRNGKey(7), jnp.sum(reward * 1000).astype(jnp.int32))
    return jax.random.permutation(k, adv.reshape(-1)).reshape(adv.shape)


def probed_gae(reward, values, next_values, terminated, done, gamma, lam):
    adv, ret = gae(reward, values, next_values, terminated, done, gamma, lam)
    succ = (reward > 0).astype(jnp.float32)
    fail = terminated * (1 - succ)
    trunc = done * (1 - terminated)
    mean = lambda w: jnp.sum(adv * w) / jnp.maximum(jnp.sum(w), 1)
    jax.debug.print(
        "ADV mode={m} succ_dec={a:.3f} (n={na}) fail_dec={b:.3f} (n={nb}) "
        "trunc_dec={c:.3f} (n={nc}) all_mean={d:.3f} std={e:.3f} v={v:.3f}",
        m=MODE, a=mean(succ), na=jnp.sum(succ), b=mean(fail), nb=jnp.sum(fail),
        c=mean(trunc), nc=jnp.sum(trunc), d=jnp.mean(adv), e=jnp.std(adv), v=jnp.mean(values),
    )  # fmt: skip
    if MODE == "neg":
        adv = -adv
    elif MODE == "shuffle":
        adv = shuffle_advantages(adv, reward)
    return adv, ret


if __name__ == "__main__":
    MODE = sys.argv.pop(1)
    if MODE not in ("none", "neg", "shuffle"):
        raise SystemExit(f"MODE must be none, neg or shuffle, got {MODE!r}")
    ft.gae = probed_gae
    from refine_dp_jax.cli import main

    main()
