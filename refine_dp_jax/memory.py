"""Refuse, before running it, a compiled program that cannot fit in memory.

``compile_checked(jitted, *args, what=...)`` lowers ``jitted`` for ``args`` and refuses it when
its outputs alone cannot fit (before compiling); then compiles it (the compilation is cached,
so the next ``jitted(*args)`` reuses it) and compares XLA's memory analysis of the program
(outputs + temporaries - donated inputs + code; the inputs already exist) with the memory
still available: ``device.memory_stats()`` on accelerators, on CPU the smaller of
``/proc/meminfo``'s MemAvailable and the cgroup limit. When it does not fit it raises
``InsufficientMemoryError`` with both numbers. ``REFINE_DP_JAX_NO_MEMCHECK=1`` turns the
check off (for a platform whose estimate is wrong).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from refine_dp_jax.errors import InsufficientMemoryError


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n < 1e12 else f"{n / 1e12:.2f} TB"


def tree_bytes(tree: Any) -> int:
    """Bytes of the arrays (or ``ShapeDtypeStruct``s) of a pytree."""
    return int(sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree) if hasattr(x, "shape")))  # fmt: skip


def _cgroup_free() -> int | None:
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as f:
            return int(limit) - int(f.read().strip())
    except (OSError, ValueError):
        return None


def available_bytes(device: Any = None) -> int | None:
    """Memory still free for ``device`` (default: the first local device); None if unknown."""
    device = device or jax.local_devices()[0]
    if device.platform != "cpu":
        try:
            stats = device.memory_stats() or {}
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        except (KeyError, TypeError, RuntimeError):
            return None
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    cg = _cgroup_free()
    return cg if free is None else (free if cg is None else min(free, cg))


def check_fits(need: int, what: str, breakdown: str = "", hint: str = "",
               available: int | None = None) -> None:  # fmt: skip
    """Raises ``InsufficientMemoryError`` when ``need`` bytes exceed the available memory."""
    if os.environ.get("REFINE_DP_JAX_NO_MEMCHECK") == "1":
        return
    have = available_bytes() if available is None else available
    if have is None or need <= have:
        return
    device = jax.local_devices()[0].platform
    raise InsufficientMemoryError(
        f"not enough memory for {what}: needs about {_gb(need)}{breakdown}, "
        f"{_gb(have)} available on {device}"
        + (f"; {hint}" if hint else "")
        + " (REFINE_DP_JAX_NO_MEMCHECK=1 skips this check)"
    )


def compiled_need(compiled: Any) -> tuple[int, str] | None:
    """(bytes beyond the existing inputs, breakdown text) from XLA's memory analysis."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if m is None:
        return None
    out = int(m.output_size_in_bytes) - int(m.alias_size_in_bytes)
    temp, code = int(m.temp_size_in_bytes), int(m.generated_code_size_in_bytes)
    return out + temp + code, f" (outputs {_gb(out)}, temporaries {_gb(temp)})"


def compile_checked(jitted: Any, *args: Any, what: str, hint: str = "",
                    available: int | None = None) -> Any:  # fmt: skip
    """Compiles ``jitted`` for ``args``, refuses it if it cannot fit; returns the executable.
    Calling ``jitted(*args)`` afterwards reuses this compilation."""
    lowered = jitted.lower(*args)
    # First from the output shapes alone (no compilation: XLA may take minutes to compile a
    # program with absurd shapes), then from the compiled program's own analysis.
    donated = sum(tree_bytes(a) for a in jax.tree.leaves(lowered.args_info) if a.donated)
    outputs = tree_bytes(lowered.out_info)
    check_fits(outputs - donated, what, " (its outputs alone)", hint,
               available)  # fmt: skip
    compiled = lowered.compile()
    need = compiled_need(compiled)
    if need is not None:
        check_fits(need[0], what, need[1], hint, available)
    return compiled
