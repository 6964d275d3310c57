"""Forward kinematics and linear blend skinning of the body asset (numpy).

A pose is one world-space rotation per bone, the bone's *delta* from its rest orientation:
rotation `D_b` turns the rest-pose geometry of bone b about its head. With rest heads `h_b`, a
bone's rigid transform is x -> D_b (x - h_b) + p_b, where the posed head p_b is the parent's
transform applied to h_b (the root's head moves by the given translation). A rest-pose vertex
goes to the weight-blended sum of its bones' transforms (linear blend skinning). Units and
axes are the asset's (metres, z up); see `training.synthetic.body`.
"""

from __future__ import annotations

import numpy as np


def bone_transforms(
    heads: np.ndarray,
    parents: np.ndarray,
    rotations: np.ndarray,
    translation: np.ndarray | None = None,
) -> np.ndarray:
    """Per-bone rigid transforms (B, 3, 4) [D_b | p_b - D_b h_b] from rest heads (B, 3), parent
    indices (B,) (-1 for the root, parents before children) and world delta rotations
    (B, 3, 3); `translation` (3,) moves the root."""
    heads = np.asarray(heads, dtype=np.float64)
    rotations = np.asarray(rotations, dtype=np.float64)
    count = len(heads)
    if rotations.shape != (count, 3, 3):
        raise ValueError(f"Need one 3x3 rotation per bone, ({count}, 3, 3); got {rotations.shape}")
    out = np.empty((count, 3, 4))
    out[:, :, :3] = rotations
    posed = np.empty((count, 3))
    shift = np.zeros(3) if translation is None else np.asarray(translation, dtype=np.float64)
    for b in range(count):
        p = parents[b]
        if p < 0:
            posed[b] = heads[b] + shift
        elif p >= b:
            raise ValueError(f"Bone {b} has parent {p}: parents must come before children")
        else:
            posed[b] = out[p, :, :3] @ heads[b] + out[p, :, 3]
        out[b, :, 3] = posed[b] - rotations[b] @ heads[b]
    return out


def apply(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply rigid transforms (..., 3, 4) to points (..., 3)."""
    return np.einsum("...ij,...j->...i", transforms[..., :3], points) + transforms[..., 3]


def skin(
    vertices: np.ndarray, bones: np.ndarray, weights: np.ndarray, transforms: np.ndarray
) -> np.ndarray:
    """Linear blend skinning: rest vertices (V, 3), their bones (V, K) and weights (V, K)
    (rows sum to 1) under bone transforms (B, 3, 4) -> posed vertices (V, 3)."""
    flat = transforms.reshape(len(transforms), 12)
    blended = weights[:, :1] * flat[bones[:, 0]]  # (V, 12)
    for k in range(1, bones.shape[1]):
        blended += weights[:, k:k + 1] * flat[bones[:, k]]
    return apply(blended.reshape(-1, 3, 4), vertices)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) of a counter-clockwise wound mesh."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    e1, e2 = b - a, c - a
    face_normals = np.stack([e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1],
                             e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2],
                             e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]], axis=1)
    flat = faces.T.ravel()  # corner-major, matching np.tile below
    normals = np.stack(
        [np.bincount(flat, np.tile(face_normals[:, k], 3), len(vertices)) for k in range(3)],
        axis=-1,
    )
    length = np.linalg.norm(normals, axis=-1, keepdims=True)
    return normals / np.maximum(length, 1e-12)
