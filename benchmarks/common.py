"""Shared benchmark plumbing: AOT compile timing and the JSON-lines results file."""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import time
import uuid
from typing import Any

import jax

RESULTS = os.path.join(os.path.dirname(__file__), "results.jsonl")
RUN_ID = os.environ.get("BENCH_RUN_ID", uuid.uuid4().hex[:12])


def git_rev() -> str:
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], cwd=os.path.dirname(__file__), text=True,
            stderr=subprocess.DEVNULL,
        ).strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@functools.cache
def host_cpu() -> str:
    """The host's CPU model and the cores this process may use, e.g. "Intel(R) Xeon(R)
    Processor, 2 cores": CPU figures from different sessions' machines are not comparable.
    Read once per process (every result row carries it)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(x.split(":", 1)[1].strip() for x in f if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores"


def timed_compile(fn, *args) -> tuple[Any, float]:
    """Ahead-of-time compile of jit(fn) for ``args``; returns (compiled, seconds)."""
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t


def append_result(benchmark: str, **fields: Any) -> dict:
    """Appends one JSON line with the run's context (device, versions, git revision, run id)."""
    import mujoco

    dev = jax.devices()[0]
    row = {
        "benchmark": benchmark,
        **fields,
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "platform": dev.platform,
        "host_cpu": host_cpu(),
        "jax": jax.__version__,
        "mujoco": mujoco.__version__,
        "python": platform.python_version(),
        "git_rev": git_rev(),
        "run_id": RUN_ID,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with open(RESULTS, "a") as f:
        f.write(json.dumps(row) + "\n")
    return row
