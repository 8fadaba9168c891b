"""Signal-to-noise ratio of the DPPO policy gradient of a pre-trained DP on its task.

Starts from a run directory whose stages 1-3 are done. Rolls out ``--batches`` independent
batches of ``--envs`` envs with the pre-trained DP, sampling as DPPO does, each for enough
decisions that every env's first episode ends; scores each decision of a first episode with its
Monte Carlo discounted return-to-go (no critic, so no critic bias), normalizes those over the
batch as the update does, and computes the DPPO policy gradient at ratio 1 over all of the
batch's (decision, fine-tuned denoising step) pairs:

    g = -mean over pairs of  A_norm(d) * gamma_denoise^(K'-1-i) * grad log p_i(x_{i+1} | x_i, s_d)

Each batch's gradient is g_m = s + n_m (s: the policy gradient the batch estimates, n_m its
zero-mean noise), so over pairs of batches a != b

    E <g_a, g_b> = |s|^2,        E |g_m|^2 = |s|^2 + |n|^2

and ``noise_to_signal = |n|^2 / |s|^2`` is how many such batches must be averaged before the
signal is as large as the noise (``signal_sq_stderr``: jackknife over batches). The same is
computed with the advantages shuffled within each batch, a null whose |s|^2 estimate must come
out near 0. Nothing is written to the run directory; one JSON line goes to stdout (and
``--log``). Example::

    refine-dp pipeline --experiment testbed --out runs/testbed   # or only stages 1-3
    python -m experiments.dppo_snr --experiment testbed --out runs/testbed
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def returns_to_go(reward: np.ndarray, done: np.ndarray, gamma: float):
    """Discounted return-to-go of each env's FIRST episode, and the mask of its decisions.

    reward, done: [T, B]. Decisions after the first ``done`` are masked out; an episode still
    running at T is masked out entirely (its return is unknown)."""
    t_len, b = reward.shape
    ended = done.cumsum(0)
    valid = (ended - done) < 0.5  # decisions up to and including the first done
    finished = done.sum(0) > 0
    valid = valid & finished[None]
    ret = np.zeros((t_len, b))
    acc = np.zeros(b)
    for t in range(t_len - 1, -1, -1):
        acc = np.where(done[t] > 0.5, reward[t], reward[t] + gamma * acc)
        ret[t] = acc
    return ret, valid


def gradient_stats(grads: list[np.ndarray]) -> dict:
    """|s|^2 from the mean inner product over pairs of batches, |n|^2 from the mean squared
    norm minus it, for per-batch gradient vectors ``grads``."""
    g = np.stack(grads).astype(np.float64)
    m = g.shape[0]
    gram = g @ g.T
    sq = float(np.mean(np.diag(gram)))
    cross = float((gram.sum() - np.trace(gram)) / (m * (m - 1)))
    cos = gram / np.sqrt(np.outer(np.diag(gram), np.diag(gram)))
    # jackknife over batches: the pairwise products share batches, so they are not independent
    off = gram.sum() - np.trace(gram)
    loo = np.array([
        (off - 2 * (gram[k].sum() - gram[k, k])) / ((m - 1) * (m - 2)) for k in range(m)
    ]) if m > 2 else np.full(m, np.nan)  # fmt: skip
    stderr = float(np.sqrt((m - 1) / m * np.sum(np.square(loo - loo.mean()))))
    return {
        "signal_sq": cross,
        "signal_sq_stderr": stderr,
        "noise_sq": sq - cross,
        "noise_to_signal": (sq - cross) / cross if cross > 0 else float("inf"),
        "mean_cosine": float((cos.sum() - m) / (m * (m - 1))),
    }


def run(args) -> dict:
    import jax
    import jax.numpy as jnp

    from refine_dp_jax import pipeline
    from refine_dp_jax.cli import experiment_config
    from refine_dp_jax.train.finetune import dp_plan_fn
    from refine_dp_jax.train.hierarchy import hier_init, make_hier_rollout

    cfg = experiment_config(args.experiment, tuple(args.set))
    parts = pipeline.build(cfg)
    d, env, fns = cfg.diffusion, parts.env, parts.dppo
    state = pipeline.finetune_state(parts, cfg, str(args.out), False)
    learner, llc = state.planner, state.llc
    rollout = make_hier_rollout(
        env, parts.llc_ppo, dp_plan_fn(fns, d.ft_steps), lambda p: p[1], args.decisions,
        d.exec_steps, cfg.hold,
    )  # fmt: skip

    @jax.jit
    def batch(key):
        k0, k1 = jax.random.split(key)
        hs = hier_init(env, k0, args.envs, d.obs_history, cfg.task_curriculum)
        _, decs, _ = rollout(hs, (learner, state.normalizer), llc, k1)
        return decs.cond, decs.aux[0], decs.reward, decs.done, decs.success

    disc = cfg.dppo.gamma_denoise ** jnp.arange(d.ft_steps - 1, -1, -1, dtype=jnp.float32)

    @jax.jit
    def grad(cond, xs, weight):
        """weight [N]: -A_norm / number of valid pairs (0 on invalid decisions)."""

        def objective(actor):
            lp = fns.log_probs(actor, learner.hyper, cond, xs)  # [N, K']
            return jnp.sum(weight[:, None] * disc[None] * lp)

        g = jax.grad(objective)(learner.actor)
        return jnp.concatenate([x.reshape(-1) for x in jax.tree.leaves(g)])

    rng = np.random.default_rng(args.seed)
    real, null, successes, episodes = [], [], 0, 0
    t0 = time.perf_counter()
    for m in range(args.batches):
        cond, xs, reward, done, success = jax.device_get(batch(jax.random.PRNGKey(1000 + m)))
        ret, valid = returns_to_go(np.asarray(reward), np.asarray(done), cfg.dppo.gamma)
        episodes += int(valid.any(0).sum())
        successes += int((np.asarray(success) * valid).sum())
        a = ret[valid]
        norm = (a - a.mean()) / (a.std(ddof=1) + 1e-8)
        n_pairs = valid.sum() * d.ft_steps
        flat = lambda x: x.reshape((-1,) + x.shape[2:])
        for adv, out in ((norm, real), (rng.permutation(norm), null)):
            w = np.zeros(valid.shape)
            w[valid] = -adv / n_pairs
            out.append(np.asarray(grad(flat(cond), flat(xs), jnp.asarray(w.reshape(-1)))))
        print(f"batch {m + 1}/{args.batches}: {int(valid.any(0).sum())} episodes, "
              f"{int((np.asarray(success) * valid).sum())} successes", flush=True)  # fmt: skip
    result = {
        "experiment": args.experiment, "set": list(args.set), "envs": args.envs,
        "decisions": args.decisions, "batches": args.batches, "episodes": episodes,
        "success_rate": successes / max(episodes, 1),
        "params": int(real[0].size), "seconds": round(time.perf_counter() - t0, 1),
        "advantages": gradient_stats(real), "shuffled_null": gradient_stats(null),
    }  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="testbed")
    p.add_argument("--out", type=Path, required=True, help="run directory, stages 1-3 done")
    p.add_argument("--set", action="extend", nargs="+", default=[], help="key=value overrides")
    p.add_argument("--envs", type=int, default=64)
    p.add_argument("--decisions", type=int, default=18, help="enough for every first episode")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log", type=Path)
    args = p.parse_args(argv)
    from refine_dp_jax.cli import setup_process

    setup_process()
    text = json.dumps(run(args))
    print(text)
    if args.log:
        args.log.write_text(text + "\n")


if __name__ == "__main__":
    main()
