"""Experiments on the humanoid tasks (``refine_dp_jax.envs.humanoid``).

``humanoid_<task>_tiny``: the testbed's toy sizes (``testbed_tiny``) on each of the four
humanoid tasks, with only environment-side changes: 1 s episodes (every stage runs in seconds
once compiled) and demonstrations executed by the env's reference controller with failed
episodes kept (``demos.keep_failed``): the reference controller holds the legs in the default
pose and cannot walk, so no tiny demonstration succeeds. These configs are smoke tests of the
pipeline's plumbing on the humanoid (tests/test_humanoid_pipeline.py), not experiments.
"""

from __future__ import annotations

from experiments import register
from experiments.testbed import testbed_tiny
from refine_dp_jax.config import replace
from refine_dp_jax.pipeline import ExperimentConfig

TASKS = ("box_pickup", "pick_place", "door", "platform")


def humanoid_tiny(task: str) -> ExperimentConfig:
    """``testbed_tiny`` on ``humanoid_<task>`` (see the module docstring)."""
    return replace(
        testbed_tiny(),
        env=f"humanoid_{task}",
        env_overrides=(("episode_seconds", 1.0),),
        **{"demos.executor": "reference", "demos.keep_failed": True},
    )


for _task in TASKS:
    register(f"humanoid_{_task}_tiny")(lambda t=_task: humanoid_tiny(t))
