"""Throughput benchmarks (``make bench``): every line goes to benchmarks/results.jsonl with a
``run_id`` shared by the whole invocation, so ratios are taken within one run.

  physics_limit  vmapped mjx.step of each registered environment's model
  dppo_step      the fused DPPO training step (rollout + GAE + update), and its ratio to the
                 physics limit at the same number of substeps
  host_loop      the same rollout driven from Python, one jitted call per env step (the way
                 PyTorch DPPO code is structured) - ratio fused / host loop
  llc_ppo        our LLC PPO step vs brax_ppo (brax.training.agents.ppo.train) on the same
                 MJX environment, same number of envs and network sizes
  breakdown      where the fused step's time goes (physics, env.step, + LLC, rollout, + update)
  scaling        dppo_step env steps/s as the number of environments grows
  sweep          S sweep members in one vmapped program: total env steps/s as S grows
  dppo_update    the DPPO update alone at DPPO's gym-hopper sizes, in (decision, denoising
                 step) pairs/s, critic fitted per decision and per pair

Each measurement compiles ahead of time (``lower().compile()``), reports compile seconds apart,
then times steady calls with ``block_until_ready``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from mujoco import mjx  # noqa: E402

import experiments  # noqa: E402
from benchmarks.common import RUN_ID, append_result  # noqa: E402
from refine_dp_jax import envs, pipeline  # noqa: E402
from refine_dp_jax.config import replace  # noqa: E402
from refine_dp_jax.train.finetune import FinetuneState  # noqa: E402
from refine_dp_jax.train.hierarchy import ObsNormalizer, hier_init  # noqa: E402

QUICK_HUMANOIDS = ("humanoid_pick_place", "humanoid_llc")  # a task scene, the LLC's scene
SCALING_KEYS = ("env", "batch", "steps_per_s", "physics_steps_per_s", "compile_s",
                "denoising_steps_per_s", "seconds_per_iteration")  # fmt: skip


MIN_TIMED_S = 2.0  # steady calls are repeated until they span at least this long


def timed(fn, arg, reps: int) -> tuple[float, float, object]:
    """(compile_s, seconds per call, last output) for ``fn(arg)``, the output's state fed back
    in: one warm-up call, then at least ``reps`` calls and at least ``MIN_TIMED_S`` seconds
    (short programs timed over a few calls are at the mercy of this machine's noise)."""
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(arg).compile()
    compile_s = time.perf_counter() - t
    out = compiled(arg)
    jax.block_until_ready(out)
    state = out[0] if isinstance(out, tuple) else out
    n, t = 0, time.perf_counter()
    while n < reps or time.perf_counter() - t < MIN_TIMED_S:
        out = compiled(state)
        state = out[0] if isinstance(out, tuple) else out
        jax.block_until_ready(out)
        n += 1
    return compile_s, (time.perf_counter() - t) / n, out


def physics_limit(env_name: str, batch: int, steps: int, reps: int) -> dict:
    env = envs.make(env_name)
    mx = env.mjx_model
    s0 = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), batch))
    data = s0.data

    def roll(d):
        return jax.lax.fori_loop(0, steps, lambda _, x: jax.vmap(mjx.step, (None, 0))(mx, x), d)

    compile_s, per_call, _ = timed(roll, data, reps)
    rate = batch * steps / per_call
    return append_result("physics_limit", env=env_name, batch=batch, steps_per_s=rate,
                         compile_s=compile_s, substeps=1)  # fmt: skip


_SETUPS: dict = {}  # (cfg, num_envs) -> (cfg, parts, state): built once per run


def finetune_setup(cfg, num_envs: int):
    """A fine-tuning state with freshly initialised networks (throughput does not depend on
    what was learned). Built once per (experiment, batch) and shared: ``timed`` does not
    donate its argument, so every benchmark at that batch starts from the same state."""
    if (cfg, num_envs) not in _SETUPS:
        _SETUPS[cfg, num_envs] = _finetune_setup(cfg, num_envs)
    return _SETUPS[cfg, num_envs]


