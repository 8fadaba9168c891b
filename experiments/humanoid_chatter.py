"""Arm chatter and exploded states on a humanoid task: the scripted planner through a stored
LLC, with Gaussian noise on the normalized command (DPPO samples its chains with a noise
floor of this size), counting the episodes whose joints exceed a speed and which joints do.

Found with it (docs/humanoid.md): the IK arm prior flipped by several radians in one command
and the arm servos shook the arms at 30-120 rad/s. Example::

    python -m experiments.humanoid_chatter --experiment humanoid_table_lift --noise 0.03
    python -m experiments.humanoid_chatter --noise 0.03 --set ik_damping=1e-3 ik_max_step=1e3

``stages`` in the output: how far the successful and the timed-out episodes got (the share
that closed a gripper, when the object first rose 2 / 5 / 10 cm, its highest rise). Found
with it: table-lift boxes that sank through the table and grippers that started inside the
box (docs/humanoid.md).

``--set`` changes fields of the env the stored LLC runs in (what-if diagnostics such as the
old IK above; the LLC is still checked against the experiment's own env). ``--llc DIR``: a
stored LLC other than the experiment's. One JSON line on stdout (and ``--json``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def measure(experiment: str, noise: float, num_envs: int, env_sets: dict, speed: float,
            seed: int = 0, llc: str | None = None) -> dict:  # fmt: skip
    import jax
    import jax.numpy as jnp
    import mujoco

    from refine_dp_jax import pipeline
    from refine_dp_jax.cli import experiment_config
    from refine_dp_jax.envs import make as make_env
    from refine_dp_jax.envs.base import command_limiter, denormalize_command, normalize_command
    from refine_dp_jax.envs.wrappers import select
    from refine_dp_jax.policy_store import load_llc
    from refine_dp_jax.train.hierarchy import merge_leading

    cfg = experiment_config(experiment, () if llc is None else (f"llc_checkpoint={llc}",))
    parts = pipeline.build(cfg)  # the stored LLC is checked against the experiment's own env
    learner = load_llc(pipeline.resolve_path(cfg.llc_checkpoint), parts)
    env, ppo = make_env(cfg.env, **{**dict(cfg.env_overrides), **env_sets}), parts.llc_ppo
    limit = command_limiter(env, cfg.hold)
    n_cmd = math.ceil(env.episode_steps / cfg.hold)

    @jax.jit
    def run(key):
        k_reset, k_noise = jax.random.split(key)
        keys = jax.random.split(k_reset, num_envs)
        s = jax.vmap(env.reset, in_axes=(0, None))(keys, cfg.task_curriculum)
        z0 = jax.vmap(env.features)(s.data).obj_pos[:, 2]

        def command_step(carry, k):
            s, alive = carry
            u = jax.vmap(lambda c: normalize_command(env, c))(jax.vmap(env.expert_command)(s))
            u = jnp.clip(u + noise * jax.random.normal(k, u.shape), -1.0, 1.0)
            cmd = limit(s.command, jax.vmap(lambda c: denormalize_command(env, c))(u))
            s = jax.vmap(env.with_command)(s, cmd)

            def llc_step(carry, _):
                s, alive = carry
                a, _ = ppo.act(learner, s.obs, k, True)
                nxt = jax.vmap(select)(alive, jax.vmap(env.step)(s, a), s)
                qv = jnp.abs(nxt.data.qvel)
                ended = alive * nxt.done * (1.0 - nxt.success) * (1.0 - nxt.nonfinite)
                failed = ended * (1.0 - nxt.truncated)  # a fall or the box lost
                fell = failed * nxt.metrics["fallen"]
                out = (alive, jnp.max(qv, -1), jnp.argmax(qv, -1), alive * nxt.nonfinite,
                       alive * nxt.done * nxt.success, fell, failed - fell,
                       ended * nxt.truncated,
                       jax.vmap(env.features)(nxt.data).obj_pos[:, 2] - z0,
                       jnp.max(nxt.command[:, 15:17], -1) > 0)  # fmt: skip
                return (nxt, alive * (1.0 - nxt.done)), out

            return jax.lax.scan(llc_step, (s, alive), None, length=cfg.hold)

        _, out = jax.lax.scan(command_step, (s, jnp.ones(num_envs)),
                              jax.random.split(k_noise, n_cmd))  # fmt: skip
        return jax.tree.map(lambda x: merge_leading(x, 2), out)

    alive, qmax, qdof, exploded, success, fell, lost, timeout, rise, grip = jax.device_get(
        run(jax.random.PRNGKey(seed))
    )
    live = alive > 0.5
    fast = live & (qmax > speed)
    m = env.mj_model
    joints = {}
    for dof in qdof[fast]:
        name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, int(m.dof_jntid[dof]))
        joints[name or "free"] = joints.get(name or "free", 0) + 1
    shaking = fast.any(0)
    ok = success.sum(0) > 0
    return {
        "experiment": experiment, "noise": noise, "episodes": num_envs, "env_sets": env_sets,
        "speed": speed, "success_rate": float(ok.mean()),
        "exploded_episodes": int((exploded.sum(0) > 0).sum()),
        # how the other episodes ended: the robot fell, the object was lost, time ran out
        "fell_episodes": int((fell.sum(0) > 0).sum()),
        "object_lost_episodes": int((lost.sum(0) > 0).sum()),
        "timeout_episodes": int((timeout.sum(0) > 0).sum()),
        "episodes_above_speed": int(shaking.sum()),
        "success_rate_above_speed": float(ok[shaking].mean()) if shaking.any() else None,
        "success_rate_below_speed": float(ok[~shaking].mean()) if (~shaking).any() else None,
        "steps_above_speed_share": float(fast.sum() / live.sum()),
        "fastest_joints": dict(sorted(joints.items(), key=lambda kv: -kv[1])[:6]),
        "stages": stages(live, ok, timeout.sum(0) > 0, rise, grip, env.dt),
    }  # fmt: skip


def stages(live, ok, timed_out, rise, grip, dt: float) -> dict:
    """How far the successful and the timed-out episodes got: the share that closed a
    gripper, the median time (s) of the first close, of the object's first rise by 2 cm and
    5 cm and 10 cm, and quartiles of the highest rise (m). ``rise``/``grip``: [steps, envs]."""
    import numpy as np

    def first(mask):  # [steps, envs] -> [envs] seconds of the first True (nan if never)
        t = np.argmax(mask, 0).astype(float) * dt
        return np.where(mask.any(0), t, np.nan)

    rise = np.where(live, rise, -np.inf)
    out = {}
    for name, sel in (("succeeded", ok), ("timed_out", timed_out)):
        if not sel.any():
            continue
        med = lambda x: None if np.isnan(x[sel]).all() else round(float(np.nanmedian(x[sel])), 2)
        top = rise.max(0)[sel]
        out[name] = {
            "episodes": int(sel.sum()),
            "gripped_share": float(grip.any(0)[sel].mean()),
            "first_grip_s": med(first(grip & live)),
            "rise_2cm_s": med(first(rise > 0.02)),
            "rise_5cm_s": med(first(rise > 0.05)),
            "rise_10cm_s": med(first(rise > 0.10)),
            "top_rise_quartiles_m": np.round(np.quantile(top, (0.25, 0.5, 0.75)), 3).tolist(),
        }
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="humanoid_table_lift")
    p.add_argument("--noise", type=float, default=0.03, help="std on the [-1, 1] command")
    p.add_argument("--envs", type=int, default=128)
    p.add_argument("--speed", type=float, default=30.0, help="rad/s or m/s: 'shaking'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON", help="env fields")
    p.add_argument("--llc", help="a stored LLC other than the experiment's (a candidate)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    sets = {k: json.loads(v) for k, v in (a.split("=", 1) for a in args.set)}
    r = measure(args.experiment, args.noise, args.envs, sets, args.speed, args.seed, args.llc)
    print(json.dumps(r))
    if args.json:
        args.json.write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
