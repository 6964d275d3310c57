"""Helpers of the geometry tests: the inverse of `uncrop_pixels`, and a second scale measure
for `root_depth_from_scale`. Only tests use them, so they live here, not in the contract."""

from collections.abc import Callable

import numpy as np

from posecontract.geometry import Crop
from posecontract.skeleton import BONES


def crop_pixels(crop: Crop, uv: np.ndarray) -> np.ndarray:
    """Map original pixel coordinates (..., 2) into the crop."""
    uv = np.asarray(uv, dtype=np.float64)
    return uv @ crop.pixel_matrix[:2, :2].T + crop.pixel_matrix[:2, 2]


def bone_length_ratio(reference: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Scale measure relative to a `reference` skeleton (17, 3): the inverse of the median over
    the 16 bones of (reference length / predicted length). It is 1 at the reference's size, so
    use it with `root_depth_from_scale(..., target=1.0)`.
    """
    reference = np.asarray(reference, dtype=np.float64)
    ref = np.array([np.linalg.norm(reference[j] - reference[p]) for j, p in BONES])

    def measure(joints: np.ndarray) -> np.ndarray:
        joints = np.asarray(joints, dtype=np.float64)
        lengths = np.stack(
            [np.linalg.norm(joints[..., j, :] - joints[..., p, :], axis=-1) for j, p in BONES],
            axis=-1,
        )
        # A collapsed bone gives an infinite ratio, which the median outvotes unless most are.
        with np.errstate(divide="ignore"):
            return 1.0 / np.median(ref / lengths, axis=-1)

    return measure
