"""``python -m experiments.dppo_curve`` with DPPO's advantages permuted across each batch's
decisions (the same values, no relation to what the decisions did): the null twin of a
curve. Same arguments as ``experiments.dppo_curve``; run from the repository root::

    PYTHONPATH=. python docs/results/dppo_after_ik/curve_shuffled.py \\
        --experiment humanoid_table_lift --out RUN --iterations 20 --every 10 --episodes 128 \\
        --set dppo.actor_lr=1e-5 --label "actor_lr=1e-5, advantages shuffled" --log LOG
"""

import refine_dp_jax.train.finetune as ft
from docs.results.dppo_noise.adv_probe import shuffle_advantages

_gae = ft.gae


def shuffled_gae(reward, values, next_values, terminated, done, gamma, lam):
    adv, ret = _gae(reward, values, next_values, terminated, done, gamma, lam)
    return shuffle_advantages(adv, reward), ret


ft.gae = shuffled_gae
from experiments.dppo_curve import main  # noqa: E402

main()
