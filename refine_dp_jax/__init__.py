"""refine_dp_jax: REFINE-DP (diffusion planner + RL low-level controller, DPPO) in JAX/MJX."""

__version__ = "0.1.0"
