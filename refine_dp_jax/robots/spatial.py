"""Small pure rotation helpers (JAX, jittable, no branching on traced values).

Conventions: rotation matrices act on column vectors (world = R @ local); quaternions are
MuJoCo's (w, x, y, z); a rotation vector is axis * angle (rad). The "heading frame" of the
robot is the pelvis position with the pelvis yaw only (roll and pitch removed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def wrap_angle(a: jax.Array) -> jax.Array:
    """Angle(s) wrapped to [-pi, pi)."""
    return (a + jnp.pi) % (2.0 * jnp.pi) - jnp.pi


def rot_z(yaw: jax.Array) -> jax.Array:
    """[3, 3] rotation about z."""
    c, s = jnp.cos(yaw), jnp.sin(yaw)
    z, o = jnp.zeros_like(yaw), jnp.ones_like(yaw)
    return jnp.array([[c, -s, z], [s, c, z], [z, z, o]])


def rot2d(yaw: jax.Array) -> jax.Array:
    """[2, 2] planar rotation."""
    c, s = jnp.cos(yaw), jnp.sin(yaw)
    return jnp.array([[c, -s], [s, c]])


def axis_angle(axis: jax.Array, angle: jax.Array) -> jax.Array:
    """[3, 3] rotation of ``angle`` about the unit ``axis`` [3] (Rodrigues)."""
    x, y, z = axis[0], axis[1], axis[2]
    k = jnp.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return jnp.eye(3) + jnp.sin(angle) * k + (1.0 - jnp.cos(angle)) * (k @ k)


def rotvec_to_mat(v: jax.Array) -> jax.Array:
    """[3] rotation vector -> [3, 3] matrix (exact at zero)."""
    theta = jnp.sqrt(jnp.sum(v * v) + 1e-24)
    axis = v / theta
    return axis_angle(axis, theta)


def quat_to_mat(q: jax.Array) -> jax.Array:
    """[4] unit quaternion (w, x, y, z) -> [3, 3] matrix."""
    q = q / jnp.linalg.norm(q)
    w, x, y, z = q[0], q[1], q[2], q[3]
    return jnp.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def mat_to_quat(r: jax.Array) -> jax.Array:
    """[3, 3] rotation -> [4] quaternion (w >= 0), Shepperd's method (all four candidates are
    computed, the best conditioned one is selected)."""
    tr = jnp.trace(r)
    cands = jnp.stack([
        jnp.array([1 + tr, r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]),
        jnp.array([r[2, 1] - r[1, 2], 1 + r[0, 0] - r[1, 1] - r[2, 2], r[0, 1] + r[1, 0],
                   r[0, 2] + r[2, 0]]),
        jnp.array([r[0, 2] - r[2, 0], r[0, 1] + r[1, 0], 1 - r[0, 0] + r[1, 1] - r[2, 2],
                   r[1, 2] + r[2, 1]]),
        jnp.array([r[1, 0] - r[0, 1], r[0, 2] + r[2, 0], r[1, 2] + r[2, 1],
                   1 - r[0, 0] - r[1, 1] + r[2, 2]]),
    ])  # fmt: skip
    diag = jnp.array([tr, r[0, 0], r[1, 1], r[2, 2]])
    q = cands[jnp.argmax(diag)]
    q = q / jnp.maximum(jnp.linalg.norm(q), 1e-12)
    return q * jnp.where(q[0] < 0, -1.0, 1.0)


def quat_to_rotvec(q: jax.Array) -> jax.Array:
    """[4] quaternion -> [3] rotation vector with angle in [0, pi]."""
    q = q * jnp.where(q[0] < 0, -1.0, 1.0)
    v = q[1:]
    n = jnp.sqrt(jnp.sum(v * v))
    angle = 2.0 * jnp.arctan2(n, q[0])
    scale = jnp.where(n > 1e-7, angle / jnp.maximum(n, 1e-7), 2.0 / jnp.maximum(q[0], 1e-7))
    return v * scale


def mat_to_rotvec(r: jax.Array) -> jax.Array:
    """[3, 3] -> [3] rotation vector."""
    return quat_to_rotvec(mat_to_quat(r))


def rot_error(r_cur: jax.Array, r_ref: jax.Array) -> jax.Array:
    """Orientation error for IK: 2 sin(angle / 2) * axis of R_ref R_cur^T (twice the vector
    part of its quaternion, w >= 0), in the world frame. Zero when aligned and growing up to
    angle = pi. (The skew part of R_ref R_cur^T, sin(angle) * axis, vanishes again at pi:
    IK that descends it can stop at a hand turned half a turn the wrong way.)"""
    return 2.0 * mat_to_quat(r_ref @ r_cur.T)[1:]


def yaw_of(r: jax.Array) -> jax.Array:
    """Heading (rad) of the x axis of rotation ``r`` [3, 3] projected on the ground."""
    return jnp.arctan2(r[1, 0], r[0, 0])