def _finetune_setup(cfg, num_envs: int):
    cfg = replace(cfg, **{"finetune.num_envs": num_envs})
    parts = pipeline.build(cfg)
    d = cfg.diffusion
    key = jax.random.PRNGKey(0)
    critic = parts.critic.init(key, jnp.zeros((1, d.obs_history, parts.env.dp_observation_size)))
    ds = parts.env.dp_observation_size
    state = FinetuneState(
        planner=parts.dppo.init(pipeline.denoiser_template(parts), critic["params"], num_envs),
        normalizer=ObsNormalizer(jnp.zeros(ds), jnp.ones(ds)),
        llc=parts.llc_ppo.init(key),
        hier=jax.jit(lambda k: hier_init(parts.env, k, num_envs, d.obs_history))(key),
        key=key,
    )
    return cfg, parts, state


def env_steps_per_iteration(cfg) -> tuple[int, int]:
    """(LLC steps, physics steps) of one DPPO rollout."""
    llc = pipeline.llc_steps_per_iteration(cfg)
    return llc, llc * envs.make(cfg.env).cfg.substeps


def dppo_step(cfg, num_envs: int, reps: int, phys: dict | None, name="dppo_step") -> dict:
    cfg, parts, state = finetune_setup(cfg, num_envs)
    step = pipeline.finetune_step(parts, cfg, joint=False)
    compile_s, per_call, _ = timed(step, state, reps)
    llc_steps, phys_steps = env_steps_per_iteration(cfg)
    f, d = cfg.finetune, cfg.diffusion
    row = dict(
        env=cfg.env, batch=num_envs, steps_per_s=llc_steps / per_call,
        physics_steps_per_s=phys_steps / per_call, compile_s=compile_s,
        denoising_steps_per_s=f.num_envs * f.decisions * d.chain_steps / per_call,
        seconds_per_iteration=per_call,
    )  # fmt: skip
    if phys is not None:
        row["ratio_to_physics_limit"] = row["physics_steps_per_s"] / phys["steps_per_s"]
    return append_result(name, **row)


def fused_rollout(cfg, num_envs: int, reps: int) -> dict:
    """The rollout part of the fused step alone (same work as ``host_loop``)."""
    from refine_dp_jax.train.finetune import dp_plan_fn
    from refine_dp_jax.train.hierarchy import make_hier_rollout

    cfg, parts, state = finetune_setup(cfg, num_envs)
    d = cfg.diffusion
    rollout = make_hier_rollout(
        parts.env, parts.llc_ppo, dp_plan_fn(parts.dppo, d.ft_steps), lambda p: p[1],
        cfg.finetune.decisions, d.exec_steps, cfg.hold,
    )  # fmt: skip

    def run(st):
        hs, decs, _ = rollout(st.hier, (st.planner, st.normalizer), st.llc, st.key)
        return st.replace(hier=hs, key=jax.random.fold_in(st.key, 1)), decs.reward

    compile_s, per_call, _ = timed(run, state, reps)
    llc_steps, _ = env_steps_per_iteration(cfg)
    return append_result("fused_rollout", env=cfg.env, batch=num_envs,
                         steps_per_s=llc_steps / per_call, compile_s=compile_s,
                         seconds_per_iteration=per_call)  # fmt: skip


