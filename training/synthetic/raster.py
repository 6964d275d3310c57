"""A z-buffered triangle rasteriser in numpy: which triangle covers each pixel, and where.

Conventions: continuous pixel coordinates, pixel (i, j) covers [i, i+1) x [j, j+1) and is
sampled at its centre (i + 0.5, j + 0.5), as in `posecontract.geometry`. Vertices come already
projected: (u, v) in pixels and their camera depth Z (> 0). A pixel belongs to a triangle when
its centre lies inside it (edges inclusive, so shared edges leave no cracks); the nearest
triangle wins by interpolated 1/Z, which is linear in screen space.

The work is vectorised over (triangle, pixel) candidates: every pixel centre of every
triangle's bounding box is tested at once, so the cost grows with the covered area plus the
triangle count, with no Python loop. Perspective-correct barycentrics of the winning triangle
are returned for shading (interpolating normals, texture coordinates, region fields).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Triangles whose nearest vertex is closer than this (camera depth units) are dropped.
NEAR = 1e-3


@dataclass(frozen=True, eq=False)
class Fragments:
    """The visible surface per pixel."""

    face: np.ndarray  # (H, W) int32 index of the visible triangle, -1 for background
    bary: np.ndarray  # (H, W, 3) float32 perspective-correct barycentrics (0 on background)
    depth: np.ndarray  # (H, W) float32 camera depth Z of the surface, inf on background

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: pixels covered by some triangle."""
        return self.face >= 0


