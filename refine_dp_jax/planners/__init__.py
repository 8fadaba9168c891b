"""Planners: pure, jittable functions of an environment's state.

Scripted stage planners (the demonstrators behind each task's ``expert_command``) and helper
planners the environments use internally. Learning code never imports a planner directly.
"""
