"""Training: pure step factories (pre-training, DPPO, LLC PPO, joint) and host loops."""
