"""``refine-dp export``: a run's hierarchical policy as ``jax.export`` artifacts that run without
this package (``refine_dp_jax.exported`` is the loader, copied next to them).

    RUN/export/<policy>/dp.jaxexport   (history [b,To,Ds], key uint32[2]) -> commands [b,Ta,Dc]
                        llc.jaxexport  (observation [b,Do]) -> action [b,Da]
                        policy.json    shapes, rates, command bounds and rate limit, robot
                                       joint/actuator order, checksums, how the run was made
                        load_policy.py the loader (json, numpy, jax only)

The batch size b is symbolic: one artifact serves any number of robots. Both functions are
deterministic (the DP's sampler draws only its initial noise, from the key) and carry their
parameters and normalizers inside.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from refine_dp_jax import exported
from refine_dp_jax.checkpoint import read_done
from refine_dp_jax.config import ConfigError
from refine_dp_jax.envs.base import denormalize_command
from refine_dp_jax.logs import write_json
from refine_dp_jax.train.finetune import dp_plan_fn

POLICIES = ("finetune_joint", "finetune_dp", "pretrained")


def available_policies(out: str) -> list[str]:
    stage = {"finetune_joint": "finetune_joint", "finetune_dp": "finetune_dp", "pretrained": "dp"}
    return [p for p in POLICIES if read_done(os.path.join(out, stage[p])) is not None]


def export_policy(parts, out: str, name: str | None = None) -> str:
    """Writes ``out/export/<name>`` (default: the most trained policy of the run); returns it."""
    have = available_policies(out)
    if not have or "pretrained" not in have:
        raise ConfigError(f"{out}: no trained DP to export (stages llc and dp must be done)")
    name = name or have[0]
    if name not in have:
        raise ConfigError(f"{out}: policy {name!r} is not trained here; available: {have}")
    cfg, env, d = parts.cfg, parts.env, parts.cfg.diffusion
    from refine_dp_jax.pipeline import load_policy

    planner, normalizer, llc = load_policy(parts, out, name)
    plan = dp_plan_fn(parts.dppo, d.ft_steps)

    def dp_fn(history, key):
        chunk, _ = plan((planner, normalizer), normalizer(history), key, True)
        return denormalize_command(env, chunk)

    def llc_fn(observation):
        return parts.llc_ppo.act(llc, observation, jax.random.PRNGKey(0), True)[0]

    (b,) = jax.export.symbolic_shape("b")
    f32 = jnp.float32
    arts = {
        "dp.jaxexport": jax.export.export(jax.jit(dp_fn))(
            jax.ShapeDtypeStruct((b, d.obs_history, env.dp_observation_size), f32),
            jax.ShapeDtypeStruct((2,), jnp.uint32),
        ),
        "llc.jaxexport": jax.export.export(jax.jit(llc_fn))(
            jax.ShapeDtypeStruct((b, env.observation_size), f32)
        ),
    }
    dest = os.path.join(out, "export", name)
    os.makedirs(dest, exist_ok=True)
    for fname, art in arts.items():
        with open(os.path.join(dest, fname), "wb") as f:
            f.write(art.serialize())
    shutil.copy(exported.__file__, os.path.join(dest, "load_policy.py"))
    m = env.mj_model
    max_step = getattr(env, "command_max_step", None)
    run_record = {}
    if os.path.exists(os.path.join(out, "config.json")):
        with open(os.path.join(out, "config.json")) as f:
            run_record = json.load(f)
    spec = {
        "format": exported.FORMAT, "env": env.name, "policy": name,
        "obs_history": d.obs_history, "horizon": d.horizon, "exec_steps": d.exec_steps,
        "hold": cfg.hold, "dt": float(env.dt),
        "dp_observation_size": env.dp_observation_size,
        "observation_size": env.observation_size, "action_size": env.action_size,
        "command_size": env.command_size,
        "command_low": np.asarray(env.command_low).tolist(),
        "command_high": np.asarray(env.command_high).tolist(),
        "command_max_step_per_llc_step": (
            None if max_step is None else np.asarray(max_step).tolist()
        ),
        "joints": [m.joint(i).name for i in range(m.njnt)],
        "actuators": [m.actuator(i).name for i in range(m.nu)],
        "sha256": {f: exported.sha256(os.path.join(dest, f)) for f in exported.FILES},
        "made_by": (run_record.get("run") or {}).get("command"),
        "versions": run_record.get("versions"),
    }  # fmt: skip
    write_json(os.path.join(dest, "policy.json"), spec, fsync=True)  # vouches for the artifacts
    return dest
