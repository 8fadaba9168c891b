"""Named, fully specified experiments. ``get(name)`` returns an ``ExperimentConfig``; the CLI's
``--set key=value`` overrides any (dotted) field of it."""

from __future__ import annotations

from collections.abc import Callable

from refine_dp_jax.pipeline import ExperimentConfig

_EXPERIMENTS: dict[str, Callable[[], ExperimentConfig]] = {}


def register(name: str):
    def deco(fn):
        _EXPERIMENTS[name] = fn
        return fn

    return deco


def names() -> list[str]:
    return sorted(_EXPERIMENTS)


def get(name: str) -> ExperimentConfig:
    if name not in _EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(names())}")
    return _EXPERIMENTS[name]()


from experiments import humanoid, point_reach, testbed  # noqa: E402,F401  (registers experiments)
