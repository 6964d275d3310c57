"""Training-time crops: reference boxes, crop augmentation and targets.

A training example is cut from its source image by `posecontract.geometry.make_crop`: a square
box around the projected ground-truth joints (side 1.5 x their larger extent, as in MargiPose),
jittered, rescaled, turned and mirrored by augmentation parameters. The joints follow the same
transform into the crop camera, are re-ordered left/right when mirrored, and are normalised
with the transformed root depth as z_ref. `ndc_to_camera` undoes all of it for predictions.
The crop is resampled by `posecontract.crop_image.render_crop`, shared with the service so that
both resample alike. Colour augmentation is not geometry and lives with the data pipeline.
"""

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from posecontract.crop_image import render_crop
from posecontract.geometry import (
    Crop,
    Intrinsics,
    crop_points,
    denormalise,
    make_crop,
    normalise,
    uncrop_points,
)
from posecontract.layout import INPUT_SIZE
from training.skeleton import NUM_JOINTS, ROOT, flip_joint_order

# Reference box side relative to the larger extent of the projected joints.
BOX_MARGIN = 1.5
# MPII boxes (Newell's convention): side 250 x scale, centre moved down by 15 x scale.
MPII_BOX_SIDE, MPII_BOX_SHIFT = 250.0, 15.0
# MPII has no camera; MargiPose fakes one with focal length 1.2 x the image width.
MPII_FOCAL_PER_WIDTH = 1.2


@dataclass(frozen=True)
class Box:
    """A square box in source pixels: its centre (u, v) and side."""

    centre: tuple[float, float]
    side: float


@dataclass(frozen=True)
class Augmentation:
    """Distributions of the crop augmentation for one family of datasets."""

    flip_prob: float
    centre_jitter_px: float  # box centre moves by U(-j, j) per axis, in source pixels
    scale_min: float  # the box side is multiplied by a scale in [scale_min, scale_max]
    scale_max: float  # (> 1 zooms out)
    log2_scale_std: float  # 0: scale ~ U(min, max); else 2^clip(N(0, std), log2 min, log2 max)
    rotation_prob: float
    rotation_std_deg: float  # rotation ~ clip(N(0, std), -max, max) with rotation_prob, else 0
    rotation_max_deg: float


# MargiPose's augmentation for the 3D sets (MPI-INF-3DHP, Human3.6M) and for MPII.
AUG_3D = Augmentation(
    flip_prob=0.5, centre_jitter_px=16.0, scale_min=0.9, scale_max=1.1, log2_scale_std=0.0,
    rotation_prob=0.4, rotation_std_deg=30.0, rotation_max_deg=30.0,
)
AUG_MPII = Augmentation(
    flip_prob=0.5, centre_jitter_px=0.0, scale_min=2**-0.5, scale_max=2**0.5,
    log2_scale_std=0.25, rotation_prob=0.4, rotation_std_deg=30.0, rotation_max_deg=60.0,
)


@dataclass(frozen=True)
class CropParams:
    """One draw of the crop augmentation; the defaults leave the reference box unchanged."""

    jitter: tuple[float, float] = (0.0, 0.0)  # added to the box centre, source pixels
    scale: float = 1.0  # multiplies the box side
    rotation: float = 0.0  # radians; content turns counter-clockwise on screen
    flip: bool = False


@dataclass(frozen=True, eq=False)
class CropExample:
    """A rendered crop with its targets."""

    image: np.ndarray  # (size, size, 3) uint8 RGB
    joints: np.ndarray  # (17, 3) crop camera space, mm, left/right swapped if crop.flipped
    target: np.ndarray  # (17, 3) normalised coordinates of `joints`
    z_ref: float  # root depth of `joints`, mm
    crop: Crop


def sample_params(rng: np.random.Generator, aug: Augmentation) -> CropParams:
    """Draw crop augmentation parameters from `aug`'s distributions."""
    flip = bool(rng.random() < aug.flip_prob)
    du, dv = rng.uniform(-aug.centre_jitter_px, aug.centre_jitter_px, size=2)
    if aug.log2_scale_std > 0:
        log2 = rng.normal(0.0, aug.log2_scale_std)
        scale = 2.0 ** np.clip(log2, math.log2(aug.scale_min), math.log2(aug.scale_max))
    else:
        scale = rng.uniform(aug.scale_min, aug.scale_max)
    rotation = 0.0
    if rng.random() < aug.rotation_prob:
        degrees = rng.normal(0.0, aug.rotation_std_deg)
        rotation = math.radians(np.clip(degrees, -aug.rotation_max_deg, aug.rotation_max_deg))
    return CropParams((float(du), float(dv)), float(scale), float(rotation), flip)