def host_loop(cfg, num_envs: int, reps: int) -> dict:
    """The same DPPO rollout with Python driving it: jitted planner call per decision, jitted
    LLC + env step per LLC step (vmapped over envs), then the jitted update."""
    from refine_dp_jax.envs.base import denormalize_command
    from refine_dp_jax.envs.wrappers import history_push

    cfg, parts, state = finetune_setup(cfg, num_envs)
    env, d = parts.env, cfg.diffusion
    fns = parts.dppo

    @jax.jit
    def plan(learner, norm, hist, key):
        chain = fns.sample(learner.actor, learner.frozen, learner.hyper, norm(hist), key, False)
        return chain.xs[-1]

    @jax.jit
    def llc_env_step(llc, s, cmd, key):
        s = jax.vmap(env.with_command)(s, cmd)
        a, _ = parts.llc_ppo.act(llc, s.obs, key, True)
        return jax.vmap(env.step)(s, a)

    push = jax.jit(lambda h, s: jax.vmap(history_push)(h, jax.vmap(env.dp_observation)(s)))
    to_cmd = jax.jit(jax.vmap(jax.vmap(lambda c: denormalize_command(env, c))))

    def iteration(state):
        s, hist = state.hier.env, state.hier.hist
        key = state.key
        for _ in range(cfg.finetune.decisions):
            key, k = jax.random.split(key)
            chunk = to_cmd(plan(state.planner, state.normalizer, hist, k))
            for j in range(d.exec_steps):
                for _ in range(cfg.hold):
                    key, k = jax.random.split(key)
                    s = llc_env_step(state.llc, s, chunk[:, j], k)
                hist = push(hist, s)
        return s

    iteration(state)  # compile every piece
    jax.block_until_ready(state.hier.env.data.qpos)
    t = time.perf_counter()
    for _ in range(reps):
        out = iteration(state)
    jax.block_until_ready(out.data.qpos)
    per_call = (time.perf_counter() - t) / reps
    llc_steps, _ = env_steps_per_iteration(cfg)
    return append_result("host_loop", env=cfg.env, batch=num_envs,
                         steps_per_s=llc_steps / per_call, compile_s=float("nan"),
                         note="rollout only (no update)")  # fmt: skip


def breakdown(
    cfg, num_envs: int, reps: int, measured: dict | None = None, quick: bool = False
) -> list[dict]:
    """Where the fused step's time goes: the same number of LLC steps as one DPPO iteration,
    run as (1) bare vmapped ``mjx.step`` x substeps, (2) ``env.step`` (physics + observations
    and rewards), (3) + the LLC policy, (4) the hierarchical rollout (+ denoising chain, chunk
    bookkeeping, resets), (5) the whole DPPO step (+ GAE and the update).

    ``measured``: part -> (compile_s, seconds per iteration) already measured in this run at
    the same batch and work ("rollout", "dppo_step"; "physics" from the physics limit's rate),
    so those are not compiled twice. ``quick`` measures only those parts (no new programs)."""
    from refine_dp_jax.train.finetune import dp_plan_fn
    from refine_dp_jax.train.hierarchy import make_hier_rollout

    cfg, parts, state = finetune_setup(cfg, num_envs)
    env, d = parts.env, cfg.diffusion
    n_llc = cfg.finetune.decisions * d.exec_steps * cfg.hold
    v_phys = jax.vmap(mjx.step, (None, 0))
    zeros = jnp.zeros((num_envs, env.action_size))

    def physics(data):
        return jax.lax.fori_loop(
            0, n_llc * env.cfg.substeps, lambda _, x: v_phys(env.mjx_model, x), data
        )

    def env_step(s):
        return jax.lax.fori_loop(0, n_llc, lambda _, x: jax.vmap(env.step)(x, zeros), s)

    def llc_env_step(s):
        def body(i, x):
            a, _ = parts.llc_ppo.act(state.llc, x.obs, jax.random.PRNGKey(i), True)
            return jax.vmap(env.step)(x, a)

        return jax.lax.fori_loop(0, n_llc, body, s)

    roll = make_hier_rollout(
        env, parts.llc_ppo, dp_plan_fn(parts.dppo, d.ft_steps), lambda p: p[1],
        cfg.finetune.decisions, d.exec_steps, cfg.hold,
    )  # fmt: skip

    def rollout(st):
        hs, _, _ = roll(st.hier, (st.planner, st.normalizer), st.llc, st.key)
        return st.replace(hier=hs, key=jax.random.fold_in(st.key, 1))

    parts_ = [
        ("physics", physics, state.hier.env.data), ("env_step", env_step, state.hier.env),
        ("llc_env_step", llc_env_step, state.hier.env), ("rollout", rollout, state),
        ("dppo_step", pipeline.finetune_step(parts, cfg, joint=False), state),
    ]  # fmt: skip
    measured = measured or {}
    rows = []
    for part, fn, arg in parts_:
        if quick and part not in measured:
            continue
        if part in measured:
            compile_s, per_call = measured[part]
        else:
            compile_s, per_call, _ = timed(fn, arg, reps)
        rows.append(append_result(
            "breakdown", env=cfg.env, batch=num_envs, part=part, compile_s=compile_s,
            steps_per_s=num_envs * n_llc / per_call, seconds_per_iteration=per_call,
        ))  # fmt: skip
    return rows


