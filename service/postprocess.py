"""Model outputs of one person crop -> pixels, camera millimetres and uncertainty.

Everything goes through `posecontract.geometry`, the convention the model was trained with.

Models with a visibility head also say per joint whether it is in view. Then:

- the **uncertainty** of a joint is that of a mixture: with probability v (its visibility) the
  joint is where its heatmap says (the heatmap's spread), otherwise it is somewhere outside the
  picture or behind something, about UNSEEN_STD_MM from the guess per axis. The reported
  standard deviation is sqrt(v s^2 + (1 - v) UNSEEN_STD_MM^2): a seen joint keeps its heatmap's
  spread, an unseen one is never reported as precise (a heatmap clamped to the crop's edge is
  narrow, not certain).
- the **root depth** comes from bones that are seen (`ROOT_DEPTH_PRIORS`): the reference's
  knee-neck length (a thigh, pelvis-spine, spine-neck) when a knee, its hip, the pelvis, the
  spine and the neck are in view; else the trunk and head (pelvis-spine-neck-head-head top); else
  the shoulders and head (shoulder to neck to shoulder, neck-head-head top: a portrait); else
  the crop-size prior. Models without the head keep the knee-neck prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poseapi.values import SEEN_VISIBILITY
from posecontract.geometry import (
    KNEE_NECK_MM,
    Crop,
    denormalise,
    root_depth_from_scale,
    uncrop_pixels,
    uncrop_points,
)
from posecontract.skeleton import FLIP_PERMUTATION, JOINT_NAMES, ROOT

_FD_STEP = 1e-4  # finite-difference step in normalised units for the Jacobian
# Fallback when the knee-neck prior cannot apply: crops frame people at 1.5x their extent,
# so a 1.7 m person's crop is about 2.55 m wide at the pelvis.
CROP_WIDTH_PRIOR_MM = 2550.0
# Visibility at which a joint counts as seen for the root-depth priors (the API's one rule).
SEEN = SEEN_VISIBILITY
# Per-axis spread of an unseen joint about the model's guess: about a forearm or a shin, the
# distance an unseen joint may lie from where a body's seen joints suggest.
UNSEEN_STD_MM = 300.0


def _path(*names: str) -> tuple[tuple[int, int], ...]:
    """Consecutive joint pairs along a path of joint names."""
    index = [JOINT_NAMES.index(n) for n in names]
    return tuple(zip(index[:-1], index[1:], strict=True))


@dataclass(frozen=True)
class RootDepthPrior:
    """A length prior: the bones it sums, the length they have on average, its name."""

    source: str
    bones: tuple[tuple[int, int], ...]
    length_mm: float

    @property
    def joints(self) -> set[int]:
        return {j for bone in self.bones for j in bone}

    def measure(self, joints: np.ndarray) -> np.ndarray:
        """The summed bone lengths of skeletons (..., 17, 3)."""
        return sum(np.linalg.norm(joints[..., a, :] - joints[..., b, :], axis=-1)
                   for a, b in self.bones)


# The reference's knee-neck prior (either thigh: the skeletons are symmetric on average), then
# the upper-body paths. Their lengths keep the knee-neck prior's scale: 920 mm times the mean
# ratio of each path to the knee-neck length over 400 people of synthetic-train, the skeleton
# convention the model is trained on (trunk and head 0.925, coefficient of variation 4.9 %;
# shoulders and head 0.778, 6.9 %: both vary less across people than the knee-neck length itself).
_TRUNK = ("pelvis", "spine", "neck")
ROOT_DEPTH_PRIORS: tuple[RootDepthPrior, ...] = (
    RootDepthPrior("knee_neck_prior", _path("left_knee", "left_hip") + _path(*_TRUNK),
                   KNEE_NECK_MM),
    RootDepthPrior("knee_neck_prior", _path("right_knee", "right_hip") + _path(*_TRUNK),
                   KNEE_NECK_MM),
    RootDepthPrior("torso_head_prior", _path(*_TRUNK, "head", "head_top"),
                   KNEE_NECK_MM * 0.9248),
    RootDepthPrior("shoulder_head_prior",
                   _path("right_shoulder", "neck", "left_shoulder")
                   + _path("neck", "head", "head_top"), KNEE_NECK_MM * 0.778),
)


@dataclass(frozen=True)
class PersonPose:
    """One person's joints (17 rows each)."""

    pixels: np.ndarray         # (17, 2) original-image pixels (u, v)
    camera_mm: np.ndarray      # (17, 3) original camera space, mm
    relative_mm: np.ndarray    # (17, 3) camera-space offsets from the pelvis, mm
    normalised: np.ndarray     # (17, 3) the model's output
    uncertainty_mm: np.ndarray  # (17, 3) one standard deviation per camera axis, mm
    root_depth_mm: float
    root_depth_source: str     # "request", a prior of ROOT_DEPTH_PRIORS, or "crop_size_prior"
    visibility: np.ndarray | None = None  # (17,) in-view probability; None: the model has none


