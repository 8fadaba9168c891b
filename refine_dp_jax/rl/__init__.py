"""RL maths: GAE, Gaussian PPO, DPPO, running normalizers. Pure functions."""
