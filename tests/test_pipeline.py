"""The whole pipeline at toy sizes: every stage runs, artifacts are written, resume matches an
uninterrupted run, non-finite physics is reset and counted, bad input fails early."""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiments
from refine_dp_jax import pipeline
from refine_dp_jax.checkpoint import load_artifact, write_manifest
from refine_dp_jax.config import ConfigError, replace
from refine_dp_jax.data.demos import DemoFormatError, load_demos
from refine_dp_jax.train.loop import guard_nonfinite
from tests.conftest import TINY


def test_every_stage_runs_and_writes_its_artifacts(tiny_run, tiny_cfg):
    out, summary = tiny_run
    # DP-only fine-tuning is the same stage function as joint fine-tuning without the LLC phase.
    stages = [s for s in pipeline.STAGES if tiny_cfg.run_dp_only or s != "finetune_dp"]
    for stage in stages:
        assert os.path.exists(os.path.join(out, stage, "done.json")), stage
    for stage in [s for s in stages if s not in ("demos", "dp", "eval")]:
        rows = [json.loads(x) for x in open(os.path.join(out, stage, "metrics.jsonl"))]
        assert rows and all(np.isfinite(v) for r in rows for v in r.values()), stage
        assert os.path.exists(os.path.join(out, stage, "curves.png"))
        assert os.listdir(os.path.join(out, stage, "tb"))
    for key in ("success_rate_pretrained", "success_rate_joint", "success_rate_mlp_ppo",
                "eval_episodes", "env_steps", "wall_seconds"):  # fmt: skip
        assert summary[key] is not None, key
    assert "success_rate_finetuned" in summary
    assert 0.0 <= summary["success_rate_joint"] <= 1.0
    assert summary["env_steps"] > 0
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["config"]["env"] == experiments.get(TINY).env and "jax" in cfg["versions"]
    assert os.path.exists(os.path.join(out, "eval", "success.png"))


def test_demo_format_is_validated(tiny_run, tiny_parts, tmp_path):
    out, _ = tiny_run
    demos = load_demos(os.path.join(out, "demos"), tiny_parts.env)
    assert demos.obs.shape[0] == demos.meta["num_episodes"] >= 1
    bad = tmp_path / "bad"
    bad.mkdir()
    meta = dict(demos.meta, version=99)
    (bad / "demos.json").write_text(json.dumps(meta))
    np.savez(bad / "demos.npz", obs=demos.obs, commands=demos.commands, lengths=demos.lengths)
    with pytest.raises(DemoFormatError, match="version"):
        load_demos(str(bad))
    meta["version"] = 1
    (bad / "demos.json").write_text(json.dumps(meta))
    np.savez(bad / "demos.npz", obs=demos.obs * np.nan, commands=demos.commands,
             lengths=demos.lengths)  # fmt: skip
    with pytest.raises(DemoFormatError, match="no manifest"):  # not written by save_demos
        load_demos(str(bad))
    write_manifest(str(bad), {"obs": demos.obs * np.nan, "commands": demos.commands,
                              "lengths": demos.lengths})  # fmt: skip
    with pytest.raises(DemoFormatError, match="non-finite"):
        load_demos(str(bad))


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.tiny_run_late
@pytest.mark.parametrize("stage", ["llc", "finetune_joint"])
def test_resume_matches_uninterrupted_run(stage, tiny_run, tiny_parts, tiny_cfg, tmp_path):
    """Stop a stage after one iteration (as a kill would, after its checkpoint), rerun the same
    command: the final parameters equal those of the uninterrupted run bit for bit."""
    out, _ = tiny_run
    resumed = str(tmp_path / "resumed")
    os.makedirs(resumed)
    # Stages before the one under test are copied from the uninterrupted run.
    import shutil

    for dep in ("llc", "demos", "dp"):
        if dep != stage:
            shutil.copytree(os.path.join(out, dep), os.path.join(resumed, dep))
    if stage == "llc":
        run = lambda **kw: pipeline.stage_llc(tiny_parts, resumed, **kw)
        get = lambda d: load_artifact(os.path.join(d, "llc", "final"),
                                      {"llc": pipeline.llc_template(tiny_parts)})[0]  # fmt: skip
    else:
        run = lambda **kw: pipeline.stage_finetune(tiny_parts, resumed, joint=True, **kw)
        get = lambda d: pipeline.load_finetuned(tiny_parts, d, "finetune_joint")
    assert run(stop_after=1)["interrupted"] is True
    assert not os.path.exists(os.path.join(resumed, stage, "done.json"))
    if stage == "llc":  # eval-llc / export-llc of the unfinished run: its newest checkpoint
        learner, info = pipeline.latest_llc(tiny_parts, resumed)
        assert (info["finished"], info["iterations_done"]) == (False, 1)
        assert all(np.all(np.isfinite(x)) for x in _leaves(learner.params))
    run()
    a, b = _leaves(get(out)), _leaves(get(resumed))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    rows = [json.loads(x) for x in open(os.path.join(resumed, stage, "metrics.jsonl"))]
    assert [r["iteration"] for r in rows] == list(range(len(rows)))


