"""Evaluation of a humanoid LLC on its own task: standing (or walking) while tracking random
commands, as in its training, with the deterministic policy.

Each of B envs runs one episode of ``env.episode_steps`` LLC steps from a randomized reset
(the env's domain randomization: payloads, pushes, friction, arm configuration). Commands
follow LLC training's schedule: a new random target every 1-3 s (``hold_steps`` on average),
hand poses moving toward it at the env's rates, grippers and base velocity switching. Measured:

- fall rate: share of episodes that end in a fall (or a non-finite state) before the limit;
- hand position / orientation error, both hands, at the steps where the hand command has not
  moved for at least ``settle_seconds`` (holding a pose), median and 90th percentile, plus
  the median over all steps (moving targets included);
- gripper command followed: share of (step, hand) pairs, ``settle_seconds`` after a gripper
  change, whose finger opening is on the commanded side of half travel;
- mean episode length, pelvis height;
- at the steps with a moving base-velocity command (walking LLCs): median footstep and
  velocity tracking errors, and forward progress (speed along the commanded direction over
  the commanded speed).
Steps after a fall do not count.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def make_llc_eval(env, num_envs: int, hold_steps: int, policy: Callable,
                  velocity_hold_steps: int = 0, settle_seconds: float = 0.5,
                  record_qpos: bool = False, record_pushes: bool = False,
                  extra: Callable | None = None):  # fmt: skip
    """Returns ``run(params, key) -> dict of [T, B] arrays`` (jitted), where ``policy(params,
    obs [B, Do]) -> action [B, Da]`` (deterministic). ``params = None`` with ``policy =
    zero_policy(env)`` evaluates the arm prior alone (zero residual). Commands follow LLC
    training's schedule (``train.llc.command_schedule``). ``record_qpos``: also ``qpos``
    [T, B, nq] (for a video, ``evaluate.render_video``). ``record_pushes`` (envs with torso
    pushes, the humanoid's): also ``push`` [T, B, 2], the horizontal push applied during the
    step in the pelvis heading frame at its start (N; zero between pushes; +x = pushed
    forward), for ``push_outcomes``. ``extra(state) -> dict of [B, ...]``: more per-step
    records of the batched state after each step (e.g. a diagnostic of the stance)."""
    from refine_dp_jax.train.llc import command_schedule

    b, t_len = num_envs, env.episode_steps
    settle = int(round(settle_seconds / env.dt))
    v_reset = jax.vmap(env.reset, in_axes=(0, None))
    v_step, v_with = jax.vmap(env.step), jax.vmap(env.with_command)
    v_feat = jax.vmap(env.features)
    next_command = command_schedule(env, b, hold_steps, velocity_hold_steps)

    def errors(s):
        f = v_feat(s.data)
        pos, rot = jax.vmap(env._hand_errors)(f, s.command)
        opening = 2.0 * (1.0 - f.grip / env.params.finger_stroke) - 1.0  # +1 closed
        return jnp.linalg.norm(pos, axis=-1), jnp.linalg.norm(rot, axis=-1), opening

    @jax.jit
    def run(params, key):
        k_reset, k_run = jax.random.split(key)
        s = v_reset(jax.random.split(k_reset, b), 1.0)
        zeros = jnp.zeros((b,), jnp.int32)

        def one(carry, k):
            s, alive, target, timer, vtimer, still, since_grip = carry
            cmd, target, timer, vtimer, _ = next_command(jax.random.split(k, 3), s, target,
                                                         timer, vtimer)  # fmt: skip
            moved = jnp.any(jnp.abs(cmd[:, 3:15] - s.command[:, 3:15]) > 1e-6, axis=1)
            grip_changed = jnp.any(cmd[:, -2:] != s.command[:, -2:], axis=1)
            s = v_with(s, cmd)
            still = jnp.where(moved, 0, still + 1)  # steps the hand command has not moved
            since_grip = jnp.where(grip_changed, 0, since_grip + 1)
            if record_pushes:
                t_ = s.task
                on = (s.step_count >= t_.push_start) & (s.step_count < t_.push_end)
                rot = v_feat(s.data).heading[:, :2, :2]  # world @ heading = heading frame
                push_b = jnp.einsum("bi,bij->bj", t_.push_force[:, :2], rot)
            nxt = v_step(s, policy(params, s.obs))
            e_pos, e_rot, opening = errors(nxt)
            fell = nxt.done * (1.0 - nxt.truncated) * alive
            out = dict(
                alive=alive, fell=fell, e_pos=e_pos, e_rot=e_rot,
                grip_ok=(opening * s.command[:, -2:] > 0.0).astype(jnp.float32),
                hand_settled=(still >= settle).astype(jnp.float32),
                grip_settled=(since_grip >= settle).astype(jnp.float32),
                height=nxt.metrics["base_height"],
                **{k: nxt.metrics[k] for k in WALK_KEYS if k in nxt.metrics},
            )  # fmt: skip
            if record_qpos:
                out["qpos"] = nxt.data.qpos
            if record_pushes:
                out["push"] = push_b * on[:, None]
            if extra is not None:
                out.update(extra(nxt))
            alive = alive * (1.0 - nxt.done)
            return (nxt, alive, target, timer, vtimer, still, since_grip), out

        carry = (s, jnp.ones((b,)), s.command, zeros, zeros, zeros, zeros)
        _, outs = jax.lax.scan(one, carry, jax.random.split(k_run, t_len))
        return outs

    return run


def push_outcomes(outs: dict, dt: float, window_seconds: float = 3.0) -> dict:
    """Every push of a ``record_pushes`` run, one entry each: ``magnitude`` (N), ``angle``
    (rad in the pelvis heading frame at the push: 0 = pushed forward, pi/2 = to the left)
    and ``fell`` (bool: the episode ended in a fall within ``window_seconds`` of the push's
    start), ``step`` and ``episode`` (where it starts in ``outs``' [T, B]). Pushes on a fallen
    robot do not count, nor pushes whose window runs past the episode's end without a fall
    (their outcome is unknown)."""
    push = np.asarray(outs["push"])  # [T, B, 2]
    alive = np.asarray(outs["alive"]) > 0.5
    fell = np.asarray(outs["fell"]) > 0.5
    t_len = push.shape[0]
    on = np.linalg.norm(push, axis=-1) > 0.0
    first = on & ~np.concatenate([np.zeros_like(on[:1]), on[:-1]])  # a push's first step
    window = int(round(window_seconds / dt))
    fall_step = np.where(fell.any(0), fell.argmax(0), t_len + window)  # [B]; past: no fall
    ts, bs = np.nonzero(first & alive)
    fell_in = (fall_step[bs] >= ts) & (fall_step[bs] < ts + window)
    known = fell_in | (ts + window <= t_len)
    f = push[ts, bs][known]
    return {"magnitude": np.linalg.norm(f, axis=-1), "angle": np.arctan2(f[:, 1], f[:, 0]),
            "fell": fell_in[known], "step": ts[known], "episode": bs[known]}  # fmt: skip


# push directions relative to the robot's heading: the centre of each 90-degree sector (rad)
PUSH_SECTOR_CENTRES = {
    "forward": 0.0,
    "left": 0.5 * np.pi,
    "backward": np.pi,
    "right": -0.5 * np.pi,
}
PUSH_SECTORS = tuple(PUSH_SECTOR_CENTRES)


def push_recovery(outcomes: dict, bin_width: float = 10.0) -> dict:
    """``push_outcomes`` tallied by magnitude bin (``bin_width`` N wide, from 0) and direction
    sector (``PUSH_SECTORS``, 90 degrees each): ``{"bins": [low edges], sector: {"pushes":
    [...], "falls": [...]}}`` (JSON-ready)."""
    mag, ang = outcomes["magnitude"], outcomes["angle"]
    n_bins = max(1, int(np.ceil((mag.max() if mag.size else 0.0) / bin_width + 1e-9)))
    idx = np.minimum((mag // bin_width).astype(int), n_bins - 1)
    sector = np.round(ang / (0.5 * np.pi)).astype(int) % 4  # 0 fwd, 1 left, 2 back, 3 right
    out = {"bins": [bin_width * i for i in range(n_bins)], "bin_width": bin_width}
    for k, name in enumerate(PUSH_SECTORS):
        sel = sector == k
        falls = np.bincount(idx[sel], weights=outcomes["fell"][sel], minlength=n_bins)
        out[name] = {
            "pushes": np.bincount(idx[sel], minlength=n_bins).tolist(),
            "falls": falls.astype(int).tolist(),
        }
    return out


# per-step walking metrics of the humanoid envs, summarized over steps with a moving command
WALK_KEYS = ("moving", "foot_err", "vel_err", "cmd_speed", "speed_along_cmd")


def zero_policy(env) -> Callable:
    """The zero residual: the arm prior and the default leg pose."""
    return lambda params, obs: jnp.zeros((obs.shape[0], env.action_size))


def summarize(outs: dict, dt: float) -> dict:
    """Scalar metrics (see the module docstring) from ``run``'s [T, B] arrays; ``dt``: s per
    LLC step."""
    o = {k: np.asarray(v) for k, v in outs.items()}
    alive = o["alive"] > 0.5  # [T, B]
    hand = alive & (o["hand_settled"] > 0.5)
    grip = alive & (o["grip_settled"] > 0.5)
    pos, rot = o["e_pos"][hand], o["e_rot"][hand]  # [N, 2] -> flattened per hand below
    length = alive.sum(0)
    return {
        "episodes": int(alive.shape[1]),
        "fall_rate": float(o["fell"].sum(0).clip(0, 1).mean()),
        "episode_seconds_mean": float(length.mean() * dt),
        "hand_pos_err_median": float(np.median(pos)),
        "hand_pos_err_p90": float(np.percentile(pos, 90)),
        "hand_pos_err_median_all_steps": float(np.median(o["e_pos"][alive])),
        "hand_rot_err_median": float(np.median(rot)),
        "hand_rot_err_p90": float(np.percentile(rot, 90)),
        "hand_rot_err_median_all_steps": float(np.median(o["e_rot"][alive])),
        "gripper_followed": float(o["grip_ok"][grip].mean()),
        "base_height_mean": float(o["height"][alive].mean()),
        **_walking_summary(o, alive),
    }


def _walking_summary(o: dict, alive: np.ndarray) -> dict:
    """Footstep and velocity tracking at the live steps with a moving command (a walking LLC's
    measures); empty for envs without them or when no command moved."""
    if not all(k in o for k in WALK_KEYS):
        return {}
    walk = alive & (o["moving"] > 0.5)
    if not walk.any():
        return {}
    return {
        "moving_share": float(walk.sum() / alive.sum()),
        "foot_err_moving_median": float(np.median(o["foot_err"][walk])),
        "vel_err_moving_median": float(np.median(o["vel_err"][walk])),
        "progress_ratio": float(
            o["speed_along_cmd"][walk].sum() / max(o["cmd_speed"][walk].sum(), 1e-6)
        ),
    }
