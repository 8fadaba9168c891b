"""refine_dp_jax: REFINE-DP (diffusion policy + RL low-level controller, DPPO fine-tuning) in JAX/MJX."""

__version__ = "0.1.0"
