"""The one-command GPU script (experiments/gpu_llc.py) on its CPU path at toy sizes: the
throughput rows name the device, the training stops at its wall budget with a checkpoint,
what was trained is evaluated on the walking measures and stored as a loadable LLC.

``make test`` runs the bench phase (point_reach physics and fused step: cheap compiles); the
training phase compiles the humanoid's LLC PPO step and evaluation (~5 CPU-minutes) and runs
in ``make test-all`` (marked slow)."""

import json
import os

import pytest

import experiments
from experiments import gpu_llc
from refine_dp_jax import pipeline
from refine_dp_jax.errors import ConfigError
from refine_dp_jax.policy_store import load_llc


def test_gpu_llc_bench_phase_writes_rows_that_name_the_device(tmp_path):
    out = str(tmp_path / "gpu")
    with pytest.raises(ConfigError, match="--minutes"):
        gpu_llc.main(["--out", out, "--minutes", "0"])
    args = ["--out", out, "--phase", "bench", "--experiment", "humanoid_llc_walk_tiny",
            "--bench-envs", "4", "--bench-reps", "1", "--dppo-experiment", "point_reach_tiny",
            "--physics-env", "point_reach"]  # fmt: skip
    result = gpu_llc.main(args)
    rows = [json.loads(line) for line in open(os.path.join(out, "bench.jsonl"))]
    assert rows == json.loads(json.dumps(result["bench"]))
    assert [(r["benchmark"], r["batch"]) for r in rows] == [("physics_limit", 4), ("dppo_step", 4)]
    dev = json.load(open(os.path.join(out, "device.json")))
    assert all(r["device_kind"] == dev["device_kind"] and r["steps_per_s"] > 0 for r in rows)
    assert all(r["compile_s"] > 0 for r in rows)
    assert "train" not in result and not os.path.exists(os.path.join(out, "run"))


@pytest.mark.slow
def test_gpu_llc_script_benches_trains_to_its_budget_evaluates_and_exports(tmp_path):
    out = str(tmp_path / "gpu")
    # 0.01 minutes: the budget has passed when the first iteration ends (compile included)
    args = ["--out", out, "--experiment", "humanoid_llc_walk_tiny", "--envs", "4",
            "--bench-envs", "4", "--bench-reps", "1", "--dppo-experiment", "testbed_tiny",
            "--physics-env", "testbed_pick_place",
            "--minutes", "0.01", "--video-episodes", "0"]  # fmt: skip
    result = gpu_llc.main(args)
    rows = [json.loads(line) for line in open(os.path.join(out, "bench.jsonl"))]
    # physics and the fused DPPO step (testbed: cheap compiles), then the LLC PPO throughput
    # of the training iterations themselves (the humanoid)
    assert [r["benchmark"] for r in rows] == ["physics_limit", "dppo_step", "llc_ppo"]
    assert rows[-1]["env"] == "humanoid_llc" and rows[-1]["batch"] == 4
    assert all(r["device_kind"] and r["steps_per_s"] > 0 and r["compile_s"] > 0 for r in rows)
    train = result["train"]
    # stopped by the budget after one iteration, with a checkpoint, not marked done
    assert train["finished"] is False and train["iterations_done"] == 1, train
    assert not os.path.exists(os.path.join(out, "run", "llc", "done.json"))
    ev = json.load(open(os.path.join(out, "run", "llc", "eval.json")))
    assert ev["llc_state"]["iterations_done"] == 1
    m = ev["llc"]
    for k in ("fall_rate", "foot_err_moving_median", "vel_err_moving_median", "progress_ratio"):
        assert k in m, (k, m)
    assert 0.0 <= m["fall_rate"] <= 1.0 and m["foot_err_moving_median"] > 0
    rows = [json.loads(line) for line in open(os.path.join(out, "run", "llc", "metrics.jsonl"))]
    assert {"speed_scale", "fall_rate", "foot_err_moving", "progress_ratio"} <= set(rows[0])
    # the stored LLC loads (its checks: robot, interface, networks) and says what it is
    parts = pipeline.build(experiments.get("humanoid_llc_walk_tiny"))
    load_llc(os.path.join(out, "export"), parts)
    card = json.load(open(os.path.join(out, "export", "llc.json")))
    assert card["finished"] is False and card["iterations_done"] == 1
    assert card["speed_scale"] == train["speed_scale"] > 0
    assert "video" in json.load(open(os.path.join(out, "summary.json")))


def test_llc_curves_compare_the_first_and_last_tenth(tmp_path):
    """experiments/llc_curves.py: falls per robot-minute from terminations per env and
    iteration, first and last 10 % means, the markdown table and the figure."""
    from experiments import llc_curves

    rows = [{"iteration": i, "terminations": 0.1 if i < 10 else 0.05, "foot_err_moving": 0.03,
             "moving_share": 0.8, "reward": float(i)} for i in range(100)]  # fmt: skip
    llc = tmp_path / "run" / "llc"
    llc.mkdir(parents=True)
    (llc / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"config": {"env": "humanoid_llc", "env_overrides": [], "llc": {"rollout_steps": 30}}}
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))
    s = llc_curves.main([str(llc), "--out", str(tmp_path / "out")])
    assert s["window"] == 10 and s["iterations"] == 100
    minutes = 30 * 0.02 / 60  # 30 LLC steps of 20 ms per iteration
    assert s["falls_per_min"]["first"] == pytest.approx(0.1 / minutes)
    assert s["falls_per_min"]["last"] == pytest.approx(0.05 / minutes)
    assert s["reward"] == {"first": pytest.approx(4.5), "last": pytest.approx(94.5)}
    md = (tmp_path / "out" / "first_last.md").read_text()
    assert "| falls per robot-minute | 10 | 5 | -50 % |" in md
    assert (tmp_path / "out" / "curves.png").stat().st_size > 10_000
    assert s["foot_err_moving"]["last"] == pytest.approx(0.03)
    # a standing LLC's run (no moving command): no walking measures
    standing = [{**r, "moving_share": 0.0, "foot_err_moving": 0.0} for r in rows]
    (llc / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in standing))
    s = llc_curves.main([str(llc), "--out", str(tmp_path / "out2")])
    assert "foot_err_moving" not in s and "falls_per_min" in s