def llc_ppo(cfg, num_envs: int, reps: int) -> dict:
    from refine_dp_jax.train.llc import make_llc_train

    cfg = replace(cfg, **{"llc.num_envs": num_envs})
    env = envs.make(cfg.env)
    init, step, _ = make_llc_train(env, cfg.llc)
    state = jax.jit(init)(jax.random.PRNGKey(0))
    compile_s, per_call, _ = timed(step, state, reps)
    n = cfg.llc.num_envs * cfg.llc.rollout_steps
    return append_result("llc_ppo", env=cfg.env, batch=num_envs, steps_per_s=n / per_call,
                         compile_s=compile_s, unroll_length=cfg.llc.rollout_steps,
                         hidden=list(cfg.llc.ppo.actor_hidden))  # fmt: skip


def brax_ppo(cfg, num_envs: int, quick: bool) -> dict:
    """brax's own PPO on the same MJX environment through a thin adapter."""
    from benchmarks.brax_adapter import run_brax_ppo

    rate, compile_s, info = run_brax_ppo(cfg, num_envs, quick)
    return append_result("brax_ppo", env=cfg.env, batch=num_envs, steps_per_s=rate,
                         compile_s=compile_s, **info)  # fmt: skip


def dppo_update(reps: int, activation: str = "relu", per_decision: bool = True) -> dict:
    """The DPPO update alone at DPPO's gym-hopper sizes: residual MLP denoiser 512 wide (one
    residual block, as DPPO's ``mlp_dims: [512, 512, 512]``), critic 3 x 256, K = 20, K' = 10,
    To = 1, Ds = 11, Ta = 4, Da = 3; 5,000 decisions = 50,000 (decision, denoising step)
    pairs in 10 minibatches of 5,000, one epoch. Rate in pairs per second."""
    from refine_dp_jax.config import DiffusionConfig, DPPOConfig
    from refine_dp_jax.diffusion.networks import Critic, DenoiserConfig, make_denoiser
    from refine_dp_jax.train.dppo import DPPOBatch, make_dppo

    n, kp, ta, da, ds = 5000, 10, 4, 3, 11
    dcfg = DiffusionConfig(
        obs_history=1, horizon=ta, exec_steps=ta, num_steps=20, ft_steps=kp,
        denoiser=DenoiserConfig(hidden=512, depth=1, time_dim=16, activation=activation),
    )  # fmt: skip
    pcfg = DPPOConfig(
        epochs=1, minibatches=10, critic_hidden=(256, 256, 256), critic_per_decision=per_decision
    )
    den, critic = make_denoiser(dcfg.denoiser), Critic(pcfg.critic_hidden)
    fns = make_dppo(den, critic, dcfg, pcfg, da, n * kp)
    ks = jax.random.split(jax.random.PRNGKey(0), 6)
    cond = jax.random.normal(ks[0], (n, 1, ds))
    params = den.init(ks[1], jnp.zeros((1, ta, da)), jnp.zeros((1,), jnp.int32), cond[:1])
    learner = fns.init(params["params"], critic.init(ks[2], cond[:1])["params"], n)
    learner = learner.replace(iteration=learner.iteration + pcfg.critic_warmup_iters)
    batch = DPPOBatch(
        cond=cond, xs=jax.random.normal(ks[3], (n, kp + 1, ta, da)),
        old_log_prob=jax.random.normal(ks[4], (n, kp)) * 0.1 - 1.0,
        advantages=jax.random.normal(ks[5], (n,)), returns=jax.random.normal(ks[0], (n,)),
    )  # fmt: skip

    def step(lrn):
        return fns.update(lrn, batch, jax.random.PRNGKey(1))

    compile_s, per_call, _ = timed(step, learner, reps)
    return append_result(
        "dppo_update", env="dppo_hopper_sizes", batch=n, steps_per_s=n * kp / per_call,
        compile_s=compile_s, seconds_per_iteration=per_call, activation=activation,
        critic_per_decision=per_decision,
        part=f"pairs/s, {activation}, critic per {'decision' if per_decision else 'pair'}",
    )  # fmt: skip