def box_around(uv: np.ndarray) -> Box:
    """Square box around 2D points (N, 2): centred on their extent, side 1.5 x its larger side."""
    uv = np.asarray(uv, dtype=np.float64)
    if uv.ndim != 2 or uv.shape[-1] != 2 or len(uv) == 0:
        raise ValueError(f"Box points must have shape (N, 2) with N >= 1, got {uv.shape}")
    low, high = uv.min(axis=0), uv.max(axis=0)
    centre = 0.5 * (low + high)
    side = BOX_MARGIN * float(np.max(high - low))
    if not side > 0:
        raise ValueError(f"The points span no area (extent {high - low}); cannot frame them")
    return Box((float(centre[0]), float(centre[1])), side)


def reference_box(intrinsics: Intrinsics, joints: np.ndarray) -> Box:
    """The reference box of camera-space joints (17, 3): around their projections."""
    joints = np.asarray(joints, dtype=np.float64)
    if np.any(joints[..., 2] <= 0):
        raise ValueError(f"Joints must be in front of the camera (Z > 0), got Z = {joints[..., 2]}")
    return box_around(intrinsics.project(joints))


def mpii_box(centre: tuple[float, float], scale: float) -> Box:
    """The box of an MPII person from its annotated centre and scale."""
    return Box((centre[0], centre[1] + MPII_BOX_SHIFT * scale), MPII_BOX_SIDE * scale)


def mpii_camera(width: int, height: int) -> Intrinsics:
    """The stand-in camera of an MPII image: focal 1.2 x width, principal point at the centre."""
    focal = MPII_FOCAL_PER_WIDTH * width
    return Intrinsics(focal, focal, width / 2, height / 2)


def lift_to_focal_plane(uv: np.ndarray, camera: Intrinsics) -> np.ndarray:
    """Pixels (..., 2) -> camera-space points (..., 3) at depth fx that project back onto them.

    MPII keypoints become pseudo-3D this way, so every target z is 0 and z_ref = fx.
    """
    uv = np.asarray(uv, dtype=np.float64)
    depth = np.full(uv.shape[:-1], camera.fx)
    x = (uv[..., 0] - camera.cx) * depth / camera.fx
    y = (uv[..., 1] - camera.cy) * depth / camera.fy
    return np.stack([x, y, depth], axis=-1)


def augmented_crop(
    intrinsics: Intrinsics, box: Box, params: CropParams, size: int = INPUT_SIZE
) -> Crop:
    """The crop of `box` after jitter, rescaling, rotation and flip by `params`."""
    centre = (box.centre[0] + params.jitter[0], box.centre[1] + params.jitter[1])
    return make_crop(intrinsics, centre, box.side * params.scale, size, params.rotation,
                     params.flip)


def crop_targets(joints: np.ndarray, crop: Crop) -> tuple[np.ndarray, np.ndarray, float]:
    """Camera-space canonical joints (17, 3) -> (crop joints (17, 3), normalised (17, 3), z_ref).

    Mirrored crops swap left and right joints, so the model always sees canonical order.
    """
    joints = np.asarray(joints, dtype=np.float64)
    if joints.shape != (NUM_JOINTS, 3):
        raise ValueError(f"Joints must have shape ({NUM_JOINTS}, 3), got {joints.shape}")
    moved = crop_points(crop, joints)
    if crop.flipped:
        moved = flip_joint_order(moved)
    # The crop steps never change depth, so this is also the original root depth.
    z_ref = float(moved[ROOT, 2])
    target = normalise(moved, crop.camera, z_ref, crop.size, crop.size)
    return moved, target, z_ref


def inside_crop(target: np.ndarray) -> np.ndarray:
    """Mask (..., 17) of normalised joints (..., 17, 3) strictly inside the crop (|x|, |y| < 1)."""
    target = np.asarray(target)
    return np.all(np.abs(target[..., :2]) < 1, axis=-1)


def ndc_to_camera(ndc: np.ndarray, crop: Crop, z_ref: float) -> np.ndarray:
    """Normalised joints (..., 17, 3) predicted in `crop` -> original camera space, mm,
    canonical order."""
    points = denormalise(ndc, crop.camera, z_ref, crop.size, crop.size)
    if crop.flipped:
        points = flip_joint_order(points)
    return uncrop_points(crop, points)


def crop_example(
    image: Image.Image,
    intrinsics: Intrinsics,
    joints: np.ndarray,
    params: CropParams,
    box: Box | None = None,
    size: int = INPUT_SIZE,
) -> CropExample:
    """Cut one training example: crop `box` (default: the joints' reference box) of `image`
    augmented by `params`, with the joints (17, 3, camera-space mm) as normalised targets."""
    if box is None:
        box = reference_box(intrinsics, joints)
    crop = augmented_crop(intrinsics, box, params, size)
    moved, target, z_ref = crop_targets(joints, crop)
    return CropExample(render_crop(image, crop), moved, target, z_ref, crop)
