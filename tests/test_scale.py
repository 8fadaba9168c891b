"""Scale: a sharded run equals the single-device run; a sweep member equals its single run."""

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from refine_dp_jax import pipeline
from refine_dp_jax.config import ConfigError
from refine_dp_jax.sweep import member_config, run_sweep, sweep_members

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHARDED_SCRIPT = r"""
import os, sys, tempfile
flags = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = flags + " --xla_force_host_platform_device_count=4"
os.environ["REFINE_DP_JAX_NO_BAR"] = "1"
import jax, numpy as np
import experiments
from refine_dp_jax import pipeline
from refine_dp_jax.train.llc import make_llc_train
from refine_dp_jax.train.loop import run_loop
from refine_dp_jax.train.sharding import make_mesh
assert jax.device_count() == 4
cfg = experiments.get("point_reach_tiny")
parts = pipeline.build(cfg)
init, step, _ = make_llc_train(parts.env, cfg.llc)
out = {}
for name, mesh in (("single", None), ("sharded", make_mesh())):
    st, _ = run_loop(tempfile.mkdtemp(), jax.jit(init)(jax.random.PRNGKey(0)), step, 2, 10,
                     name, mesh=mesh)
    out[name] = st
spec = jax.tree.leaves(out["sharded"].env_state.data)[1].sharding.spec
assert tuple(spec) == ("env",), spec
a, b = (jax.tree.leaves(out[k].learner) for k in ("single", "sharded"))
err = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))
print("MAXERR", err)
"""


def test_sharded_run_matches_single_device():
    """4 forced host devices: environments split over a mesh vs all on one device, same batch."""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")  # conftest's XLA_FLAGS
    res = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    err = float(res.stdout.split("MAXERR")[1].split()[0])
    assert err < 1e-5


def test_sweep_members_order_and_validation():
    members = sweep_members([0, 1], {"actor_lr": [1e-4, 3e-4]})
    assert members == [(0, {"actor_lr": 1e-4}), (0, {"actor_lr": 3e-4}),
                       (1, {"actor_lr": 1e-4}), (1, {"actor_lr": 3e-4})]  # fmt: skip
    with pytest.raises(ConfigError, match="only"):
        sweep_members([0], {"epochs": [1, 2]})


def test_sweep_groups_members_by_grid_point_across_seeds():
    from refine_dp_jax.sweep import group_members

    members = sweep_members([0, 1, 2], {"actor_lr": [1e-4, 3e-4]})
    final = [0.5, 0.9, 0.7, 0.8, 0.6, 1.0]  # members alternate lr 1e-4, 3e-4
    curves = [[0.1 * i, 0.2 * i] for i in range(6)]
    groups = group_members(members, final, curves)
    assert [g["values"] for g in groups] == [{"actor_lr": 1e-4}, {"actor_lr": 3e-4}]
    for g, idx in zip(groups, ([0, 2, 4], [1, 3, 5]), strict=True):
        ev = np.array([final[i] for i in idx])
        assert g["seeds"] == [0, 1, 2] and g["eval_success_rate"] == ev.tolist()
        assert g["mean"] == pytest.approx(ev.mean())
        assert g["std"] == pytest.approx(np.sqrt(np.sum((ev - ev.mean()) ** 2) / 2))
        cv = np.array([curves[i] for i in idx])
        assert g["curve_mean"] == pytest.approx(cv.mean(0).tolist())
        assert g["curve_std"] == pytest.approx(cv.std(0, ddof=1).tolist())
    one = group_members(sweep_members([3], {}), [0.25], [[0.5]])
    assert one[0]["values"] == {} and one[0]["std"] == 0.0 and one[0]["mean"] == 0.25


@pytest.mark.tiny_run_late
def test_sweep_member_equals_single_run(tiny_run, tiny_cfg, tmp_path):
    """Two members (one seed, two actor learning rates) of a DP-only sweep: each is the single
    run with its values. DP-only, so that the vmapped program is the small one; the joint step
    differs from it only by the LLC update, which the resume test of finetune_joint covers."""
    out, _ = tiny_run
    # Three iterations (testbed_tiny's): two of critic warm-up, then the actor moves.
    assert tiny_cfg.finetune.iterations == 3 and tiny_cfg.dppo.critic_warmup_iters == 2
    sweep_dir, single_dir = str(tmp_path / "sweep"), str(tmp_path / "single")
    for d in (sweep_dir, single_dir):
        for stage in ("llc", "demos", "dp"):
            shutil.copytree(os.path.join(out, stage), os.path.join(d, stage))
    grid = {"actor_lr": [1e-4, 1e-3], "sample_std_floor": [0.1]}
    result = run_sweep(tiny_cfg, sweep_dir, [1], grid, joint=False)
    assert len(result["members"]) == 2
    for name in ("results.json", "results.md", "success.png"):
        assert os.path.exists(os.path.join(sweep_dir, "sweep", name)), name
    assert [g["values"]["actor_lr"] for g in result["grid_points"]] == [1e-4, 1e-3]
    evals = [m["eval_success_rate"] for m in result["members"]]
    assert all(0.0 <= x <= 1.0 for x in evals + [result["pretrained_eval_success_rate"]])
    assert [g["eval_success_rate"] for g in result["grid_points"]] == [[x] for x in evals]
    seed, values = 1, {"actor_lr": 1e-3, "sample_std_floor": 0.1}
    m = [i for i, (s, v) in enumerate(sweep_members([1], grid)) if (s, v) == (seed, values)][0]
    assert m == 1
    cfg_m = member_config(tiny_cfg, seed, values)
    pipeline.stage_finetune(pipeline.build(cfg_m), single_dir, joint=False)
    single = pipeline.load_finetuned(pipeline.build(cfg_m), single_dir, "finetune_dp")
    swept = jax.tree.map(lambda x: x[m], result["state"])
    other = jax.tree.map(lambda x: x[m - 1], result["state"])  # same seed, other actor_lr
    a = jax.tree.leaves(single["planner"].actor)
    b = jax.tree.leaves(swept.planner.actor)
    c = jax.tree.leaves(other.planner.actor)

    def dist(xs, ys):  # mean absolute difference over all actor parameters
        diffs = [np.abs(np.asarray(x) - np.asarray(y)).ravel() for x, y in zip(xs, ys, strict=True)]
        return float(np.concatenate(diffs).mean())

    # vmapped and single programs are not bitwise equal (batched matmuls; Adam turns
    # last-bit gradient differences into O(lr) steps for near-zero gradients), so the member
    # must match its single run far more closely than it matches a member with other values.
    d_same, d_other = dist(a, b), dist(b, c)
    assert d_other > 1e-5, d_other
    assert d_same < 0.5 * d_other, (d_same, d_other)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_together_with_identical_parameters(tmp_path):
    """jax.distributed over 127.0.0.1 (gloo CPU collectives): two processes, one mesh, two
    LLC PPO iterations; both end with the same parameters."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")  # conftest's XLA_FLAGS
    script = os.path.join(ROOT, "tests", "scripts", "multihost_worker.py")
    procs = [
        subprocess.Popen([sys.executable, script, str(i), str(port), str(tmp_path)], env=env,
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    a = np.load(tmp_path / "params_0.npz")
    b = np.load(tmp_path / "params_1.npz")
    assert len(a.files) > 0 and a.files == b.files
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])
    assert "devices 2" in outs[0]