def sweep_scaling(cfg, num_envs: int, members: int, reps: int, single: dict | None = None) -> dict:
    """Throughput of S sweep members in one vmapped program (the `refine-dp sweep` path).
    ``single``: a dppo_step row at this batch, recorded as S=1 (the program a single run
    compiles, without the sweep's vmap) instead of compiling the S=1 sweep program."""
    if members == 1 and single is not None:
        return append_result(
            "sweep", env=cfg.env, batch=num_envs, members=1, steps_per_s=single["steps_per_s"],
            compile_s=single["compile_s"], note="S=1: the single-run dppo_step program",
        )  # fmt: skip
    from refine_dp_jax.train.loop import guard_nonfinite

    cfg, parts, state = finetune_setup(cfg, num_envs)
    step = jax.vmap(guard_nonfinite(pipeline.finetune_step(parts, cfg, joint=False)))
    stacked = jax.tree.map(lambda x: jnp.stack([x] * members), state)
    stacked = stacked.replace(key=jax.random.split(jax.random.PRNGKey(1), members))
    compile_s, per_call, _ = timed(step, stacked, reps)
    llc_steps, _ = env_steps_per_iteration(cfg)
    rate = members * llc_steps / per_call
    return append_result(
        "sweep", env=cfg.env, batch=num_envs, members=members, steps_per_s=rate,
        compile_s=compile_s,
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, < 10 min on 2 CPU cores")
    ap.add_argument("--experiment", default="testbed")
    ap.add_argument("--only", nargs="*", default=None, help="benchmarks to run (names)")
    args = ap.parse_args()
    cfg = experiments.get(args.experiment)
    batch = 64 if args.quick else 256
    reps = 2 if args.quick else 5
    want = lambda n: args.only is None or n in args.only
    print(f"run_id {RUN_ID}, device {jax.devices()[0].device_kind} x {jax.device_count()}")
    phys = None
    measured = {}  # breakdown parts already timed in this run: part -> (compile_s, s/iteration)
    if want("physics_limit"):
        # quick: the experiment's env, the probe env, one humanoid task and the humanoid LLC's
        # robot-only scene (each humanoid model compiles for ~40 s on 2 cores); full: every
        # registered environment
        names = envs.names()
        if args.quick:
            names = [n for n in names if n in (cfg.env, "point_reach", *QUICK_HUMANOIDS)]
        for name in names:
            row = physics_limit(name, batch, 100, reps)
            if name == cfg.env:
                phys = row
            print(f"physics_limit {name}: {row['steps_per_s']:,.0f} steps/s")
    if want("dppo_step"):
        row = dppo_step(cfg, batch, reps, phys)
        dppo_row = row
        measured["dppo_step"] = (row["compile_s"], row["seconds_per_iteration"])
        print(
            f"dppo_step: {row['steps_per_s']:,.0f} LLC steps/s, "
            f"ratio to physics {row.get('ratio_to_physics_limit', float('nan')):.2f}"
        )
        if want("host_loop"):  # equal work: the rollout alone, fused vs Python-driven
            fused = fused_rollout(cfg, batch, reps)
            measured["rollout"] = (fused["compile_s"], fused["seconds_per_iteration"])
            host = host_loop(cfg, batch, 1)
            ratio = fused["steps_per_s"] / host["steps_per_s"]
            append_result("fused_vs_host_loop", env=cfg.env, batch=batch,
                          steps_per_s=fused["steps_per_s"], compile_s=fused["compile_s"],
                          ratio=ratio, note="rollout only, both sides")  # fmt: skip
            print(
                f"host_loop: {host['steps_per_s']:,.0f} LLC steps/s, fused rollout "
                f"{fused['steps_per_s']:,.0f} ({ratio:.2f}x)"
            )
    if want("breakdown"):
        if phys is not None:  # the same model and batch: per-iteration time from its rate
            _, n_phys = env_steps_per_iteration(replace(cfg, **{"finetune.num_envs": batch}))
            measured["physics"] = (phys["compile_s"], n_phys / phys["steps_per_s"])
        rows = breakdown(cfg, batch, reps, measured, quick=args.quick)
        total = rows[-1]["seconds_per_iteration"]
        for r in rows:
            print(f"breakdown {r['part']:13s} {r['seconds_per_iteration']:.3f} s/iteration "
                  f"({r['seconds_per_iteration'] / total:.0%} of the DPPO step)")  # fmt: skip
    if want("llc_ppo"):
        ours = llc_ppo(cfg, batch, reps)
        print(f"llc_ppo: {ours['steps_per_s']:,.0f} env steps/s")
        if want("brax_ppo"):
            theirs = brax_ppo(cfg, batch, args.quick)
            append_result("llc_ppo_vs_brax", env=cfg.env, batch=batch,
                          steps_per_s=ours["steps_per_s"], compile_s=float("nan"),
                          ratio=ours["steps_per_s"] / theirs["steps_per_s"])  # fmt: skip
            print(
                f"brax_ppo: {theirs['steps_per_s']:,.0f} env steps/s "
                f"(ours {ours['steps_per_s'] / theirs['steps_per_s']:.2f}x)"
            )
    scaling = {}  # batch -> scaling row
    sweep_batch = 16 if args.quick else 128
    if want("scaling"):
        sizes = (16, 64, 128) if args.quick else (32, 64, 128, 256, 512)
        for b in sizes:
            if b == batch and "dppo_step" in measured:  # the same program, timed above
                row = append_result("scaling", **{
                    k: v for k, v in dppo_row.items() if k in SCALING_KEYS
                }, note="the dppo_step measurement of this run")  # fmt: skip
            else:
                row = dppo_step(cfg, b, reps, None, name="scaling")
            scaling[b] = row
            print(f"scaling B={b}: {row['steps_per_s']:,.0f} LLC steps/s")
    if want("dppo_update"):  # DPPO's hopper sizes; critic per decision against per pair
        rows = [dppo_update(reps, per_decision=pd) for pd in (True, False)]
        append_result("dppo_update_critic_per_decision_vs_per_pair", env="dppo_hopper_sizes",
                      batch=rows[0]["batch"], steps_per_s=rows[0]["steps_per_s"],
                      compile_s=rows[0]["compile_s"],
                      ratio=rows[0]["steps_per_s"] / rows[1]["steps_per_s"],
                      note="pairs/s, critic per decision / per pair")  # fmt: skip
        for r in rows:
            print(f"dppo_update (critic per decision: {r['critic_per_decision']}): "
                  f"{r['steps_per_s']:,.0f} pairs/s, compile {r['compile_s']:.1f} s")  # fmt: skip
    if want("sweep"):  # quick: S=1 is the single-run program of the scaling row at this batch
        single = scaling.get(sweep_batch) if args.quick else None
        for m in (1, 4) if args.quick else (1, 2, 4, 8):
            row = sweep_scaling(cfg, sweep_batch, m, reps, single)
            print(f"sweep S={m}: {row['steps_per_s']:,.0f} LLC steps/s over all members")
    from benchmarks.report import write_report

    write_report()


if __name__ == "__main__":
    main()
