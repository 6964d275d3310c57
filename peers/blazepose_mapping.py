"""BlazePose's 33 landmarks onto our 17 canonical joints (numpy only: numpy 1 and 2 alike).

Shared by the runner (inside the MediaPipe venv) and by our code, so it imports nothing of
ours; `JOINT_NAMES` repeats `posecontract.skeleton.JOINT_NAMES` (a test keeps them equal).

Joints taken as they are: shoulders 11/12, elbows 13/14, wrists 15/16, hips 23/24, knees
25/26, ankles 27/28 (BlazePose's left/right are the person's, as ours). Derived joints:

- pelvis = mid-hips (BlazePose's world origin), neck (thorax) = mid-shoulders,
  spine = mid(pelvis, neck), head = mean of the ears 7/8;
- head_top is not a BlazePose landmark: it is extrapolated from the neck through the head
  centre, head_top = head + HEAD_TOP_RATIO (head - neck). Adult anthropometry puts the vertex
  ~130 mm above the ear canals and the ears ~190 mm above the shoulder-joint centres, hence 0.65.
  It follows the head's tilt but not its shape: an approximation, masked like its sources.

A joint is masked out (mask False) when any landmark it is built from has visibility < 0.5 or
an undefined (NaN) visibility; its coordinates are still computed where they are finite.
"""

from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 33
VISIBILITY_THRESHOLD = 0.5
HEAD_TOP_RATIO = 0.65

# BlazePose landmark indices (MediaPipe's PoseLandmark enum).
LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)

# Our canonical order (posecontract.skeleton.JOINT_NAMES).
JOINT_NAMES: tuple[str, ...] = (
    "head_top", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "pelvis", "spine", "head",
)
NUM_JOINTS = len(JOINT_NAMES)
ROOT = JOINT_NAMES.index("pelvis")

_LM = {name: i for i, name in enumerate(LANDMARK_NAMES)}
_J = {name: i for i, name in enumerate(JOINT_NAMES)}

# Joints that are one landmark each: our joint index -> BlazePose landmark index.
DIRECT: dict[int, int] = {_J[name]: _LM[name] for name in (
    "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
)}

# Landmarks each joint is built from (its mask is the AND of theirs).
SOURCES: dict[int, tuple[int, ...]] = {
    **{j: (lm,) for j, lm in DIRECT.items()},
    _J["pelvis"]: (_LM["left_hip"], _LM["right_hip"]),
    _J["neck"]: (_LM["left_shoulder"], _LM["right_shoulder"]),
    _J["spine"]: (_LM["left_hip"], _LM["right_hip"], _LM["left_shoulder"], _LM["right_shoulder"]),
    _J["head"]: (_LM["left_ear"], _LM["right_ear"]),
    _J["head_top"]: (_LM["left_ear"], _LM["right_ear"], _LM["left_shoulder"],
                     _LM["right_shoulder"]),
}


def map_points(points: np.ndarray) -> np.ndarray:
    """Map (..., 33, D) BlazePose landmark coordinates to (..., 17, D) canonical joints."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim < 2 or points.shape[-2] != NUM_LANDMARKS:
        raise ValueError(f"Expected landmarks of shape (..., {NUM_LANDMARKS}, D), "
                         f"got {points.shape}")
    out = np.empty(points.shape[:-2] + (NUM_JOINTS, points.shape[-1]), dtype=np.float64)
    for j, lm in DIRECT.items():
        out[..., j, :] = points[..., lm, :]
    out[..., _J["pelvis"], :] = 0.5 * (points[..., _LM["left_hip"], :]
                                      + points[..., _LM["right_hip"], :])
    out[..., _J["neck"], :] = 0.5 * (points[..., _LM["left_shoulder"], :]
                                    + points[..., _LM["right_shoulder"], :])
    out[..., _J["spine"], :] = 0.5 * (out[..., _J["pelvis"], :] + out[..., _J["neck"], :])
    out[..., _J["head"], :] = 0.5 * (points[..., _LM["left_ear"], :]
                                    + points[..., _LM["right_ear"], :])
    out[..., _J["head_top"], :] = out[..., _J["head"], :] + HEAD_TOP_RATIO * (
        out[..., _J["head"], :] - out[..., _J["neck"], :])
    return out


def map_mask(visibility: np.ndarray, threshold: float = VISIBILITY_THRESHOLD) -> np.ndarray:
    """(..., 33) landmark visibilities to a (..., 17) bool mask: every source landmark visible."""
    visibility = np.asarray(visibility, dtype=np.float64)
    if visibility.ndim < 1 or visibility.shape[-1] != NUM_LANDMARKS:
        raise ValueError(f"Expected visibilities of shape (..., {NUM_LANDMARKS}), "
                         f"got {visibility.shape}")
    visible = visibility >= threshold  # NaN (undefined) compares False: masked out
    mask = np.empty(visibility.shape[:-1] + (NUM_JOINTS,), dtype=bool)
    for j, sources in SOURCES.items():
        mask[..., j] = np.all(visible[..., list(sources)], axis=-1)
    return mask


def root_relative(joints: np.ndarray) -> np.ndarray:
    """Subtract the pelvis from (..., 17, D) joints."""
    joints = np.asarray(joints, dtype=np.float64)
    return joints - joints[..., ROOT:ROOT + 1, :]