@pytest.mark.tiny_run_late
def test_joint_llc_phase_on_its_own_envs_leaves_the_dp_phase_as_dp_only(
    tiny_run, tiny_parts, tiny_cfg
):
    """``finetune.llc_own_envs``: the LLC phase rolls out its own envs (``hier_llc``). In an
    iteration whose LLC update is critic-only (``llc_critic_warmup``) the DP phase then sees
    exactly what DP-only fine-tuning sees: the same DP update and env states, bit for bit;
    the LLC's actor is unchanged, its critic and its envs moved."""
    out, _ = tiny_run
    cfg = replace(tiny_cfg, **{"finetune.llc_own_envs": True, "finetune.llc_critic_warmup": 1})
    state = pipeline.finetune_state(tiny_parts, cfg, out, joint=True)
    assert state.hier_llc is not None
    joint, _ = jax.jit(pipeline.finetune_step(tiny_parts, cfg, True))(state)
    dp_only, _ = jax.jit(pipeline.finetune_step(tiny_parts, cfg, False))(state)
    for x, y in zip(_leaves((joint.planner, joint.hier)), _leaves((dp_only.planner, dp_only.hier)),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(x, y)
    for x, y in zip(_leaves(state.llc.params.actor), _leaves(joint.llc.params.actor), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(_leaves(state.llc.params.critic)[0], _leaves(joint.llc.params.critic)[0])
    assert not np.array_equal(np.asarray(state.hier_llc.env.data.qpos),
                              np.asarray(joint.hier_llc.env.data.qpos))  # fmt: skip


def test_nonfinite_physics_is_reset_and_counted(tiny_parts, tiny_cfg):
    """An env whose physics turns NaN is flagged, reset, counted, and never reaches learning
    (the step jitted as the LLC stage's loop jits it, with the non-finite guard)."""
    from refine_dp_jax.train.llc import make_llc_train

    init, step, _ = make_llc_train(tiny_parts.env, tiny_cfg.llc)
    state = init(jax.random.PRNGKey(0))
    data = state.env_state.data
    state = state.replace(
        env_state=state.env_state.replace(data=data.replace(qvel=data.qvel.at[0].set(jnp.nan)))
    )
    state = jax.tree.map(lambda x: jnp.array(x, copy=True), state)
    new, metrics = jax.jit(guard_nonfinite(step), donate_argnums=0)(state)
    assert float(metrics["skipped_nonfinite_update"]) == 0.0  # the NaN never reached learning
    assert float(metrics["nonfinite_resets"]) >= 1
    assert all(np.isfinite(x).all() for x in _leaves(new.learner))
    assert all(np.isfinite(x).all() for x in _leaves(new.env_state.data.qvel))


def test_actor_lr_anneals_linearly_to_lr_final(tiny_parts, tiny_cfg):
    """``LLCConfig.lr_final``: the actor's rate falls linearly over the iterations (a
    plain-Python reference), and the step at the last iteration is the step of a run at the
    final rate (the same state and key: the same actor afterwards)."""
    from refine_dp_jax.train.llc import actor_lr_scale, make_llc_train

    cfg = replace(tiny_cfg.llc, iterations=5, lr_final=1e-4, **{"ppo.lr": 3e-4})
    ref = [1.0 + min(i / 4, 1.0) * (1e-4 / 3e-4 - 1.0) for i in range(7)]
    np.testing.assert_allclose([float(actor_lr_scale(cfg, i)) for i in range(7)], ref, rtol=1e-6)
    assert float(actor_lr_scale(replace(cfg, lr_final=0.0), 3)) == 1.0  # 0: constant

    actors = []
    for llc in (cfg, replace(cfg, lr_final=0.0, **{"ppo.lr": 1e-4})):
        init, step, _ = make_llc_train(tiny_parts.env, llc)
        state = init(jax.random.PRNGKey(0)).replace(iteration=jnp.int32(4))
        new, metrics = jax.jit(step)(state)
        np.testing.assert_allclose(float(metrics["actor_lr"]), 1e-4, rtol=1e-5)
        actors.append(_leaves(new.learner.params.actor))
        before = _leaves(state.learner.params.actor)
    for x, y in zip(*actors, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-7)
    assert not np.allclose(actors[0][0], before[0])  # it did step


def test_guard_drops_nonfinite_updates():
    from flax import struct

    @struct.dataclass
    class S:
        w: jax.Array
        key: jax.Array

    bad = lambda s: (S(s.w * jnp.nan, s.key + 1), {})
    new, m = guard_nonfinite(bad)(S(jnp.ones(3), jnp.zeros(2, jnp.uint32)))
    np.testing.assert_array_equal(np.asarray(new.w), np.ones(3))
    assert int(new.key[0]) == 1 and float(m["skipped_nonfinite_update"]) == 1.0


def test_deadline_stops_with_a_checkpoint_and_resume_matches(tmp_path):
    """A deadline already past: one iteration, then a checkpoint (the rows and timing say so);
    the rerun without a deadline resumes there and ends where an uninterrupted run ends."""
    from flax import struct

    from refine_dp_jax.train.loop import run_loop

    @struct.dataclass
    class S:
        w: jax.Array
        key: jax.Array

    def step(s):
        key, sub = jax.random.split(s.key)
        w = s.w * 0.9 + jax.random.normal(sub, s.w.shape)
        return S(w, key), {"w0": w[0]}

    init = lambda: S(jnp.zeros(3), jax.random.PRNGKey(3))
    timing = {}
    stopped = str(tmp_path / "stopped")
    _, rows = run_loop(stopped, init(), step, 5, 10, "t", deadline=time.time(), timing=timing)
    assert len(rows) == 1 and len(timing["iteration_s"]) == 1 and timing["compile_s"] > 0
    assert os.path.isdir(os.path.join(stopped, "ckpt", "1"))
    resumed, rows = run_loop(stopped, init(), step, 5, 10, "t")
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    whole, _ = run_loop(str(tmp_path / "whole"), init(), step, 5, 10, "t")
    np.testing.assert_array_equal(np.asarray(resumed.w), np.asarray(whole.w))


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"dppo.minibatches": 5}, "DPPO"),
        ({"llc.ppo.minibatches": 3}, "LLC PPO"),
        ({"diffusion.exec_steps": 9}, "exec_steps"),
        ({"dppo.sample_std_floor": 0.0}, "sample_std_floor"),
        ({"hold": 0}, "hold"),
        ({"no_such_field": 1}, "no field"),
    ],
)
def test_bad_experiment_values_fail_before_compiling(tiny_cfg, changes, match):
    with pytest.raises(ConfigError, match=match):
        replace(tiny_cfg, **changes)


