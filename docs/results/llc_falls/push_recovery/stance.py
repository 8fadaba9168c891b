"""Where a standing LLC keeps its centre of mass: how far ahead of the middle of the two soles
(heading frame), over the evaluation's commands without pushes (256 deterministic 10 s
episodes, the first 2 s and any step after a fall left out). Reproduces the stance column of
the README next to this folder:

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
    from refine_dp_jax.train.llc_eval import make_llc_eval

    folder, sets, n = sys.argv[1], tuple(sys.argv[2:]), 256
    base = experiment_config("humanoid_llc_stand", (f"llc.eval_episodes={n}", *sets))
    over = {**dict(base.env_overrides), "push_force": 0.0}
    cfg = dataclasses.replace(base, env_overrides=tuple(over.items()))
    parts = pipeline.build(cfg)
    learner = load_llc(pipeline.resolve_path(folder), parts)
    env, ppo = parts.env, parts.llc_ppo

    def ahead(data):  # [] m, centre of mass ahead of the soles' middle
        f = env.features(data)
        com = data.subtree_com[env._pelvis]
        return ((com - jnp.mean(f.sole_pos, axis=0)) @ f.heading)[0]

    run = make_llc_eval(env, n, cfg.llc.command_hold_steps,
                        lambda p, obs: ppo.act(p, obs, jax.random.PRNGKey(0), True)[0],
                        cfg.llc.velocity_hold_steps,
                        extra=lambda s: {"ahead": jax.vmap(ahead)(s.data)})  # fmt: skip
    outs = run(learner, jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 7))
    keep = np.asarray(outs["alive"])[100:] > 0.5
    x = np.asarray(outs["ahead"])[100:][keep]
    p10, p90 = 100 * np.percentile(x, [10, 90])
    print(f"{folder}: centre of mass ahead of the soles' middle: mean {100 * x.mean():.2f} cm, "
          f"p10 {p10:.2f}, p90 {p90:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
