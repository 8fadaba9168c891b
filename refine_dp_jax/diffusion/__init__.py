"""Diffusion: schedules, samplers with per-step likelihoods, denoisers."""
