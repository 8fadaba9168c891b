"""Loader of an exported hierarchical policy (``refine-dp export``): needs json, hashlib, numpy
and jax only, not this package, so it is also copied next to the artifacts as
``load_policy.py``. Usage::

    import load_policy                      # or: from refine_dp_jax import exported
    policy = load_policy.load("RUN/export/finetune_joint")
    commands = policy.plan(history, seed=0)  # [B, To, Ds] raw DP observations -> [B, Ta, Dc]
    action = policy.act(llc_observation)     # [B, Do] -> [B, Da]

``plan`` samples the diffusion policy deterministically (no noise after the initial one, drawn
from ``seed``) and maps its chunk to command units; ``act`` is the LLC's deterministic action
(input normalization inside). ``policy.spec`` (policy.json) gives the rates (run ``act`` every
``dt`` s, hold each command ``hold`` LLC steps, execute the first ``exec_steps`` commands of a
chunk, then plan again from the last ``obs_history`` DP observations), the command bounds and
per-LLC-step rate limit, and the robot's joint and actuator order.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

FORMAT = "refine_dp_jax.exported/1"
FILES = ("dp.jaxexport", "llc.jaxexport")


class ExportError(ValueError):
    """An export directory that is missing, corrupt or does not fit the inputs given."""


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class ExportedPolicy:
    def __init__(self, directory: str):
        from jax import export

        spec_path = os.path.join(directory, "policy.json")
        try:
            with open(spec_path) as f:
                spec = json.load(f)
        except (OSError, ValueError) as e:
            raise ExportError(f"{spec_path}: not a readable policy.json ({e})") from None
        if spec.get("format") != FORMAT:
            raise ExportError(f"{spec_path}: format {spec.get('format')!r}, expected {FORMAT!r}")
        fns = {}
        for name in FILES:
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                raise ExportError(f"{path} is missing")
            if sha256(path) != spec["sha256"][name]:
                raise ExportError(f"{path}: checksum does not match policy.json (corrupt file)")
            with open(path, "rb") as f:
                fns[name] = export.deserialize(bytearray(f.read()))
        self.spec = spec
        self._dp, self._llc = fns["dp.jaxexport"], fns["llc.jaxexport"]

    @property
    def dp_function(self):
        """The DP's ``jax.export.Exported`` (``.call(history, key)`` inside a jit, any batch;
        no vmap: batch the inputs instead)."""
        return self._dp

    @property
    def llc_function(self):
        """The LLC's ``jax.export.Exported`` (``.call(observation)``, as ``dp_function``)."""
        return self._llc

    def _check(self, x, shape: list[int], what: str) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if x.ndim != len(shape) + 1 or list(x.shape[1:]) != shape:
            raise ExportError(f"{what}: expected shape [B, {', '.join(map(str, shape))}], "
                              f"got {list(x.shape)}")  # fmt: skip
        return x

    def plan(self, history, seed: int = 0) -> np.ndarray:
        """[B, To, Ds] raw DP observations (oldest first) -> [B, Ta, Dc] commands."""
        s = self.spec
        hist = self._check(history, [s["obs_history"], s["dp_observation_size"]], "history")
        key = np.array([0, seed], np.uint32)
        return np.asarray(self._dp.call(hist, key))

    def act(self, observation) -> np.ndarray:
        """[B, Do] LLC observations -> [B, Da] actions."""
        obs = self._check(observation, [self.spec["observation_size"]], "observation")
        return np.asarray(self._llc.call(obs))


def load(directory: str) -> ExportedPolicy:
    return ExportedPolicy(directory)
