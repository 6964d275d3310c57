"""Model outputs of one person crop -> pixels, camera millimetres and uncertainty.

Everything goes through `posecontract.geometry`, the convention the model was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posecontract.geometry import (
    Crop,
    denormalise,
    root_depth_from_scale,
    uncrop_pixels,
    uncrop_points,
)
from posecontract.skeleton import ROOT

_FD_STEP = 1e-4  # finite-difference step in normalised units for the Jacobian
# Fallback when the knee-neck prior cannot apply: crops frame people at 1.5x their extent,
# so a 1.7 m person's crop is about 2.55 m wide at the pelvis.
CROP_WIDTH_PRIOR_MM = 2550.0


@dataclass(frozen=True)
class PersonPose:
    """One person's joints (17 rows each)."""

    pixels: np.ndarray         # (17, 2) original-image pixels (u, v)
    camera_mm: np.ndarray      # (17, 3) original camera space, mm
    relative_mm: np.ndarray    # (17, 3) camera-space offsets from the pelvis, mm
    normalised: np.ndarray     # (17, 3) the model's output
    uncertainty_mm: np.ndarray  # (17, 3) one standard deviation per camera axis, mm
    root_depth_mm: float
    root_depth_source: str     # "request", "knee_neck_prior" or "crop_size_prior"


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


def person_pose(ndc: np.ndarray, std: np.ndarray, crop: Crop,
                root_depth_mm: float | None = None) -> PersonPose:
    """Turn one crop's normalised output into a PersonPose in the original camera."""
    ndc = np.asarray(ndc, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    if root_depth_mm is None:
        try:
            z_ref, source = float(root_depth_from_scale(ndc, crop)), "knee_neck_prior"
        except ValueError:  # a collapsed skeleton has no knee-neck length to measure
            z_ref, source = crop_size_depth(crop), "crop_size_prior"
    else:
        z_ref, source = float(root_depth_mm), "request"
    camera_mm = _to_camera(ndc, crop, z_ref)
    return PersonPose(
        pixels=ndc_to_pixels(ndc, crop),
        camera_mm=camera_mm,
        relative_mm=camera_mm - camera_mm[ROOT],
        normalised=ndc,
        uncertainty_mm=uncertainty_mm(ndc, std, crop, z_ref),
        root_depth_mm=z_ref,
        root_depth_source=source,
    )
