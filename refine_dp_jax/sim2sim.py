"""``refine-dp sim2sim``: a run's exported policy in MuJoCo's own physics, against MJX.

The first check before a robot: does what was learned in MJX hold in another simulator? The
policy is the one ``refine-dp export`` writes (``jax.export`` artifacts, called in the
evaluation's graph); the environment is the run's own (observations, commands, success test,
resets), with only its physics step swapped: ``mujoco.mj_step`` on the CPU, on the same
``MjModel`` (same MJCF, solver and contact settings), through ``jax.pure_callback``. Three
evaluations on the same initial states (the run's evaluation key), first episode of each env:

  mjx            the policy as trained (the ``evaluate`` stage's number for as many episodes)
  mjx_exported   the exported artifacts in MJX (export fidelity)
  mujoco         the exported artifacts in MuJoCo's C physics (sim-to-sim)

Environments whose physics model changes per episode (the humanoid's domain randomization)
are refused: their MuJoCo twin would need the same per-episode model.
"""

from __future__ import annotations

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np

from refine_dp_jax.config import ConfigError
from refine_dp_jax.envs.base import normalize_command
from refine_dp_jax.logs import write_json

# What mj_step reads from a state (besides the model) and what it changes that MJX keeps.
STATE_IN = ("qpos", "qvel", "act", "ctrl", "qfrc_applied", "xfrc_applied", "qacc_warmstart",
            "mocap_pos", "mocap_quat", "time")  # fmt: skip
STATE_OUT = ("qpos", "qvel", "act", "qacc_warmstart", "time")


class MujocoStepper:
    """``mujoco.mj_step`` for a batch of states, host side: numpy arrays with any leading batch
    shape in (``STATE_IN`` order), the stepped ``STATE_OUT`` arrays out (same dtypes). One
    ``MjData`` per batch entry, reused across calls; every field mj_step reads is written
    first, so no state leaks from one call into the next."""

    def __init__(self, mj_model):
        self.model = mj_model
        self._data: list = []

    def __call__(self, *arrays):
        import mujoco

        ins = {k: np.asarray(a) for k, a in zip(STATE_IN, arrays, strict=True)}
        lead = ins["time"].shape  # time is a scalar per state
        n = int(np.prod(lead))
        flat = {k: a.reshape((n,) + a.shape[len(lead) :]) for k, a in ins.items()}
        while len(self._data) < n:
            self._data.append(mujoco.MjData(self.model))
        outs = {k: np.empty_like(flat[k]) for k in STATE_OUT}
        for i in range(n):
            d = self._data[i]
            for k in STATE_IN:
                if k == "time":
                    d.time = float(flat[k][i])
                else:
                    getattr(d, k)[:] = flat[k][i]
            mujoco.mj_step(self.model, d)
            for k in STATE_OUT:
                outs[k][i] = d.time if k == "time" else getattr(d, k)
        return tuple(outs[k].reshape(lead + outs[k].shape[1:]) for k in STATE_OUT)


def with_mujoco_physics(env):
    """A copy of ``env`` whose ``physics_step`` is MuJoCo's C ``mj_step`` (then
    ``mjx.forward`` for the derived quantities the environment reads: positions, sensors)."""
    from mujoco import mjx

    if not hasattr(env, "physics_step"):
        raise ConfigError(
            f"sim2sim: environment {env.name!r} has no swappable physics step (its model is "
            "randomized per episode); supported: the testbed and point_reach"
        )
    stepper = MujocoStepper(env.mj_model)
    model = env.mjx_model

    def physics_step(data):
        shapes = tuple(
            jax.ShapeDtypeStruct(getattr(data, k).shape, getattr(data, k).dtype) for k in STATE_OUT
        )
        args = [getattr(data, k) for k in STATE_IN]
        out = jax.pure_callback(stepper, shapes, *args, vmap_method="broadcast_all")
        return mjx.forward(model, data.replace(**dict(zip(STATE_OUT, out, strict=True))))

    twin = copy.copy(env)
    twin.physics_step = physics_step
    return twin


class _ExportedLLC:
    """The exported LLC where the rollout expects a ``GaussianPPO``: ``act`` on a batch."""

    def __init__(self, fn):
        self._fn = fn

    def act(self, learner, obs, key, deterministic=True):
        del learner, key, deterministic  # the artifact is deterministic, parameters inside
        return self._fn.call(obs), jnp.zeros(obs.shape[:-1])