def seen_joints(pixels: np.ndarray, visibility: np.ndarray | None) -> np.ndarray:
    """The rows of `pixels` (17, 2) the model says are seen (visibility >= SEEN), when it says
    and at least three are; else all of them (what the auto-crop, video mode and the tracker's
    person size look at)."""
    if visibility is not None:
        seen = np.asarray(visibility) >= SEEN
        if int(seen.sum()) >= 3:
            return pixels[seen]
    return pixels


def _to_camera(ndc: np.ndarray, crop: Crop, z_ref: float) -> np.ndarray:
    return uncrop_points(crop, denormalise(ndc, crop.camera, z_ref, crop.size, crop.size))


def ndc_to_pixels(ndc: np.ndarray, crop: Crop) -> np.ndarray:
    """Normalised (..., 3) -> original-image pixels (..., 2)."""
    cam = crop.camera
    crop_uv = np.stack([cam.cx * (1 + ndc[..., 0]), cam.cy * (1 + ndc[..., 1])], axis=-1)
    return uncrop_pixels(crop, crop_uv)


def uncertainty_mm(ndc: np.ndarray, std: np.ndarray, crop: Crop, z_ref: float) -> np.ndarray:
    """Propagate per-coordinate normalised std (17, 3) to camera-space mm per axis (17, 3).

    First-order: Sigma_mm = J diag(std^2) J^T with J the Jacobian of normalised -> camera mm
    at the prediction (central differences), for the given root depth. The spread of the
    root depth itself (the global scale) is not included.
    """
    jac = np.empty((*ndc.shape, 3))  # (17, 3 outputs, 3 inputs)
    for axis in range(3):
        step = np.zeros(3)
        step[axis] = _FD_STEP
        plus, minus = _to_camera(ndc + step, crop, z_ref), _to_camera(ndc - step, crop, z_ref)
        jac[..., axis] = (plus - minus) / (2 * _FD_STEP)
    var = np.einsum("jab,jb->ja", jac**2, std**2)
    return np.sqrt(var)


def crop_size_depth(crop: Crop) -> float:
    """Root depth at which the crop is CROP_WIDTH_PRIOR_MM wide: a person-sized crop."""
    return CROP_WIDTH_PRIOR_MM * crop.camera.fx / crop.size


def infer_root_depth(ndc: np.ndarray, crop: Crop, visibility: np.ndarray | None = None
                     ) -> tuple[float, str]:
    """Root depth (mm) and its source, from the first prior of ROOT_DEPTH_PRIORS whose joints
    are all seen. Without `visibility` (a model without the head) only the reference's
    knee-neck prior (left thigh) applies, as before the head existed."""
    if visibility is None:
        priors, seen = ROOT_DEPTH_PRIORS[:1], np.ones(len(ndc), dtype=bool)
    else:
        priors, seen = ROOT_DEPTH_PRIORS, np.asarray(visibility) >= SEEN
    if crop.flipped:  # mirrored joint order; the priors name canonical joints
        seen = seen[list(FLIP_PERMUTATION)]
    for prior in priors:
        if not seen[list(prior.joints)].all():
            continue
        try:
            return (float(root_depth_from_scale(ndc, crop, prior.measure, prior.length_mm)),
                    prior.source)
        except ValueError:  # a collapsed skeleton has no length to measure
            continue
    return crop_size_depth(crop), "crop_size_prior"


def blend_unseen(std_mm: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    """Per-axis standard deviation (17, 3) of the seen/unseen mixture (module docstring)."""
    v = np.clip(np.asarray(visibility, dtype=np.float64), 0.0, 1.0)[:, None]
    return np.sqrt(v * std_mm**2 + (1.0 - v) * UNSEEN_STD_MM**2)


def person_pose(ndc: np.ndarray, std: np.ndarray, crop: Crop,
                root_depth_mm: float | None = None,
                visibility: np.ndarray | None = None) -> PersonPose:
    """Turn one crop's normalised output into a PersonPose in the original camera."""
    ndc = np.asarray(ndc, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    if visibility is not None:
        visibility = np.asarray(visibility, dtype=np.float64)
    if root_depth_mm is None:
        z_ref, source = infer_root_depth(ndc, crop, visibility)
    else:
        z_ref, source = float(root_depth_mm), "request"
    camera_mm = _to_camera(ndc, crop, z_ref)
    spread = uncertainty_mm(ndc, std, crop, z_ref)
    if visibility is not None:
        spread = blend_unseen(spread, visibility)
    return PersonPose(
        pixels=ndc_to_pixels(ndc, crop),
        camera_mm=camera_mm,
        relative_mm=camera_mm - camera_mm[ROOT],
        normalised=ndc,
        uncertainty_mm=spread,
        root_depth_mm=z_ref,
        root_depth_source=source,
        visibility=visibility,
    )
