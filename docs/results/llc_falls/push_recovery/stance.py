"""Where a standing LLC keeps its centre of mass: how far ahead of the middle of the two soles
(heading frame), over the evaluation's commands without pushes (256 deterministic 10 s
episodes, the first 2 s left out). Reproduces the stance column of the README next to this
folder:

    python docs/results/llc_falls/push_recovery/stance.py LLC_DIR [KEY=VALUE ...]

(``KEY=VALUE``: the overrides the LLC needs, e.g. ``env_overrides.actor_history=4``.)
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from refine_dp_jax.cli import experiment_config, setup_process


def main() -> None:
    setup_process()
    from refine_dp_jax import pipeline
    from refine_dp_jax.policy_store import load_llc
    from refine_dp_jax.train.llc import command_schedule

    folder, sets, n = sys.argv[1], tuple(sys.argv[2:]), 256
    base = experiment_config("humanoid_llc_stand", (f"llc.eval_episodes={n}", *sets))
    over = {**dict(base.env_overrides), "push_force": 0.0}
    cfg = dataclasses.replace(base, env_overrides=tuple(over.items()))
    parts = pipeline.build(cfg)
    learner = load_llc(pipeline.resolve_path(folder), parts)
    env, ppo = parts.env, parts.llc_ppo
    reset = jax.vmap(env.reset, in_axes=(0, None))
    step, with_command = jax.vmap(env.step), jax.vmap(env.with_command)
    next_command = command_schedule(env, n, cfg.llc.command_hold_steps, cfg.llc.velocity_hold_steps)

    def ahead(data):  # [] m, centre of mass ahead of the soles' middle
        f = env.features(data)
        com = data.subtree_com[env._pelvis]
        return ((com - jnp.mean(f.sole_pos, axis=0)) @ f.heading)[0]

    @jax.jit
    def run(params, key):
        k_reset, k_run = jax.random.split(key)
        s = reset(jax.random.split(k_reset, n), 1.0)
        z = jnp.zeros((n,), jnp.int32)

        def one(carry, k):
            s, target, timer, vtimer = carry
            cmd, target, timer, vtimer, _ = next_command(jax.random.split(k, 3), s, target,
                                                         timer, vtimer)  # fmt: skip
            s = with_command(s, cmd)
            s = step(s, ppo.act(params, s.obs, jax.random.PRNGKey(0), True)[0])
            return (s, target, timer, vtimer), jax.vmap(ahead)(s.data)

        _, out = jax.lax.scan(one, (s, s.command, z, z), jax.random.split(k_run, env.episode_steps))
        return out

    x = np.asarray(run(learner, jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 7)))[100:]
    p10, p90 = 100 * np.percentile(x, [10, 90])
    print(f"{folder}: centre of mass ahead of the soles' middle: mean {100 * x.mean():.2f} cm, "
          f"p10 {p10:.2f}, p90 {p90:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
