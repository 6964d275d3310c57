"""The canonical 17-joint skeleton and the mappings into it from the training datasets.

The canonical skeleton itself lives in `posecontract.skeleton` (shared with serving) and is
re-exported here. Mappings follow MargiPose: Human3.6M (32 joints) and the MPI-INF-3DHP
28-joint training skeleton are plain index selections; MPII (16 joints) lacks the canonical
spine and head, which are derived from its thorax, pelvis, upper neck and head top.
"""

import numpy as np

from posecontract.skeleton import (
    BONES,
    EVAL_14,
    FLIP_PERMUTATION,
    JOINT_NAMES,
    NUM_JOINTS,
    PARENTS,
    ROOT,
    joint_index,
)

__all__ = [
    "BONES",
    "EVAL_14",
    "FLIP_PERMUTATION",
    "H36M_TO_CANONICAL",
    "JOINT_NAMES",
    "MPI3DHP_TO_CANONICAL",
    "MPII_TO_CANONICAL",
    "NUM_JOINTS",
    "PARENTS",
    "ROOT",
    "flip_joint_order",
    "h36m_to_canonical",
    "joint_index",
    "mpi3dhp_to_canonical",
    "mpii_to_canonical",
]

# Source index of each canonical joint. H36M calls its joint 13 "neck" (canonical neck, the
# thorax) and 14 "head" (canonical head, between neck and head top).
H36M_TO_CANONICAL: tuple[int, ...] = (15, 13, 25, 26, 27, 17, 18, 19, 1, 2, 3, 6, 7, 8, 0, 12, 14)
MPI3DHP_TO_CANONICAL: tuple[int, ...] = (
    7, 5, 14, 15, 16, 9, 10, 11, 23, 24, 25, 18, 19, 20, 4, 3, 6
)

# MPII (torchdata order): 0 r_ankle, 1 r_knee, 2 r_hip, 3 l_hip, 4 l_knee, 5 l_ankle, 6 pelvis,
# 7 thorax, 8 upper neck, 9 head top, 10 r_wrist, 11 r_elbow, 12 r_shoulder, 13 l_shoulder,
# 14 l_elbow, 15 l_wrist. These are canonical joints 0..14; spine and head are derived.
MPII_TO_CANONICAL: tuple[int, ...] = (9, 8, 12, 11, 10, 13, 14, 15, 2, 1, 0, 3, 4, 5, 6)
_MPII_PELVIS, _MPII_THORAX, _MPII_NECK, _MPII_HEAD_TOP = 6, 7, 8, 9
# MargiPose puts the spine a little above the midpoint of pelvis and thorax.
_SPINE_THORAX_WEIGHT = 0.53
_MPII_JOINTS = 16


def _select(joints: np.ndarray, indices: tuple[int, ...], count: int, source: str) -> np.ndarray:
    """Pick `indices` along the joint axis (-2) of `joints` (..., count, D)."""
    joints = np.asarray(joints)
    if joints.ndim < 2 or joints.shape[-2] != count:
        raise ValueError(
            f"{source} joints must have shape (..., {count}, D), got {joints.shape}"
        )
    return np.take(joints, indices, axis=-2)


def h36m_to_canonical(joints: np.ndarray) -> np.ndarray:
    """Human3.6M joints (..., 32, D) -> canonical order (..., 17, D)."""
    return _select(joints, H36M_TO_CANONICAL, 32, "Human3.6M")


def mpi3dhp_to_canonical(joints: np.ndarray) -> np.ndarray:
    """MPI-INF-3DHP 28-joint training joints (..., 28, D) -> canonical order (..., 17, D)."""
    return _select(joints, MPI3DHP_TO_CANONICAL, 28, "MPI-INF-3DHP")


def mpii_to_canonical(
    joints: np.ndarray, labelled: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """MPII keypoints (..., 16, 2) -> canonical (..., 17, 2) float64 and a mask (..., 17) bool.

    A joint is labelled where `labelled` (..., 16) says so and, in any case, only if it is not
    at (0, 0), MPII's marker for a missing annotation. Derived joints, as in MargiPose:
    spine = 0.53 thorax + 0.47 pelvis, labelled when the thorax is; head = mean(head top, upper
    neck), labelled when both are. Values of unlabelled joints are meaningless.
    """
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim < 2 or joints.shape[-2:] != (_MPII_JOINTS, 2):
        raise ValueError(f"MPII joints must have shape (..., 16, 2), got {joints.shape}")
    mask = np.any(joints != 0, axis=-1)  # (..., 16)
    if labelled is not None:
        labelled = np.asarray(labelled, dtype=bool)
        if labelled.shape != mask.shape:
            raise ValueError(
                f"MPII label mask must have shape {mask.shape}, got {labelled.shape}"
            )
        mask &= labelled

    thorax, pelvis = joints[..., _MPII_THORAX, :], joints[..., _MPII_PELVIS, :]
    spine = _SPINE_THORAX_WEIGHT * thorax + (1 - _SPINE_THORAX_WEIGHT) * pelvis
    head = 0.5 * (joints[..., _MPII_HEAD_TOP, :] + joints[..., _MPII_NECK, :])
    out = np.concatenate(
        [np.take(joints, MPII_TO_CANONICAL, axis=-2), spine[..., None, :], head[..., None, :]],
        axis=-2,
    )
    spine_mask = mask[..., _MPII_THORAX]
    head_mask = mask[..., _MPII_HEAD_TOP] & mask[..., _MPII_NECK]
    out_mask = np.concatenate(
        [np.take(mask, MPII_TO_CANONICAL, axis=-1), spine_mask[..., None], head_mask[..., None]],
        axis=-1,
    )
    return out, out_mask


def flip_joint_order(values: np.ndarray, axis: int = -2) -> np.ndarray:
    """Swap left and right joints of canonical per-joint values along `axis`.

    Use axis=-2 for coordinates (..., 17, D) and axis=-1 for masks (..., 17). The permutation
    is its own inverse, so the same call undoes it.
    """
    values = np.asarray(values)
    if values.shape[axis] != NUM_JOINTS:
        raise ValueError(
            f"Axis {axis} of shape {values.shape} must hold the {NUM_JOINTS} canonical joints"
        )
    return np.take(values, FLIP_PERMUTATION, axis=axis)
