"""The environment contract shared by every embodiment (testbed and humanoid).

An environment is a plain Python object holding *static* things (the MuJoCo model, sizes,
config) and exposing *pure* functions of a typed state. Learning code only ever talks to this
contract; it never imports a specific task.

Layers
------
The environment is the **LLC level**: one ``step`` is one low-level-controller step (a few
physics substeps). Its action is the LLC's joint-level action; ``state.command`` is the
task-space command (the diffusion policy's action, e.g. base velocity, hand pose, gripper)
that the LLC is asked to track. The hierarchical code (DP rollouts) writes the command with
``with_command`` and holds it for a number of LLC steps.

Shape legend (see STYLE.md): Da LLC action, Do LLC observation, Dpriv critic observation,
Dc command, Ds DP observation (one frame).

Rewards
-------
``state.reward`` is the LLC's dense tracking reward. ``state.task_reward`` is the sparse task
reward (the DP's reward). ``state.done`` = 1 on termination *or* truncation;
``state.truncated`` = 1 where the episode ended by the time limit only (bootstrap there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class EnvState:
    """Full state of one environment (unbatched shapes; vmap adds a leading B)."""

    data: Any  # mjx.Data: physics state
    obs: jax.Array  # [Do] LLC actor observation
    privileged_obs: jax.Array  # [Dpriv] LLC critic observation
    reward: jax.Array  # [] LLC tracking reward of the last step
    done: jax.Array  # [] float32 1.0 when the episode ended (termination or truncation)
    truncated: jax.Array  # [] float32 1.0 when it ended by the time limit only
    command: jax.Array  # [Dc] task-space command being tracked
    task_reward: jax.Array  # [] sparse task reward of the last step
    success: jax.Array  # [] float32 1.0 once the task is solved in this episode
    nonfinite: jax.Array  # [] float32 1.0 when the last step produced a non-finite state
    step_count: jax.Array  # [] int32 LLC steps since reset
    last_action: jax.Array  # [Da] previous LLC action
    task: Any  # env-specific pytree (object/goal poses, planner stage, randomization ...)
    metrics: dict[str, jax.Array]  # fixed-key per-step diagnostics (tracking errors ...)
    rng: jax.Array  # PRNG key owned by the environment (domain randomization, noise)


class Env(Protocol):
    """What every registered environment provides. All methods are pure and jittable."""

    name: str
    action_size: int  # Da
    observation_size: int  # Do
    privileged_observation_size: int  # Dpriv
    command_size: int  # Dc
    dp_observation_size: int  # Ds
    dt: float  # seconds per LLC step
    episode_steps: int  # time limit in LLC steps
    mj_model: Any  # mujoco.MjModel (for rendering)

    def reset(self, key: jax.Array, curriculum: jax.Array | float = 1.0) -> EnvState: ...

    def step(self, state: EnvState, action: jax.Array) -> EnvState: ...

    def with_command(self, state: EnvState, command: jax.Array) -> EnvState:
        """Sets the tracked command and recomputes the observations."""
        ...

    def sample_command(self, key: jax.Array, state: EnvState) -> jax.Array:
        """A random command over the range the DP will use (LLC training)."""
        ...

    def expert_command(self, state: EnvState) -> jax.Array:
        """Scripted stage planner with privileged state (demonstrations)."""
        ...

    def reference_action(self, state: EnvState) -> jax.Array:
        """A hand-written controller tracking ``state.command`` (tests, smoke runs)."""
        ...

    def dp_observation(self, state: EnvState) -> jax.Array:
        """[Ds] task-space observation of the diffusion policy."""
        ...

    @property
    def command_low(self) -> jax.Array: ...  # [Dc]

    @property
    def command_high(self) -> jax.Array: ...  # [Dc]


def coerce_float_fields(cfg: Any) -> None:
    """In an env config dataclass (frozen), ints given for ``float`` fields and for the elements
    of ``tuple[float, ...]`` fields become floats: ``--set env_overrides.payload_prob=0`` parses
    to the int 0, which ``jax.random.bernoulli`` refuses deep inside a compiled reset, and an
    int field would change the compiled dtypes. Call first in ``__post_init__``."""
    as_float = lambda x: float(x) if isinstance(x, int) and not isinstance(x, bool) else x  # noqa: E731
    for f in dataclasses.fields(cfg):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        v = getattr(cfg, f.name)
        if kind == "float":
            object.__setattr__(cfg, f.name, as_float(v))
        elif kind.startswith("tuple[float") and isinstance(v, (tuple, list)):
            object.__setattr__(cfg, f.name, tuple(as_float(x) for x in v))


def put_model(mj_model: Any) -> Any:
    """``mjx.put_model`` on this process's first device (``jax.devices()[0]`` belongs to
    process 0 in a multi-host run and is not addressable from the others)."""
    from mujoco import mjx

    return mjx.put_model(mj_model, device=jax.local_devices()[0])


_REGISTRY: dict[str, Callable[..., Env]] = {}


def register(name: str, factory: Callable[..., Env]) -> None:
    """Registers ``factory(**overrides) -> Env`` under ``name``."""
    if name in _REGISTRY:
        raise ValueError(f"environment {name!r} is already registered")
    _REGISTRY[name] = factory


def names() -> list[str]:
    """Sorted names of all registered environments."""
    return sorted(_REGISTRY)


def make(name: str, **overrides: Any) -> Env:
    """Builds the environment ``name``; ``overrides`` replace fields of its config."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown environment {name!r}; registered: {', '.join(names())}")
    return _REGISTRY[name](**overrides)


def normalize_command(env: Env, command: jax.Array) -> jax.Array:
    """Maps a command from [low, high] to [-1, 1] (the DP's action space)."""
    low, high = env.command_low, env.command_high
    return 2.0 * (command - low) / (high - low) - 1.0


def denormalize_command(env: Env, action: jax.Array) -> jax.Array:
    """Maps a DP action in [-1, 1] back to a command in [low, high]."""
    low, high = env.command_low, env.command_high
    return low + (jnp.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (high - low)


def command_limiter(env: Env, hold: int) -> Callable:
    """``limit(previous [..., Dc], command [..., Dc]) -> command``: for envs whose LLC was
    trained on commands that move at most ``env.command_max_step`` per LLC step (the
    humanoid: hands at 0.5 m/s and 2 rad/s), each entry moves at most ``hold`` times that
    from the previous command, whoever issues it (a planner holds each command ``hold``
    steps); other envs: the identity. Measured on a pre-trained humanoid DP whose chunks
    jumped by up to 3 rad between commands: 22-28 % of its episodes ended in an exploded
    state (``docs/humanoid.md``)."""
    max_step = getattr(env, "command_max_step", None)
    if max_step is None:
        return lambda prev, cmd: cmd
    step = hold * max_step
    return lambda prev, cmd: prev + jnp.clip(cmd - prev, -step, step)
