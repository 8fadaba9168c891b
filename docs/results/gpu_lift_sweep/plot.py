"""Training success per iteration of the two GPU sweeps in this folder (curves.png).

python docs/results/gpu_lift_sweep/plot.py
"""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from refine_dp_jax.logs import label_axes, save_figure  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# member order of both sweeps: (seed 0, lr a), (seed 0, lr b), (seed 1, lr a), (seed 1, lr b)
RUNS = {"metrics_lr1e-4_3e-5.jsonl": (1e-4, 3e-5), "metrics_lr1e-5_3e-6.jsonl": (1e-5, 3e-6)}
COLORS = {1e-4: "#c44e52", 3e-5: "#dd8452", 1e-5: "#4c72b0", 3e-6: "#55a868"}


def main() -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, lrs in RUNS.items():
        with open(os.path.join(HERE, name)) as f:
            rows = [json.loads(line) for line in f]
        it = [r["iteration"] + 1 for r in rows]
        for m in range(4):
            lr, seed = lrs[m % 2], m // 2
            y = [100 * r[f"m{m}/dp/success_rate"] for r in rows]
            ax.plot(it, y, color=COLORS[lr], ls="-" if seed == 0 else "--",
                    label=f"actor lr {lr:g}" if seed == 0 else None)  # fmt: skip
    ax.axvspan(0.5, 2.5, color="#ccc", alpha=0.5, label="critic warm-up (actor frozen)")
    ax.set_title("humanoid_table_lift, DP-only DPPO on an H200 (seed 0 solid, seed 1 dashed)")
    label_axes(ax, "iteration (1024 envs x 8 decisions per member)",
               "training success, stochastic (%)", (0, 65))  # fmt: skip
    save_figure(fig, os.path.join(HERE, "curves.png"))


if __name__ == "__main__":
    main()
