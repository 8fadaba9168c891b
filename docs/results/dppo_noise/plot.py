"""Draws training_success.json (stochastic success of the episodes that ended in each DPPO
iteration) as success.png: python docs/results/dppo_noise/plot.py"""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from refine_dp_jax.logs import label_axes, save_figure  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
data = json.load(open(os.path.join(here, "training_success.json")))
fig, axes = plt.subplots(1, len(data), figsize=(6.5 * len(data), 4), squeeze=False)
for ax, (task, runs) in zip(axes[0], data.items(), strict=True):
    for name, ys in runs.items():
        # iterations 1-2 count only the few episodes short enough to end in them: left out
        ax.plot(range(3, len(ys) + 1), ys[2:], label=name, lw=1.4)
    ax.set_title(f"{task}: DPPO training success (stochastic)", fontsize=10)
    label_axes(ax, "DPPO iteration", "success of episodes ended", (0, 1))
save_figure(fig, os.path.join(here, "success.png"))
