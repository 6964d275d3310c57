"""Framing a partly seen person the way the model was trained to see a whole one.

The model learnt positions mostly on crops framed around the whole body (the reference box: the
joints' extent x 1.5). A box around only what is seen (a portrait, a user who boxes the upper
body, the service's own box around the joints it found) shows the body two or three times
larger than that, and the seen joints come back worse (session 16's measurement: 12.5 crop
pixels on real2d-val's tight boxes against 4.3 on whole bodies).

`full_body_frame` estimates, from one pass's seen joints, where the crop of the whole body would
be: it fits the seen joints to `BODY_TEMPLATE` (where each joint sits, on average, in an upright
person's reference crop) by a scale and a shift, weighted least squares, and returns the
template crop's centre and size in the pass's own normalised coordinates. The serving core runs
one more pass on that crop when it is clearly larger than the one it had (`REFRAME_MIN_SCALE`).
Rotation is not fitted: the template's sideways extent is small (people face every way), so the
scale comes from the vertical spread of the seen joints, and crops stay upright.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posecontract.geometry import Crop, Intrinsics, make_crop, uncrop_pixels
from posecontract.skeleton import NUM_JOINTS

# Normalised (x, y) of each joint (canonical order) in the reference crop of an upright person,
# the median over 1,006 upright people of synthetic-train and real2d3d-train, mirrored and
# averaged so left and right agree (`python -m training.framing template --data-root build`).
BODY_TEMPLATE = np.array([
    [0.000, -0.667],   # head_top
    [0.000, -0.419],   # neck
    [-0.019, -0.408],  # right_shoulder
    [-0.055, -0.220],  # right_elbow
    [-0.044, -0.077],  # right_wrist
    [0.019, -0.408],   # left_shoulder
    [0.055, -0.220],   # left_elbow
    [0.044, -0.077],   # left_wrist
    [-0.012, 0.014],   # right_hip
    [-0.001, 0.323],   # right_knee
    [0.000, 0.667],    # right_ankle
    [0.012, 0.014],    # left_hip
    [0.001, 0.323],    # left_knee
    [0.000, 0.667],    # left_ankle
    [0.000, 0.017],    # pelvis
    [0.000, -0.217],   # spine
    [0.000, -0.610],   # head
])
MIN_FIT_JOINTS = 3  # fewer seen joints than this give no frame
# Re-frame only when the whole body's crop would be this much larger than the present one. Chosen
# on training splits (`training.framing evaluate --min-scale 1.1 1.2 1.3 1.5 2`, real2d3d-train
# and synthetic-train): the largest gain on cut and tight views that leaves whole bodies alone
# (1.2 re-framed 20 % of real2d3d-train's whole bodies, which are framed tightly, for +0.17 px).
REFRAME_MIN_SCALE = 1.3
MAX_SCALE = 4.0  # a frame more than 4x the present crop is not trusted (a failed first pass)


@dataclass(frozen=True)
class Frame:
    """The whole body's crop in a pass's normalised coordinates: centre (x, y) and `scale`, its
    side over the present crop's side."""

    centre: tuple[float, float]
    scale: float


def full_body_frame(coords: np.ndarray, visibility: np.ndarray, threshold: float = 0.5
                    ) -> Frame | None:
    """The crop of the whole body from one pass: `coords` (17, >= 2) normalised joints and
    `visibility` (17,) in-view probabilities; the joints at or above `threshold` are fitted.
    None when fewer than MIN_FIT_JOINTS are seen, their vertical and sideways spread fit no
    positive scale, or the scale is beyond MAX_SCALE."""
    coords, visibility = np.asarray(coords, np.float64), np.asarray(visibility, np.float64)
    if coords.shape[0] != NUM_JOINTS or coords.ndim != 2 or coords.shape[1] < 2:
        raise ValueError(f"coords must have shape ({NUM_JOINTS}, 2 or 3), got {coords.shape}")
    if visibility.shape != (NUM_JOINTS,):
        raise ValueError(f"visibility must have shape ({NUM_JOINTS},), got {visibility.shape}")
    seen = (visibility >= threshold) & np.isfinite(coords[:, :2]).all(axis=1)
    if int(seen.sum()) < MIN_FIT_JOINTS:
        return None
    m, p = BODY_TEMPLATE[seen], coords[seen, :2]
    dm, dp = m - m.mean(axis=0), p - p.mean(axis=0)
    spread = float((dm**2).sum())
    if spread <= 0:
        return None
    scale = float((dm * dp).sum()) / spread
    if not 0 < scale <= MAX_SCALE:
        return None
    centre = p.mean(axis=0) - scale * m.mean(axis=0)  # where the template's origin lands
    return Frame((float(centre[0]), float(centre[1])), scale)


def crop_side(crop: Crop) -> float:
    """The side of `crop` in source pixels."""
    return crop.size / abs(np.linalg.det(crop.pixel_matrix[:2, :2])) ** 0.5


def frame_crop(crop: Crop, frame: Frame, intrinsics: Intrinsics) -> Crop:
    """The crop of `frame` (found on a pass through `crop`) in the source image of camera
    `intrinsics`: centred where the frame's centre lands, `frame.scale` x the side, the same
    output size."""
    centre = uncrop_pixels(crop, (np.asarray(frame.centre) + 1) * crop.size / 2)
    return make_crop(intrinsics, (float(centre[0]), float(centre[1])),
                     crop_side(crop) * frame.scale, crop.size)
