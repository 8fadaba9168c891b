"""Environments: the pure contract, the registry, and every registered embodiment/task."""

# Importing a task module registers its environments.
from refine_dp_jax.envs import humanoid, point_reach, testbed  # noqa: E402,F401
from refine_dp_jax.envs.base import (
    Env,
    EnvState,
    denormalize_command,
    make,
    names,
    normalize_command,
    register,
)

__all__ = [
    "Env",
    "EnvState",
    "denormalize_command",
    "make",
    "names",
    "normalize_command",
    "register",
]
