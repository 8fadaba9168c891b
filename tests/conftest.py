"""Test setup: persistent XLA compilation cache, CPU only, deterministic float32."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
from refine_dp_jax.gl import choose_gl_backend  # noqa: E402

choose_gl_backend()  # osmesa where libosmesa6 is installed; import mujoco fails otherwise

import jax  # noqa: E402

_CACHE = os.environ.get(
    "REFINE_DP_JAX_CACHE", os.path.join(os.path.dirname(__file__), "..", ".jax_cache")
)
jax.config.update("jax_compilation_cache_dir", os.path.abspath(_CACHE))
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
