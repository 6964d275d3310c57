"""3D pose metrics on root-relative skeletons in mm: MPJPE, PCK@150, AUC and Procrustes (PA).

All functions take skeletons shaped (..., J, 3), compute in numpy float64 and return one value
per example, shape (...). `joints` picks the scored subset (e.g. skeleton.EVAL_14 for
MPI-INF-3DHP); None scores all joints. Conventions follow the reference evaluation:

- PCK counts a joint as correct when its error is strictly below the threshold (< 150 mm).
- AUC is the mean PCK over thresholds 0, 5, ..., 150 mm (31 values; 0 always scores 0), as in
  MPI-INF-3DHP's mpii_compute_3d_pck.m.
- Procrustes alignment is a full similarity (translation, orthogonal matrix, uniform scale) with
  reflections allowed, as scipy.spatial.procrustes; it is fitted on ALL joints and the aligned
  prediction is then scored on the subset.
"""

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import ArrayLike, NDArray

from posecontract.skeleton import ROOT

PCK_THRESHOLD_MM = 150.0
AUC_THRESHOLDS_MM: NDArray[np.float64] = np.linspace(0.0, 150.0, 31)  # 0, 5, ..., 150

Array = NDArray[np.float64]


def _as_pair(pred: ArrayLike, gt: ArrayLike) -> tuple[Array, Array]:
    """Return pred and gt as float64 arrays after checking they are matching (..., J, D)."""
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.shape != g.shape or p.ndim < 2:
        raise ValueError(f"pred {p.shape} and gt {g.shape} must have the same shape (..., J, 3)")
    return p, g


def _select(values: Array, joints: Sequence[int] | None) -> Array:
    """Pick the joint subset on the last axis of (..., J) values; None keeps all."""
    if joints is None:
        return values
    idx = np.asarray(joints, dtype=np.intp)
    n = values.shape[-1]
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(f"joints {joints!r} must be a non-empty sequence of indices")
    if (idx < 0).any() or (idx >= n).any():
        raise ValueError(f"joints {list(idx)} contains indices outside 0..{n - 1}")
    return values[..., idx]


def root_relative(joints: ArrayLike, root: int = ROOT) -> Array:
    """Subtract the root joint from every joint: (..., J, 3) -> (..., J, 3)."""
    j = np.asarray(joints, dtype=np.float64)
    if j.ndim < 2 or not 0 <= root < j.shape[-2]:
        raise ValueError(f"root {root} must be a joint index 0..J-1 of skeletons shaped {j.shape}")
    return j - j[..., root : root + 1, :]


def joint_errors(pred: ArrayLike, gt: ArrayLike) -> Array:
    """Euclidean error of every joint: (..., J, 3) pair -> (..., J)."""
    p, g = _as_pair(pred, gt)
    return np.linalg.norm(p - g, axis=-1)


def mpjpe(pred: ArrayLike, gt: ArrayLike, joints: Sequence[int] | None = None) -> Array:
    """Mean per-joint position error over the subset, per example. (...,)."""
    return _select(joint_errors(pred, gt), joints).mean(axis=-1)


def pck(
    pred: ArrayLike,
    gt: ArrayLike,
    joints: Sequence[int] | None = None,
    threshold: float = PCK_THRESHOLD_MM,
) -> Array:
    """Fraction of subset joints with error strictly below `threshold`, per example. (...,)."""
    return (_select(joint_errors(pred, gt), joints) < threshold).mean(axis=-1)


def auc(pred: ArrayLike, gt: ArrayLike, joints: Sequence[int] | None = None) -> Array:
    """Mean PCK over AUC_THRESHOLDS_MM (0..150 mm in 5 mm steps), per example. (...,)."""
    err = _select(joint_errors(pred, gt), joints)[..., None, :]  # (..., 1, J)
    return (err < AUC_THRESHOLDS_MM[:, None]).mean(axis=-1).mean(axis=-1)


def procrustes_align(pred: ArrayLike, gt: ArrayLike) -> Array:
    """Map pred onto gt by the best similarity transform fitted on all joints. (..., J, 3).

    Minimises ||gt_c - s * pred_c @ R|| over orthogonal R (det -1 allowed) and scale s, with
    both skeletons centred on their joint means; equivalent to scipy.spatial.procrustes(gt, pred)
    mapped back to gt's units. A degenerate pred (all joints at one point) maps to gt's centroid.
    """
    p, g = _as_pair(pred, gt)
    mu_p = p.mean(axis=-2, keepdims=True)
    mu_g = g.mean(axis=-2, keepdims=True)
    pc, gc = p - mu_p, g - mu_g  # (..., J, D)
    # H = pc^T gc = U S V^T; the optimal orthogonal map is R = U V^T and the scale
    # s = trace(S) / ||pc||^2 (Kabsch/Umeyama without the reflection correction).
    u, sv, vt = np.linalg.svd(np.swapaxes(pc, -1, -2) @ gc)  # (..., D, D), (..., D), (..., D, D)
    r = u @ vt
    norm2 = np.maximum((pc**2).sum(axis=(-2, -1)), np.finfo(np.float64).tiny)
    scale = sv.sum(axis=-1) / norm2  # (...,)
    return scale[..., None, None] * (pc @ r) + mu_g


def pa_mpjpe(pred: ArrayLike, gt: ArrayLike, joints: Sequence[int] | None = None) -> Array:
    """MPJPE after Procrustes alignment on all joints, scored on the subset. (...,)."""
    return mpjpe(procrustes_align(pred, gt), gt, joints)


@dataclass(frozen=True)
class PoseScores:
    """Per-example metric values, each (N,) for N examples; `means()` averages over examples."""

    mpjpe: Array
    pck: Array
    auc: Array
    pa_mpjpe: Array
    pa_pck: Array
    pa_auc: Array

    def means(self) -> dict[str, float]:
        """Return each metric averaged over examples (frame-weighted, as the reference)."""
        return {f.name: float(np.mean(getattr(self, f.name))) for f in fields(self)}


def score_poses(pred: ArrayLike, gt: ArrayLike, joints: Sequence[int] | None = None) -> PoseScores:
    """Score root-relative mm skeletons (N, J, 3), unaligned and Procrustes-aligned."""
    p, g = _as_pair(pred, gt)
    if p.ndim != 3:
        raise ValueError(f"score_poses expects (N, J, 3) batches; got shape {p.shape}")
    aligned = procrustes_align(p, g)
    return PoseScores(
        mpjpe=mpjpe(p, g, joints),
        pck=pck(p, g, joints),
        auc=auc(p, g, joints),
        pa_mpjpe=mpjpe(aligned, g, joints),
        pa_pck=pck(aligned, g, joints),
        pa_auc=auc(aligned, g, joints),
    )