def exported_planner(policy, env):
    """(plan, planner_params, llc) for ``evaluate.make_evaluate`` from an ``ExportedPolicy``:
    the artifact normalizes the history itself (identity normalizer here) and returns commands
    in command units (mapped back to [-1, 1], where the rollout expects them)."""
    from refine_dp_jax.train.hierarchy import ObsNormalizer

    ds = policy.spec["dp_observation_size"]
    identity = ObsNormalizer(mean=jnp.zeros(ds), std=jnp.ones(ds))

    def plan(params, cond, key, deterministic):
        del params, deterministic
        return normalize_command(env, policy.dp_function.call(cond, key)), None

    return plan, ((), identity), _ExportedLLC(policy.llc_function)


def run_sim2sim(parts, out: str, name: str | None = None, episodes: int | None = None) -> dict:
    """Exports the run's policy (``name``: default the most trained), evaluates it three ways
    (module docstring) on ``episodes`` (default ``eval_episodes``) envs; writes
    ``out/sim2sim/<policy>/results.json`` and ``results.md``; returns the results."""
    from refine_dp_jax import exported
    from refine_dp_jax.pipeline import load_policy, make_evaluator, stage_key
    from refine_dp_jax.policy_export import export_policy
    from refine_dp_jax.train.finetune import dp_plan_fn

    cfg, env, d = parts.cfg, parts.env, parts.cfg.diffusion
    episodes = episodes or cfg.eval_episodes
    if episodes < 1:
        raise ConfigError(f"sim2sim: episodes must be >= 1, got {episodes}")
    twin = with_mujoco_physics(env)  # refuses an unsupported env before anything compiles
    dest = export_policy(parts, out, name)
    policy = exported.load(dest)
    name = policy.spec["policy"]
    key = stage_key(parts, "eval")  # the run's evaluation: the same initial states

    def evaluate(e, plan, llc, params, learner):
        ev = make_evaluator(parts, plan, episodes, env=e, llc_ppo=llc)
        m = ev(params, learner, key, cfg.task_curriculum)
        return {k: float(np.asarray(v)) for k, v in m.items()}

    planner, normalizer, llc = load_policy(parts, out, name)
    plan, params, ex_llc = exported_planner(policy, env)
    results = {
        "mjx": evaluate(
            env, dp_plan_fn(parts.dppo, d.ft_steps), parts.llc_ppo, (planner, normalizer), llc
        ),  # fmt: skip
        "mjx_exported": evaluate(env, plan, ex_llc, params, ()),
        "mujoco": evaluate(twin, plan, ex_llc, params, ()),
    }
    gap = 100 * (results["mujoco"]["success_rate"] - results["mjx_exported"]["success_rate"])
    record = {"policy": name, "env": env.name, "episodes": episodes,
              "curriculum": cfg.task_curriculum, "results": results,
              "sim2sim_gap_points": gap}  # fmt: skip
    path = os.path.join(out, "sim2sim", name)
    os.makedirs(path, exist_ok=True)
    write_json(os.path.join(path, "results.json"), record)
    with open(os.path.join(path, "results.md"), "w") as f:
        f.write(results_markdown(record))
    return record


def results_markdown(record: dict) -> str:
    rows = {"mjx": "MJX, the policy as trained", "mjx_exported": "MJX, exported artifacts",
            "mujoco": "MuJoCo C (`mj_step`), exported artifacts"}  # fmt: skip
    lines = [
        f"# Sim-to-sim: {record['policy']} on {record['env']}",
        "",
        f"First episode of each of {record['episodes']} envs, the run's evaluation initial "
        f"states (curriculum {record['curriculum']:g}), deterministic sampling.",
        "",
        "| physics, policy | success | completion time (s) | non-finite |",
        "| --- | --- | --- | --- |",
    ]
    for k, label in rows.items():
        r = record["results"][k]
        lines.append(f"| {label} | {100 * r['success_rate']:.1f} % | "
                     f"{r['completion_time_s']:.2f} | {r['nonfinite']:.0f} |")  # fmt: skip
    lines += ["", f"MuJoCo minus MJX (exported): {record['sim2sim_gap_points']:+.1f} points.", ""]
    return "\n".join(lines)
