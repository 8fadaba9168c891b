"""Test setup: persistent XLA compilation cache, CPU only, deterministic float32."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite is dominated by XLA compilation of small-shape programs: the backend's cheapest
# optimization cuts its CPU time by ~30 % (measured on a humanoid rollout test: 116 s -> 83 s)
# while the tiny programs run about as fast. REFINE_DP_JAX_TEST_XLA_OPT=1 keeps XLA's default.
if os.environ.get("REFINE_DP_JAX_TEST_XLA_OPT") != "1":
    os.environ["XLA_FLAGS"] = " ".join([
        os.environ.get("XLA_FLAGS", ""),
        "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
    ]).strip()  # fmt: skip
from refine_dp_jax.gl import choose_gl_backend  # noqa: E402

choose_gl_backend()  # osmesa where libosmesa6 is installed; import mujoco fails otherwise

import jax  # noqa: E402

_CACHE = os.environ.get(
    "REFINE_DP_JAX_CACHE", os.path.join(os.path.dirname(__file__), "..", ".jax_cache")
)
os.environ["REFINE_DP_JAX_CACHE"] = _CACHE = os.path.abspath(_CACHE)  # subprocesses share it
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import pytest  # noqa: E402

os.environ["REFINE_DP_JAX_NO_BAR"] = "1"
TINY = "testbed_tiny"  # experiment for pipeline smoke, resume, NaN and sweep tests


@pytest.fixture(scope="session")
def tiny_cfg():
    import experiments

    return experiments.get(TINY)


@pytest.fixture(scope="session")
def tiny_parts(tiny_cfg):
    from refine_dp_jax import pipeline

    return pipeline.build(tiny_cfg)


@pytest.fixture(scope="session")
def tiny_run(tiny_cfg, tmp_path_factory):
    """The whole pipeline at toy sizes, run once per test session (its stages are reused):
    under pytest-xdist, the first worker that needs it runs it into a folder the workers share
    (the other waits on a file lock), and each worker gets its own copy of the finished run."""
    import fcntl
    import json
    import shutil

    from refine_dp_jax import pipeline

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    built = shared / "tiny_run_shared"
    with open(shared / "tiny_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (built / "summary.test.json").exists():
            summary = pipeline.run_pipeline(tiny_cfg, str(built))
            (built / "summary.test.json").write_text(json.dumps(summary, default=str))
    out = tmp_path_factory.mktemp("tiny_run")
    shutil.copytree(built, out, dirs_exist_ok=True)
    return str(out), json.loads((out / "summary.test.json").read_text())


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Work units for ``pytest -n 2 --dist loadgroup`` (see the Makefile): a unit runs on one
    worker, so a fixture it shares is built (compiled) once. Every test that uses the tiny
    pipeline run is one unit; a test marked ``per_param("name")`` is one unit per value of
    that parameter (``test_envs.py``: one per environment); anything else is one unit per
    module (pytest-xdist's ``loadfile``). The tiny-run unit is the longest (the pipeline
    itself), so it goes first: with ``--no-loadscope-reorder`` (the Makefile) xdist hands units
    out in the order of their first test; by default it sorts them by test count, and the tiny
    run then ran alone last. The long tests that reuse the run (resume, sweep, sim-to-sim) are
    marked ``tiny_run_late``: one unit each, handed out last, to whichever worker is free (it
    copies the run the other built), instead of queueing behind the pipeline on one worker."""
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        group = item.module.__name__
        spec = getattr(item, "callspec", None)
        mark = item.get_closest_marker("per_param")
        if item.get_closest_marker("tiny_run_late"):
            group = f"tiny_run_late:{item.name}"
        elif "tiny_run" in item.fixturenames:
            group = "tiny_run"
        elif spec is not None and mark is not None and mark.args[0] in spec.params:
            group = f"{group}[{spec.params[mark.args[0]]}]"
        item.add_marker(pytest.mark.xdist_group(group))


def _order(item) -> int:
    """The tiny run's own unit first, tests marked ``tiny_run_late`` last (by then the run is
    built and the other worker copies it), everything else in between."""
    if item.get_closest_marker("tiny_run_late"):
        return 2
    return 0 if "tiny_run" in item.fixturenames else 1


class _TinyRunFirst:
    @pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture parameters
    def pytest_collection_modifyitems(self, items):
        items.sort(key=_order)  # stable


def pytest_configure(config):
    config.pluginmanager.register(_TinyRunFirst(), "tiny_run_first")
