"""Rotation helpers (numpy, float64): 3x3 matrices built from axes, angles and quaternions.

Quaternions are (w, x, y, z), scalar first, as in the DeepMimic motion files. Every function
accepts batched input with leading dimensions.
"""

from __future__ import annotations

import numpy as np


def axis_angle(axis_angle_vec: np.ndarray) -> np.ndarray:
    """Rotation vectors (..., 3) (axis x angle in radians) -> matrices (..., 3, 3) (Rodrigues)."""
    vec = np.asarray(axis_angle_vec, dtype=np.float64)
    angle = np.linalg.norm(vec, axis=-1, keepdims=True)
    axis = vec / np.where(angle > 1e-12, angle, 1.0)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(vec.shape + (3,))
    s, c = np.sin(angle)[..., None], np.cos(angle)[..., None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def about(axis: np.ndarray, angle: np.ndarray | float) -> np.ndarray:
    """Rotation by `angle` radians (...) about the unit `axis` (3,) -> (..., 3, 3)."""
    axis = np.asarray(axis, dtype=np.float64)
    angle = np.asarray(angle, dtype=np.float64)
    return axis_angle(angle[..., None] * axis / np.linalg.norm(axis))


def log(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> rotation vectors (..., 3), angles in [0, pi]."""
    m = np.asarray(matrix, dtype=np.float64)
    cos = np.clip((np.trace(m, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    skew = np.stack(
        [m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]],
        axis=-1,
    )
    sin = np.sin(angle)
    small = sin < 1e-6
    axis = skew / np.where(small, 1.0, 2 * sin)[..., None]
    # Near pi the skew part vanishes: take the axis from the symmetric part instead.
    near_pi = small & (cos < 0)
    if np.any(near_pi):
        sym = (m[near_pi] + np.eye(3)) / 2
        col = np.argmax(np.diagonal(sym, axis1=-2, axis2=-1), axis=-1)
        picked = sym[np.arange(len(col)), :, col]
        axis[near_pi] = picked / np.linalg.norm(picked, axis=-1, keepdims=True)
    axis = np.where((small & ~near_pi)[..., None], skew / 2, axis)
    return np.where((small & ~near_pi)[..., None], axis, axis * angle[..., None])


def power(matrix: np.ndarray, fraction: float | np.ndarray) -> np.ndarray:
    """The rotation by `fraction` of each rotation's angle about the same axis."""
    return axis_angle(log(matrix) * np.asarray(fraction, dtype=np.float64)[..., None])


def from_quaternion(quat: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4) as (w, x, y, z), normalised here -> matrices (..., 3, 3)."""
    q = np.asarray(quat, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return np.stack(rows, axis=-1).reshape(q.shape[:-1] + (3, 3))


def to_quaternion(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) (w, x, y, z), w >= 0."""
    vec = log(matrix)
    angle = np.linalg.norm(vec, axis=-1, keepdims=True)
    axis = vec / np.where(angle > 1e-12, angle, 1.0)
    return np.concatenate([np.cos(angle / 2), axis * np.sin(angle / 2)], axis=-1)


def between(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The smallest rotation (3, 3) turning direction `source` (3,) onto direction `target`."""
    a = np.asarray(source, dtype=np.float64)
    b = np.asarray(target, dtype=np.float64)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    cross = np.cross(a, b)
    sin, cos = np.linalg.norm(cross), float(np.dot(a, b))
    if sin < 1e-9:
        if cos > 0:
            return np.eye(3)
        # Opposite directions: turn half a circle about any axis orthogonal to `a`.
        helper = np.eye(3)[np.argmin(np.abs(a))]
        return about(np.cross(a, helper), np.pi)
    return about(cross / sin, np.arctan2(sin, cos))
