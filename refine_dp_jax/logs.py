"""Host-side metrics: JSON lines, TensorBoard event files, PNG learning curves and, optionally,
Weights & Biases (``REFINE_DP_WANDB=online`` or ``offline``, with ``pip install wandb``)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np


def write_json(path: str, obj: Any, fsync: bool = False, default=None) -> None:
    """Writes ``obj`` as indented JSON to ``path`` atomically: a temporary file beside it, then
    a rename, so that a killed process leaves the old file or the new one, never half of one.
    ``fsync``: flush the data to disk before the rename (manifests that vouch for other files).
    ``default``: as ``json.dump``'s (e.g. ``str`` for values JSON has no type for)."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, default=default)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    except BaseException:  # e.g. an object JSON cannot write: the old file stays, no debris
        os.remove(tmp)
        raise
    os.replace(tmp, path)


def to_floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in metrics.items()}


class MetricsLogger:
    """Appends one JSON line per iteration to ``metrics.jsonl`` (resume-safe: lines of
    iterations at or past a resumed step are dropped first) and mirrors it to TensorBoard."""

    def __init__(self, directory: str, resume_from: int = 0):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.path = os.path.join(directory, "metrics.jsonl")
        if os.path.exists(self.path):  # drop what a killed run logged after its last checkpoint
            rows = [r for r in read_jsonl(self.path) if r.get("iteration", 0) < resume_from]
            with open(self.path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(os.path.join(directory, "tb"))
        self._wandb = wandb_run(directory)

    def log(self, iteration: int, metrics: dict[str, Any]) -> dict[str, float]:
        row = {"iteration": iteration, **to_floats(metrics)}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        finite = {k: v for k, v in row.items() if k != "iteration" and math.isfinite(v)}
        for k, v in finite.items():
            self._tb.add_scalar(k, v, iteration)
        if self._wandb is not None:
            self._wandb.log(finite, step=iteration)
        return row

    def close(self, plot_keys: list[str] | None = None, title: str = "") -> None:
        self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        rows = read_jsonl(self.path)
        if rows:
            plot_curves(rows, plot_keys, os.path.join(self.directory, "curves.png"), title)


WANDB_ENV = "REFINE_DP_WANDB"


def wandb_run(directory: str):
    """A Weights & Biases run for a stage's metrics when ``REFINE_DP_WANDB`` is ``online`` or
    ``offline`` (unset, empty or ``off``: None). One W&B run per stage directory: name
    ``<run dir>/<stage>``, grouped by run directory, a stable id so that a resumed stage
    continues its run (W&B ignores steps at or below ones it has, i.e. those a resumed stage
    repeats), the run's config.json as its config. Project: ``WANDB_PROJECT`` or
    ``refine_dp_jax``; files under the stage directory (``wandb/``)."""
    mode = os.environ.get(WANDB_ENV, "").strip().lower()
    if mode in ("", "off"):
        return None
    from refine_dp_jax.errors import ConfigError

    if mode not in ("online", "offline"):
        raise ConfigError(f"{WANDB_ENV}={mode!r}: expected online, offline or off")
    try:
        import wandb
    except ImportError:
        msg = f"{WANDB_ENV}={mode} but wandb is not installed (pip install wandb)"
        raise ConfigError(msg) from None
    import hashlib

    stage_dir = os.path.abspath(directory)
    run_dir = os.path.dirname(stage_dir)
    config = {}
    if os.path.exists(os.path.join(run_dir, "config.json")):
        with open(os.path.join(run_dir, "config.json")) as f:
            config = json.load(f)
    name = f"{os.path.basename(run_dir)}/{os.path.basename(stage_dir)}"
    run_id = "rdp-" + hashlib.sha1(stage_dir.encode()).hexdigest()[:16]
    return wandb.init(
        project=os.environ.get("WANDB_PROJECT", "refine_dp_jax"), name=name,
        group=os.path.basename(run_dir), id=run_id,
        resume="allow", mode=mode, dir=stage_dir, config=config,
    )  # fmt: skip


def read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(rows: list[dict], keys: list[str] | None, path: str, title: str = "",
                labels: dict[str, str] | None = None, columns: int = 3,
                smooth: bool = False) -> None:  # fmt: skip
    """One panel per metric against the iteration (titled by ``labels`` where given);
    ``smooth``: the raw curve faint, with a moving mean over ~4 % of the run on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = keys or [k for k in rows[0] if k != "iteration"][:6]
    keys = [k for k in keys if any(k in r for r in rows)]
    if not keys:
        return
    cols = min(columns, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.8 * nrows), squeeze=False)
    for ax, k in zip(axes.ravel(), keys, strict=False):
        it = np.array([r["iteration"] for r in rows if k in r])
        y = np.array([r[k] for r in rows if k in r], float)
        ax.plot(it, y, **({"lw": 0.6, "alpha": 0.5} if smooth else {}))
        if smooth and len(y) >= 25:
            n = len(y) // 25
            ax.plot(it[n - 1 :], np.convolve(y, np.ones(n) / n, "valid"), lw=1.6)
        ax.set_title((labels or {}).get(k, k), fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(keys) :]:
        ax.axis("off")
    fig.suptitle(title)
    save_figure(fig, path)


def label_axes(ax, xlabel: str, ylabel: str, ylim: tuple[float, float] | None = None) -> None:
    """The axis labels, limits, grid and legend every result plot here uses."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def save_figure(fig, path: str) -> None:
    """Tight layout, written at 90 dpi, closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