def test_run_dir_refuses_a_different_config(tiny_cfg, tmp_path):
    pipeline.save_config(tiny_cfg, str(tmp_path))
    with pytest.raises(ConfigError, match="another config"):
        pipeline.save_config(replace(tiny_cfg, seed=5), str(tmp_path))
    with pytest.raises(ConfigError, match="another config"):  # also when told how it started
        pipeline.save_config(replace(tiny_cfg, seed=5), str(tmp_path), run={"command": "x"})


def test_cli_help_and_bad_experiment(capsys):
    from refine_dp_jax import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    assert "pipeline" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["pipeline", "--experiment", "nope", "--out", "/tmp/x"])
    assert e.value.code == 2


def test_exported_llc_is_loaded_instead_of_trained(tiny_run, tiny_cfg, tmp_path):
    """export-llc writes a stored LLC with its card; an experiment with llc_checkpoint set
    loads it in stage 1 (no training) and gets the same parameters."""
    from refine_dp_jax import cli

    out, _ = tiny_run
    to = tmp_path / "stored"
    cli.main(["export-llc", "--to", str(to), "--experiment", TINY, "--out", out])
    assert {"llc.npz", "llc.json", "README.md", "metrics.jsonl"} <= set(os.listdir(to))
    assert "refine-dp train-llc --experiment testbed_tiny" in (to / "README.md").read_text()
    cfg = replace(tiny_cfg, llc_checkpoint=str(to))
    parts = pipeline.build(cfg)
    run2 = str(tmp_path / "run2")
    done = pipeline.stage_llc(parts, run2)
    assert done["loaded_from"] == str(to) and done["env_steps"] == 0
    a = jax.tree.leaves(pipeline.load_llc(parts, out).params)
    b = jax.tree.leaves(pipeline.load_llc(parts, run2).params)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # llc_init: stage 1 trains the stored LLC further (0 iterations: exactly the stored one)
    cfg = replace(tiny_cfg, llc_init=str(to), **{"llc.iterations": 0})
    run3 = str(tmp_path / "run3")
    pipeline.stage_llc(pipeline.build(cfg), run3)
    c = jax.tree.leaves(pipeline.load_llc(parts, run3).params)
    for x, y in zip(a, c, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_report_shows_the_run(tiny_run, tiny_cfg, tmp_path):
    """report.md, written by the pipeline: the evaluation's numbers, every stage done, and
    links only to files that exist. A run started from the CLI records its command (kept by a
    later save without one), and the report lists exactly the fields that differ from the
    experiment's defaults."""
    import re

    from refine_dp_jax import cli
    from refine_dp_jax.report import STAGE_TITLES, write_report

    out, _ = tiny_run
    text = open(os.path.join(out, "report.md")).read()
    results = json.load(open(os.path.join(out, "eval", "done.json")))["results"]
    for r in results.values():
        assert f"| {100 * r['success_rate']:.1f} % |" in text
    for stage in pipeline.STAGES:
        if os.path.exists(os.path.join(out, stage, "done.json")):
            assert f"| {STAGE_TITLES[stage]} | done |" in text, stage
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert "finetune_joint/curves.png" in links and "eval/success.png" in links
    assert all(os.path.exists(os.path.join(out, link)) for link in links), links

    run = {"experiment": TINY, "sets": ["seed=7"], "command": "refine-dp pipeline --set seed=7"}
    pipeline.save_config(replace(tiny_cfg, seed=7), str(tmp_path), run)
    pipeline.save_config(replace(tiny_cfg, seed=7), str(tmp_path))  # e.g. run_pipeline's save
    assert json.load(open(tmp_path / "config.json"))["run"] == run
    ckpt = tmp_path / "llc" / "ckpt"  # a stage stopped after checkpoint 3, 5 half-written
    (ckpt / "3").mkdir(parents=True)
    (ckpt / "3" / "manifest.json").write_text("{}")
    (ckpt / "5").mkdir()
    text = open(write_report(str(tmp_path))).read()
    assert f"| {STAGE_TITLES['llc']} | running or stopped (checkpoint 3) |" in text
    assert [x for x in text.splitlines() if x.startswith("| `")] == ["| `seed` | 0 | 7 |"]
    assert "    refine-dp pipeline --set seed=7" in text and "Evaluation not done yet" in text
    with pytest.raises(SystemExit) as e:
        cli.main(["report", "--out", str(tmp_path / "nothing")])
    assert e.value.code == 2


def test_key_frames_are_evenly_spaced_and_halved():
    from refine_dp_jax.evaluate import key_frames

    frames = np.zeros((11, 4, 6, 3), np.uint8)
    for t in range(11):
        frames[t] = t  # each frame filled with its index
    grid = key_frames(frames, count=6, columns=3)
    assert grid.shape == (2 * 2, 3 * 3, 3)
    cells = [grid[r * 2, c * 3, 0] for r in range(2) for c in range(3)]
    assert cells == [0, 2, 4, 6, 8, 10]
    assert key_frames(frames[:2], count=6).shape == (2, 6, 3)  # fewer frames than cells


@pytest.mark.tiny_run_late
def test_sim2sim_runs_the_exported_policy_in_mujoco(tiny_run, tiny_parts, tmp_path):
    """refine-dp sim2sim on the tiny run: the exported artifacts in MJX give the episodes of
    the policy as trained (same initial states; the artifacts agree to ~1e-5, which may move a
    trajectory a little, not its outcome), and the MuJoCo-physics evaluation runs the same
    episodes through mj_step; results.json and results.md are written."""
    import shutil

    from refine_dp_jax.sim2sim import run_sim2sim

    out, _ = tiny_run
    run = str(tmp_path / "run")
    shutil.copytree(out, run, ignore=shutil.ignore_patterns("ckpt", "tb"))
    record = run_sim2sim(tiny_parts, run, episodes=4)  # the most trained: joint
    r = record["results"]
    assert record["policy"] == "finetune_joint" and record["episodes"] == 4
    assert r["mjx_exported"]["success_rate"] == r["mjx"]["success_rate"]
    assert r["mjx_exported"]["hand_err"] == pytest.approx(r["mjx"]["hand_err"], rel=0.1)
    assert r["mujoco"]["episodes"] == 4 and 0.0 <= r["mujoco"]["success_rate"] <= 1.0
    # not the MJX numbers passed through: the physics differ, so the tracking error does
    assert r["mujoco"]["hand_err"] != r["mjx_exported"]["hand_err"]
    for name in ("results.json", "results.md"):
        assert os.path.exists(os.path.join(run, "sim2sim", "finetune_joint", name)), name


def test_exported_policy_runs_without_the_package_and_matches(tiny_run, tiny_parts, tmp_path):
    """refine-dp export: in a fresh process that never imports refine_dp_jax, the artifacts
    give the same commands and LLC actions as the package's own functions for the same inputs
    (any batch size); a corrupt artifact, a wrong input shape or an untrained policy is a clear
    error."""
    import shutil
    import subprocess
    import sys

    from refine_dp_jax import exported
    from refine_dp_jax.envs.base import denormalize_command
    from refine_dp_jax.pipeline import load_policy
    from refine_dp_jax.policy_export import export_policy
    from refine_dp_jax.train.finetune import dp_plan_fn

    out, _ = tiny_run
    run = str(tmp_path / "run")
    shutil.copytree(out, run, ignore=shutil.ignore_patterns("ckpt", "tb"))
    dest = export_policy(tiny_parts, run)  # default: the most trained, joint here
    env, d = tiny_parts.env, tiny_parts.cfg.diffusion
    rng = np.random.default_rng(0)
    hist = rng.normal(size=(3, d.obs_history, env.dp_observation_size)).astype(np.float32)
    obs = rng.normal(size=(5, env.observation_size)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", hist=hist, obs=obs)
    script = (
        "import sys, numpy as np, load_policy\n"
        f"z = np.load({str(tmp_path / 'inputs.npz')!r})\n"
        f"p = load_policy.load({dest!r})\n"
        f"np.savez({str(tmp_path / 'outputs.npz')!r}, cmd=p.plan(z['hist'], seed=3),"
        " act=p.act(z['obs']))\n"
        "assert not [m for m in sys.modules if m.startswith('refine_dp_jax')], 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=dest, check=True, timeout=300)
    got = np.load(tmp_path / "outputs.npz")
    planner, normalizer, llc = load_policy(tiny_parts, run, "finetune_joint")
    key = jnp.asarray(np.array([0, 3], np.uint32))
    chunk, _ = dp_plan_fn(tiny_parts.dppo, d.ft_steps)(
        (planner, normalizer), normalizer(jnp.asarray(hist)), key, True
    )
    np.testing.assert_allclose(got["cmd"], denormalize_command(env, chunk), atol=1e-5)
    want = tiny_parts.llc_ppo.act(llc, jnp.asarray(obs), jax.random.PRNGKey(0), True)[0]
    np.testing.assert_allclose(got["act"], want, atol=1e-5)
    spec = json.load(open(os.path.join(dest, "policy.json")))
    assert spec["env"] == env.name and spec["command_size"] == got["cmd"].shape[-1]

    policy = exported.load(dest)
    with pytest.raises(exported.ExportError, match="expected shape"):
        policy.plan(hist[:, 1:])
    with open(os.path.join(dest, "dp.jaxexport"), "r+b") as f:
        f.seek(100)
        f.write(b"\0\1\2\3")
    with pytest.raises(exported.ExportError, match="checksum"):
        exported.load(dest)
    with pytest.raises(ConfigError, match="not trained here"):
        export_policy(tiny_parts, run, "no_such_policy")


def test_recorded_frames_merge_with_empty_trailing_axes():
    """The video recorder merges its (decision, command, LLC step) axes into frames. A scene
    without mocap bodies records mocap_pos [..., B, 0, 3]; reshape(-1, ...) raised
    ZeroDivisionError there and the table-lift pipeline lost its video."""
    from refine_dp_jax.train.hierarchy import merge_leading

    assert merge_leading(jnp.zeros((2, 3, 5, 4, 0, 3)), 3).shape == (30, 4, 0, 3)
    x = np.arange(2 * 3 * 5 * 4 * 7).reshape(2, 3, 5, 4, 7)
    np.testing.assert_array_equal(merge_leading(jnp.asarray(x), 3), x.reshape(30, 4, 7))
