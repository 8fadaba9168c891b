"""No silent wrong results: corrupted checkpoints and demonstrations are detected (and the
previous good checkpoint used), every bad input ends in one line and exit code 2 before
anything is written, a program that cannot fit in memory is refused before it runs, and Ctrl-C
says where the run stopped and how to resume it (exit 130). Tiny pytrees, no pipeline run."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refine_dp_jax import cli
from refine_dp_jax.checkpoint import (
    Checkpointer,
    load_artifact,
    mark_done,
    read_done,
    save_artifact,
)
from refine_dp_jax.data.demos import DemoFormatError, Demos, load_demos, save_demos
from refine_dp_jax.errors import CorruptArtifactError, InsufficientMemoryError
from refine_dp_jax.logs import write_json
from refine_dp_jax.memory import compile_checked
from tests.conftest import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(v: float):
    return {"w": jnp.full((64, 32), v), "b": jnp.arange(5, dtype=jnp.int32), "k": jnp.zeros(2)}


def _biggest_file(folder: str) -> str:
    files = [os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs
             if f != "manifest.json"]  # fmt: skip
    return max(files, key=os.path.getsize)


def _damage(path: str, how: str) -> None:
    data = bytearray(open(path, "rb").read())
    if how == "garble":  # 64 bytes changed, size unchanged
        mid = len(data) // 2
        data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
        open(path, "wb").write(bytes(data))
    else:
        open(path, "wb").write(bytes(data[: len(data) // 2]))


def _snapshot(folder: str) -> dict:
    return {os.path.join(r, f): os.path.getmtime(os.path.join(r, f))
            for r, _, fs in os.walk(folder) for f in fs}  # fmt: skip


@pytest.mark.parametrize("how", ["garble", "truncate"])
def test_bad_checkpoint_is_detected_and_previous_one_used(tmp_path, capsys, how):
    ck = Checkpointer(str(tmp_path / "llc" / "ckpt"))
    ck.save(10, _state(1.0), {"iteration": 10})
    ck.save(20, _state(2.0), {"iteration": 20})
    _damage(_biggest_file(ck.step_dir(20)), how)
    step, state, record = ck.restore_latest(_state(0.0))
    assert step == 10 and record == {"iteration": 10}
    np.testing.assert_array_equal(np.asarray(state["w"]), np.ones((64, 32)))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "falling back to step 10" in err[0] and "ckpt/20" in err[0], err
    assert ("does not match its checksum" if how == "garble" else "truncated") in err[0]
    assert os.listdir(tmp_path / "llc" / "corrupt")  # kept for inspection, out of the way
    ck.save(20, _state(3.0), {"iteration": 20})  # the run continues and saves step 20 again
    assert ck.restore_latest(_state(0.0))[0] == 20
    ck.close()


def test_no_good_checkpoint_stops_without_writing(tmp_path):
    ck = Checkpointer(str(tmp_path / "dp" / "ckpt"))
    ck.save(1, _state(1.0))
    _damage(_biggest_file(ck.step_dir(1)), "garble")
    before = _snapshot(str(tmp_path))
    with pytest.raises(CorruptArtifactError, match="no earlier good checkpoint") as e:
        ck.restore_latest(_state(0.0))
    assert e.value.stage == "dp"
    assert _snapshot(str(tmp_path)) == before
    ck.close()


def test_checkpoint_without_manifest_or_with_other_arrays_is_refused(tmp_path):
    ck = Checkpointer(str(tmp_path / "ckpt"))
    ck.save(1, _state(1.0))
    manifest = os.path.join(ck.step_dir(1), "manifest.json")
    saved = json.load(open(manifest))
    os.remove(manifest)  # as written by older code
    with pytest.raises(CorruptArtifactError, match="no manifest.json"):
        ck.restore(1, _state(0.0))
    saved["arrays"]["00000"]["sha256"] = "0" * 64  # files intact, an array's checksum not
    json.dump(saved, open(manifest, "w"))
    with pytest.raises(CorruptArtifactError, match="array 00000 .* does not match"):
        ck.restore(1, _state(0.0))
    ck.close()


def test_bad_stage_artifact_is_not_done(tmp_path, capsys):
    stage = tmp_path / "llc"
    stage.mkdir()
    save_artifact(str(stage / "final"), {"llc": _state(1.0)}, {"stage": "llc"})
    mark_done(str(stage), {"seconds": 1.0})
    assert read_done(str(stage), "final") == {"seconds": 1.0}
    _damage(_biggest_file(str(stage / "final")), "garble")
    with pytest.raises(CorruptArtifactError, match="does not match its checksum") as e:
        load_artifact(str(stage / "final"), {"llc": _state(0.0)})
    assert e.value.stage == "llc"
    assert read_done(str(stage), "final") is None  # so rerunning the pipeline redoes it
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stage llc is not done" in err[0] and "redoing it" in err[0]
    assert not (stage / "final").exists() and (stage / "corrupt").is_dir()


def test_json_write_is_all_or_nothing(tmp_path):
    """write_json replaces a file whole: a write that fails midway (an object JSON cannot
    encode, after part of the text went out) leaves the old file as it was and no debris."""
    path = str(tmp_path / "summary.json")
    write_json(path, {"success_rate": 0.5})
    with pytest.raises(TypeError):
        write_json(path, {"success_rate": 0.9, "bad": object()})
    assert json.load(open(path)) == {"success_rate": 0.5}
    assert os.listdir(tmp_path) == ["summary.json"]
    write_json(path, {"success_rate": 0.9}, fsync=True)
    assert json.load(open(path)) == {"success_rate": 0.9}


def _demos(tmp_path) -> str:
    rng = np.random.default_rng(0)
    demos = Demos(
        obs=rng.normal(size=(3, 6, 4)).astype(np.float32),
        commands=rng.normal(size=(3, 6, 2)).astype(np.float32),
        lengths=np.array([6, 4, 5], np.int32),
        meta={"format": "refine_dp_jax.demos", "version": 1, "env": "point_reach", "obs_dim": 4,
              "command_dim": 2, "num_episodes": 3},
    )  # fmt: skip
    folder = str(tmp_path / "demos")
    save_demos(demos, folder)
    mark_done(folder, {"kept": 3})
    assert load_demos(folder).obs.shape == (3, 6, 4)
    return folder


@pytest.mark.parametrize("how", ["garble", "truncate"])
def test_bad_demo_file_is_detected_and_not_done(tmp_path, capsys, how):
    folder = _demos(tmp_path)
    data = os.path.join(folder, "demos.npz")
    _damage(data, how)
    with pytest.raises(DemoFormatError, match="demos.npz") as e:
        load_demos(folder)
    assert e.value.path == data and e.value.stage == "demos"
    assert read_done(folder, ".") is None
    assert "stage demos is not done" in capsys.readouterr().err


def test_unreadable_demo_file_is_reported_with_its_path(tmp_path):
    """Damage that the file checksums do not see (a manifest rewritten to match): reading
    fails, and the error names the file instead of a bare BadZipFile."""
    from refine_dp_jax.checkpoint import write_manifest

    folder = _demos(tmp_path)
    _damage(os.path.join(folder, "demos.npz"), "truncate")
    write_manifest(folder, files=["demos.npz", "demos.json"])
    with pytest.raises(DemoFormatError, match=r"demos\.npz cannot be read \(BadZipFile"):
        load_demos(folder)


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the field, exit code 2, nothing written


BAD_INPUTS = [
    (["--set", "foo=1", "--set", "seed=1"], "no field 'foo'"),  # the first --set is applied
    (["--set", "seed=1", "seed=2"], "seed is given twice"),
    (["--set", "dppo.actor_lr=inf"], "dppo.actor_lr = inf: must be a finite number > 0"),
    (["--set", "pretrain.lr=inf"], "pretrain.lr = inf"),
    (["--set", "llc.ppo.min_log_std=inf"], "llc.ppo.min_log_std = inf"),
    (["--set", "pretrain.weight_decay=-1"], "pretrain.weight_decay = -1.0: must be"),
    (["--set", "llc.ppo.vf_coef=-1"], "llc.ppo.vf_coef = -1.0"),
    (["--set", "dppo.vf_coef=-0.5"], "dppo.vf_coef = -0.5"),
    (["--set", "llc.ppo.ent_coef=-0.01"], "llc.ppo.ent_coef = -0.01"),
    (["--set", "baseline.ppo.actor_hidden=0"], "baseline.ppo.actor_hidden = (0,)"),
    (["--set", "video_episodes=-3"], "video_episodes = -3: must be >= 0"),
    (["--set", "dppo=1"], "dppo = '1': is a config section"),
    (["--set", "env_overrides=1,2"], "env_overrides = '1,2'"),
    (["--set", "env=nope"], "env = 'nope': must be one of"),
    (["--set", "env_overrides.nope=3"], "no config field"),
    (["--set", "env_overrides.episode_seconds=nan"], "env_overrides.episode_seconds = nan"),
    (["--set", "diffusion.denoiser.heads=0"], "diffusion.denoiser.heads = 0: must be >= 1"),
    (["--set", "diffusion.denoiser.hidden=x"], "diffusion.denoiser.hidden = 'x': must be an"),
    (["--set", "finetune.num_envs=0"], "finetune.num_envs = 0"),
    (["--set", "demos.executor=robot"], "demos.executor = 'robot'"),
    (["--set", "seed=-1"], "seed = -1"),
    (["--set", "hold=1.5"], "hold = '1.5': must be an integer"),
    (["--set", "dppo.gamma=1.5"], "dppo.gamma = 1.5"),
    (["--set", "llc.ppo.gae_lambda=nan"], "llc.ppo.gae_lambda = nan"),
    (["--set", "pretrain.ema_decay=1"], "pretrain.ema_decay = 1.0"),
    (["--set", "task_curriculum=-inf"], "task_curriculum = -inf"),
    (["--set", "dppo.critic_hidden=a,b"], "dppo.critic_hidden = 'a,b'"),
    (["--set", "seed"], "key=value"),
    (["--experiment", "nope"], "unknown experiment 'nope'"),
    (["--set", "llc_checkpoint=/nonexistent"], "LLC checkpoint /nonexistent: llc.json is missing"),
    (["--set", "llc_init=/nonexistent"], "LLC checkpoint /nonexistent: llc.json is missing"),
    (["--set", "llc_init=a", "--set", "llc_checkpoint=b"], "exclude each other"),
    (["--experiment", "humanoid_door"], "humanoid_llc_walk: llc.json is missing"),  # not trained
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    argv = ["pipeline", "--experiment", TINY, "--out", str(out), *args]
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()  # nothing written (config.json included)


@pytest.mark.parametrize("kind", ["file", "under_a_file"])
def test_unusable_out_is_one_line(tmp_path, capsys, kind):
    f = tmp_path / "a_file"
    f.write_text("x")
    out = f if kind == "file" else f / "run"
    with pytest.raises(SystemExit) as e:
        cli.main(["pipeline", "--experiment", TINY, "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out {out}" in err[0], err


def test_repeated_set_flags_are_all_applied():
    cfg = cli.experiment_config(TINY, (("seed=3",), ("hold=3", "dppo.actor_lr=2e-4")))
    assert (cfg.seed, cfg.hold, cfg.dppo.actor_lr) == (3, 3, 2e-4)
    cfg = cli.experiment_config(TINY, (("env_overrides.episode_seconds=9",),))
    assert dict(cfg.env_overrides) == {"episode_seconds": 9}
    for text in ("1.5,3.5", "[1.5,3.5]", "(1.5, 3.5)"):  # a tuple field, spelled three ways
        cfg = cli.experiment_config(
            "humanoid_llc_stand", ((f"env_overrides.push_interval={text}",),)
        )
        assert dict(cfg.env_overrides)["push_interval"] == (1.5, 3.5), text


def test_integer_values_of_float_env_fields_become_floats():
    """``--set env_overrides.payload_prob=0`` parses to the int 0; the env config makes it 0.0
    (a compiled reset's ``jax.random.bernoulli`` refused the int). Int fields stay ints."""
    from refine_dp_jax.envs.humanoid_config import HumanoidConfig
    from refine_dp_jax.envs.testbed import TestbedConfig

    cfg = cli.experiment_config(
        "humanoid_llc_stand", (("env_overrides.payload_prob=0", "env_overrides.push_interval=2,4"),)
    )
    hc = HumanoidConfig(**dict(cfg.env_overrides), start_hands=(0, 1, 0))
    assert type(hc.payload_prob) is float and hc.payload_prob == 0.0
    assert all(type(x) is float for x in (*hc.push_interval, *hc.start_hands))
    assert type(hc.substeps) is int  # an int field is left alone
    assert not bool(jax.jit(lambda k: jax.random.bernoulli(k, hc.payload_prob))(jax.random.key(0)))
    tb = TestbedConfig(episode_seconds=12, link_lengths=(1, 1))
    assert type(tb.episode_seconds) is float and type(tb.link_lengths[0]) is float


def test_missing_upstream_artifact_names_the_command(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        cli.main(["finetune", "--experiment", TINY, "--out", str(out)])
    assert e.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dp/final" in err[0], err
    assert f"redo stage dp with: refine-dp pretrain --experiment {TINY} --out {out}" in err[0]


# ---------------------------------------------------------------------------------------------
# Memory


def test_program_that_cannot_fit_is_refused_before_running():
    f = jax.jit(lambda x: jnp.outer(x, x).sum())  # 1000 x 1000 floats of temporaries
    with pytest.raises(InsufficientMemoryError, match=r"needs about .* available on"):
        compile_checked(f, jnp.ones(1000), what="test", available=100_000)
    big = jax.jit(lambda x: jnp.zeros((1000, 1000)) + x)  # refused from its output shapes
    with pytest.raises(InsufficientMemoryError, match="its outputs alone"):
        compile_checked(big, 1.0, what="test", available=100_000)
    compile_checked(f, jnp.ones(1000), what="test", available=10**9)  # fits


def test_huge_num_envs_fails_fast(tmp_path, capsys):
    out = tmp_path / "run"
    t0 = time.time()
    argv = ["train-llc", "--experiment", TINY, "--out", str(out),
            "--set", "llc.num_envs=100000000"]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not enough memory for stage 1" in err[0], err
    assert "GB available" in err[0]
    assert time.time() - t0 < 120
    assert not os.path.exists(out / "llc" / "ckpt")


# ---------------------------------------------------------------------------------------------
# Ctrl-C


def test_ctrl_c_says_where_and_how_to_resume(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "refine_dp_jax.cli", "train-llc", "--experiment", TINY,
           "--out", str(out), "--set", "llc.iterations=100000", "ckpt_every=1"]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    log = open(tmp_path / "stderr.txt", "w+")  # a file, not a pipe that could fill up
    # pytest-xdist's workers ignore SIGINT, and an ignored signal stays ignored across exec:
    # give the child the default disposition, as a process started from a terminal has.
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    ckpt = out / "llc" / "ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_dir() and any((ckpt / d / "manifest.json").exists() for d in os.listdir(ckpt)):
            break
        time.sleep(0.2)
    assert proc.poll() is None, open(log.name).read()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    err = open(log.name).read()
    assert proc.returncode == 130, err
    lines = [x for x in err.splitlines() if x.startswith("refine-dp:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "interrupted in stage llc (last checkpoint: iteration" in lines[0]
    assert f"resume with: refine-dp train-llc --experiment {TINY} --out {out}" in lines[0]


def test_metrics_reach_weights_and_biases_offline(tmp_path, monkeypatch):
    """REFINE_DP_WANDB=offline: each logged metric is in the stage's offline W&B run file
    (keys and JSON values are stored as text in its history records); a bad mode or a missing
    wandb is a clear error, and the default logs nothing to W&B."""
    from refine_dp_jax.errors import ConfigError
    from refine_dp_jax.logs import MetricsLogger

    stage = tmp_path / "run" / "llc"
    monkeypatch.setenv("REFINE_DP_WANDB", "bogus")
    with pytest.raises(ConfigError, match="online, offline or off"):
        MetricsLogger(str(stage))
    monkeypatch.delenv("REFINE_DP_WANDB")
    log = MetricsLogger(str(stage))
    log.log(0, {"loss": 1.0})
    log.close()
    assert not (stage / "wandb").exists()

    wandb = pytest.importorskip("wandb")  # noqa: F841  (the optional extra)
    monkeypatch.setenv("REFINE_DP_WANDB", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    stage = tmp_path / "run2" / "llc"
    log = MetricsLogger(str(stage))
    log.log(0, {"loss": 0.123456789, "success_rate": 0.987654321})
    log.log(1, {"loss": 0.0624999, "success_rate": float("nan")})  # non-finite: not sent
    log.close()
    files = list((stage / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    data = files[0].read_bytes()
    for text in (b"loss", b"success_rate", b"0.123456789", b"0.987654321", b"0.0624999"):
        assert text in data, text
    assert b"NaN" not in data
