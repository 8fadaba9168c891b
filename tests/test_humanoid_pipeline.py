"""The testbed's pipeline on every humanoid task with only a config change
(``experiments/humanoid.py``: ``testbed_tiny`` with ``env`` = the task, 1 s episodes and
reference-controller demonstrations). Every stage runs; summary.json is complete and finite.

Cost: each task compiles its own programs (LLC PPO step, demo collection, joint fine-tuning
step, MLP-PPO step, two evaluations, resets), each containing the humanoid's ``mjx.step``:
this file is the most expensive in the suite (see docs/humanoid.md for the measured time).
"""

import json
import math
import os

import pytest

import experiments
from refine_dp_jax import pipeline
from refine_dp_jax.data.demos import load_demos

# All four tasks share HumanoidEnv and differ in scene and task spec only; box_pickup always
# runs, the other three carry the ``slow`` marker (each costs minutes of XLA compilation on one
# CPU core; ``pytest -m "not slow"`` leaves them out).
TASKS = [
    "box_pickup",
    pytest.param("pick_place", marks=pytest.mark.slow),
    pytest.param("door", marks=pytest.mark.slow),
    pytest.param("platform", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("task", TASKS)
def test_pipeline_runs_every_stage_on_humanoid(task, tmp_path):
    cfg = experiments.get(f"humanoid_{task}_tiny")
    assert cfg.env == f"humanoid_{task}"
    out = str(tmp_path / task)
    summary = pipeline.run_pipeline(cfg, out)

    stages = [s for s in pipeline.STAGES if cfg.run_dp_only or s != "finetune_dp"]
    assert summary["stages_done"] == stages
    for stage in stages:
        assert os.path.exists(os.path.join(out, stage, "done.json")), stage
    for stage in ("llc", "finetune_joint", "mlp_ppo"):
        rows = [json.loads(x) for x in open(os.path.join(out, stage, "metrics.jsonl"))]
        assert rows and all(math.isfinite(v) for r in rows for v in r.values()), stage
    for key in ("success_rate_pretrained", "success_rate_joint", "success_rate_mlp_ppo"):
        assert 0.0 <= summary[key] <= 1.0, key
    for key in ("completion_time_s", "hand_err"):
        assert summary[key] and all(math.isfinite(v) for v in summary[key].values()), key
    assert summary["env_steps"] > 0 and math.isfinite(summary["wall_seconds"])
    assert summary["demonstrations"] == cfg.demos.num_episodes
    assert 0.0 <= summary["demo_collection_success_rate"] <= 1.0
    demos = load_demos(os.path.join(out, "demos"))
    assert demos.meta["env"] == cfg.env and demos.meta["keep_failed"] is True
    assert demos.obs.shape[2] == 34 and demos.commands.shape[2] == 17
    saved = json.load(open(os.path.join(out, "config.json")))["config"]
    assert saved["env"] == cfg.env and saved["env_overrides"] == [["episode_seconds", 1.0]]
