"""Test setup: persistent XLA compilation cache, CPU only, deterministic float32."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
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
    """The whole pipeline at toy sizes, run once per session (its stages are reused)."""
    from refine_dp_jax import pipeline

    out = str(tmp_path_factory.mktemp("tiny_run"))
    summary = pipeline.run_pipeline(tiny_cfg, out)
    return out, summary


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Work units for ``pytest -n 2 --dist loadgroup`` (see the Makefile): a unit runs on one
    worker, so a fixture it shares is built (compiled) once. Every test that uses the tiny
    pipeline run is one unit; a test marked ``per_param("name")`` is one unit per value of
    that parameter (``test_envs.py``: one per environment); anything else is one unit per
    module (pytest-xdist's ``loadfile``). The tiny-run unit is the longest (the pipeline,
    the resume tests and the sweep test, about a third of the suite), so it goes first: with
    ``--no-loadscope-reorder`` (the Makefile) xdist hands units out in the order of their
    first test; by default it sorts them by test count, and the tiny run then ran alone last."""
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        group = item.module.__name__
        spec = getattr(item, "callspec", None)
        mark = item.get_closest_marker("per_param")
        if "tiny_run" in item.fixturenames:
            group = "tiny_run"
        elif spec is not None and mark is not None and mark.args[0] in spec.params:
            group = f"{group}[{spec.params[mark.args[0]]}]"
        item.add_marker(pytest.mark.xdist_group(group))


class _TinyRunFirst:
    @pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture parameters
    def pytest_collection_modifyitems(self, items):
        items.sort(key=lambda item: "tiny_run" not in item.fixturenames)  # stable


def pytest_configure(config):
    config.pluginmanager.register(_TinyRunFirst(), "tiny_run_first")
