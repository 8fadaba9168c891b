"""The testbed's pipeline on every humanoid task with only a config change
(``experiments/humanoid.py``: ``testbed_tiny`` with ``env`` = the task, 1 s episodes and
reference-controller demonstrations). Every stage runs through the CLI, as a user runs it;
summary.json is complete and finite.

Cost: each task compiles its own programs (LLC PPO step, demo collection, joint fine-tuning
step, MLP-PPO step, two evaluations, resets), each containing the humanoid's ``mjx.step``:
10-18 minutes of one CPU core per task, nearly all of it XLA compilation (measured in
docs/humanoid.md). XLA's fast-compile flags (backend optimization level 0) did not shorten the
whole run (box pickup alone on a core: 671 s with them, 588 s in an earlier run without), so
none are set. Each task is its own xdist work unit (``per_param``), so the four spread over
the workers.
"""

import json
import math
import os
import subprocess
import sys

import pytest

import experiments
from refine_dp_jax import pipeline
from refine_dp_jax.data.demos import load_demos

# Each task costs 10-18 minutes of one CPU core (compilation of its own programs, see
# docs/humanoid.md): the four are marked ``slow``, left out of `make test` (CI's 20-minute
# budget) and run by `make test-all`.
TASKS = ["box_pickup", "pick_place", "door", "platform"]


def _run_cli(args, tmp_path):
    """The CLI in a subprocess; it inherits conftest's environment (shared compilation cache,
    no progress bars)."""
    code = "import sys; from refine_dp_jax.cli import main; main(sys.argv[1:])"
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path,
                       capture_output=True, text=True, timeout=3000)  # fmt: skip
    assert r.returncode == 0, f"refine-dp {' '.join(args)} failed:\n{r.stderr[-4000:]}"
    return r


@pytest.mark.slow
@pytest.mark.per_param("task")
@pytest.mark.parametrize("task", TASKS)
def test_pipeline_runs_every_stage_on_humanoid(task, tmp_path):
    name = f"humanoid_{task}_tiny"
    cfg = experiments.get(name)
    assert cfg.env == f"humanoid_{task}"
    out = str(tmp_path / task)
    _run_cli(["pipeline", "--experiment", name, "--out", out], tmp_path)
    summary = json.load(open(os.path.join(out, "summary.json")))

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
