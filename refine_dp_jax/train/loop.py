"""The host loop around a compiled ``train_step``: resume, progress bar, logging, checkpoints.

Everything stochastic lives in the state (its ``key`` field), so a run resumed from a
checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from refine_dp_jax.checkpoint import Checkpointer
from refine_dp_jax.logs import MetricsLogger
from refine_dp_jax.memory import compile_checked
from refine_dp_jax.train.sharding import make_mesh, shard_state


def all_finite(tree: Any) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def guard_nonfinite(step_fn: Callable) -> Callable:
    """Wraps ``step(state) -> (state, metrics)``: an update that would make any float leaf
    non-finite is dropped (the old state is kept, only the key advances) and counted."""

    def guarded(state):
        new, metrics = step_fn(state)
        ok = all_finite(new)
        kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
        kept = kept.replace(key=new.key)
        return kept, {**metrics, "skipped_nonfinite_update": 1.0 - ok.astype(jnp.float32)}

    return guarded


def run_loop(
    stage_dir: str,
    state: Any,
    step_fn: Callable,
    iterations: int,
    ckpt_every: int,
    desc: str,
    plot_keys: list[str] | None = None,
    postfix_keys: tuple[str, ...] = (),
    stop_after: int | None = None,
    mesh: Any = "auto",
    deadline: float | None = None,
    timing: dict | None = None,
) -> tuple[Any, list[dict]]:
    """Runs ``iterations`` compiled steps from the newest checkpoint in ``stage_dir/ckpt``.

    ``stop_after`` (tests) stops after that many iterations of this call, as a kill would.
    ``mesh``: a ``jax.sharding.Mesh`` to shard the environments over, ``None`` for one device,
    or ``"auto"``: all devices when there are several.
    ``deadline`` (a ``time.time()`` value): stop after the iteration that ends past it, with a
    checkpoint, as a kill would (a rerun resumes); for a lent machine's fixed time.
    ``timing``: a dict to fill with ``compile_s`` and ``iteration_s`` (wall seconds of each
    iteration of this call, the result blocked on).
    Resuming verifies the checkpoint and falls back past bad ones (``Checkpointer.restore_latest``);
    before the first step, the compiled step's memory is checked (``memory.compile_checked``).
    Returns (state, rows logged by this call).
    """
    ck = Checkpointer(os.path.join(stage_dir, "ckpt"))
    latest = ck.restore_latest(state)  # verified; falls back past bad checkpoints
    start = 0
    if latest is not None:
        start, state, _ = latest
    # The state is donated to the step: give every leaf its own buffer first (initial states may
    # alias, e.g. parameters and their EMA copy).
    state = jax.tree.map(lambda x: jnp.array(x, copy=True), state)
    if mesh == "auto":
        mesh = make_mesh() if jax.device_count() > 1 else None
    state, shardings = shard_state(state, mesh)
    main = jax.process_index() == 0
    logger = MetricsLogger(stage_dir, resume_from=start) if main else None
    out_shardings = None if shardings is None else (shardings, None)
    step = jax.jit(guard_nonfinite(step_fn), donate_argnums=0, out_shardings=out_shardings)
    timing = {} if timing is None else timing
    timing.update(compile_s=0.0, iteration_s=[])
    if start < iterations and stop_after != 0:
        # Refuse a step that cannot fit before running it; the jit reuses this compilation.
        t = time.perf_counter()
        compile_checked(step, state, what=desc, hint="use fewer environments or a smaller batch")
        timing["compile_s"] = time.perf_counter() - t
    rows = []
    bar = tqdm(range(start, iterations), initial=start, total=iterations, desc=desc,
               disable=os.environ.get("REFINE_DP_JAX_NO_BAR") == "1")  # fmt: skip
    for done, it in enumerate(bar):
        if stop_after is not None and done >= stop_after:
            break
        t = time.perf_counter()
        state, metrics = step(state)
        metrics = jax.block_until_ready(metrics)
        timing["iteration_s"].append(time.perf_counter() - t)
        if logger is None:
            row = {"iteration": it}
        else:
            row = logger.log(it, metrics)
        rows.append(row)
        bar.set_postfix({k.split("/")[-1]: f"{row[k]:.3g}" for k in postfix_keys if k in row})
        late = deadline is not None and time.time() >= deadline
        if (it + 1) % ckpt_every == 0 or it + 1 == iterations or late:
            ck.save(it + 1, state, {"iteration": it + 1})
        if late:
            break
    bar.close()
    if logger is not None:
        logger.close(plot_keys, desc)
    ck.close()
    return state, rows