def rasterise(
    screen: np.ndarray,
    faces: np.ndarray,
    width: int,
    height: int,
    cull_backfaces: bool = True,
) -> Fragments:
    """Rasterise triangles `faces` (F, 3) over projected vertices `screen` (V, 3) = (u, v, Z).

    With `cull_backfaces`, triangles facing away from the camera are skipped, assuming
    outward counter-clockwise winding (right-handed). In a camera with x right and y down such
    front faces have a negative signed area in (u, v).
    """
    screen = np.asarray(screen, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if screen.ndim != 2 or screen.shape[1] != 3:
        raise ValueError(f"screen must have shape (V, 3) = (u, v, Z), got {screen.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {faces.shape}")
    if width < 1 or height < 1:
        raise ValueError(f"Image size must be positive, got {width} x {height}")

    face_buf = np.full(height * width, -1, dtype=np.int32)
    bary_buf = np.zeros((height * width, 3), dtype=np.float32)
    depth_buf = np.full(height * width, np.inf, dtype=np.float32)

    # Per-corner coordinate arrays (F,): 1-D gathers and element-wise min/max are much faster
    # than reductions over a length-3 axis.
    su, sv, sz = (np.ascontiguousarray(screen[:, k]) for k in range(3))
    f0, f1, f2 = (np.ascontiguousarray(faces[:, k]) for k in range(3))
    u0, u1, u2 = su[f0], su[f1], su[f2]
    v0, v1, v2 = sv[f0], sv[f1], sv[f2]
    z0, z1, z2 = sz[f0], sz[f1], sz[f2]
    e1u, e1v, e2u, e2v = u1 - u0, v1 - v0, u2 - u0, v2 - v0
    # Signed doubled area in (u, v); < 0 for an outward counter-clockwise face seen from outside.
    area = e1u * e2v - e2u * e1v
    keep = (np.minimum(np.minimum(z0, z1), z2) > NEAR) & (np.abs(area) > 1e-12)
    if cull_backfaces:
        keep &= area < 0
    # Pixel index ranges whose centres can fall inside each triangle, clipped to the image.
    umin, umax = np.minimum(np.minimum(u0, u1), u2), np.maximum(np.maximum(u0, u1), u2)
    vmin, vmax = np.minimum(np.minimum(v0, v1), v2), np.maximum(np.maximum(v0, v1), v2)
    i0 = np.clip(np.ceil(umin - 0.5), 0, width).astype(np.int64)
    i1 = np.clip(np.floor(umax - 0.5) + 1, 0, width).astype(np.int64)
    j0 = np.clip(np.ceil(vmin - 0.5), 0, height).astype(np.int64)
    j1 = np.clip(np.floor(vmax - 0.5) + 1, 0, height).astype(np.int64)
    keep &= (i1 > i0) & (j1 > j0)
    ids = np.flatnonzero(keep)
    if len(ids) == 0:
        return _fragments(face_buf, bary_buf, depth_buf, width, height)

    w_box = i1[ids] - i0[ids]
    counts = w_box * (j1[ids] - j0[ids])
    owner = np.repeat(np.arange(len(ids)), counts)  # candidate -> position in `ids`
    offset = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    row, col = np.divmod(offset, w_box[owner])
    px = i0[ids][owner] + col
    py = j0[ids][owner] + row

    # Barycentrics of the pixel centres: b1, b2 from the edge functions, b0 = 1 - b1 - b2.
    ku, kv = u0[ids], v0[ids]
    cu = px + (0.5 - ku[owner])
    cv = py + (0.5 - kv[owner])
    inv_area = (1.0 / area[ids])
    a2u, a2v = (e2u[ids] * inv_area)[owner], (e2v[ids] * inv_area)[owner]
    a1u, a1v = (e1u[ids] * inv_area)[owner], (e1v[ids] * inv_area)[owner]
    b1 = cu * a2v - cv * a2u
    b2 = cv * a1u - cu * a1v
    b0 = 1.0 - b1 - b2
    inside = np.flatnonzero((b0 >= 0) & (b1 >= 0) & (b2 >= 0))
    owner, b0, b1, b2 = owner[inside], b0[inside], b1[inside], b2[inside]
    pixel = py[inside] * width + px[inside]

    # 1/Z is affine in screen space: the nearest surface has the largest interpolated 1/Z.
    w0 = b0 * (1.0 / z0[ids])[owner]
    w1 = b1 * (1.0 / z1[ids])[owner]
    w2 = b2 * (1.0 / z2[ids])[owner]
    inv_depth = w0 + w1 + w2
    best = np.full(height * width, -np.inf)
    np.maximum.at(best, pixel, inv_depth)
    win = np.flatnonzero(inv_depth >= best[pixel])
    pixel, owner = pixel[win], owner[win]
    norm = 1.0 / inv_depth[win]
    face_buf[pixel] = ids[owner]
    bary_buf[pixel, 0] = w0[win] * norm
    bary_buf[pixel, 1] = w1[win] * norm
    bary_buf[pixel, 2] = w2[win] * norm
    depth_buf[pixel] = norm
    return _fragments(face_buf, bary_buf, depth_buf, width, height)


def _fragments(face: np.ndarray, bary: np.ndarray, depth: np.ndarray, width: int,
               height: int) -> Fragments:
    """Reshape flat buffers into image-shaped `Fragments`."""
    return Fragments(face.reshape(height, width), bary.reshape(height, width, 3),
                     depth.reshape(height, width))


def interpolate(fragments: Fragments, faces: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-pixel interpolation of per-vertex `values` (V, C) -> (H, W, C), 0 on background.

    Interpolate several attributes in one call by stacking them along C: the gathers dominate.
    """
    values = np.asarray(values, dtype=np.float32)
    h, w = fragments.face.shape
    out = np.zeros((h * w, values.shape[1]), dtype=np.float32)
    hit = np.flatnonzero(fragments.face.ravel() >= 0)
    corners = faces[fragments.face.ravel()[hit]]  # (N, 3)
    bary = fragments.bary.reshape(-1, 3)[hit]  # (N, 3)
    acc = bary[:, 0:1] * values[corners[:, 0]]
    acc += bary[:, 1:2] * values[corners[:, 1]]
    acc += bary[:, 2:3] * values[corners[:, 2]]
    out[hit] = acc
    return out.reshape(h, w, -1)
