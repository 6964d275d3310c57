"""The one sample format every data source yields, so that new sources plug in.

A `Sample` is one person in one image before any augmentation: the full source image, the camera
that took it, the person's 17 canonical joints in that camera's space (mm), which joints are
labelled, whether their depth is real, the reference box to crop, and the augmentation family
the source uses. 2D-only sources (MPII) lift their keypoints onto the focal plane
(`training.camera.lift_to_focal_plane`), so every source goes through one crop pipeline; their
`has_depth` is False and the loss then ignores depth. Samples whose depth is a teacher model's
estimate (`real2d3d`) keep `has_depth` False and set `teacher_depth`: the loss weights their
depth by the run's teacher depth weight (`training.losses.depth_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from posecontract.geometry import Intrinsics
from training.camera import Augmentation, Box
from training.skeleton import NUM_JOINTS


@dataclass(frozen=True, eq=False)
class Sample:
    """One labelled person in one source image."""

    image: Image.Image  # RGB, full source frame
    camera: Intrinsics  # of `image`, in its pixels
    joints: np.ndarray  # (17, 3) float64 canonical joints, camera space, mm (pseudo-3D if 2D-only)
    mask: np.ndarray  # (17,) bool: joint is labelled
    has_depth: bool  # joints carry real depth (3D sources) rather than a focal-plane lift
    box: Box  # reference crop box in `image` pixels (before augmentation)
    augmentation: Augmentation  # the augmentation family of the source (AUG_3D / AUG_MPII)
    # Provenance: at least "dataset"; also "subject", "sequence", "action"/"activity", "camera",
    # "frame" where the source has them. Evaluation groups its tables by these.
    meta: dict[str, Any] = field(default_factory=dict)
    # joints carry a teacher's depth estimate (has_depth False): the loss weights their depth
    teacher_depth: bool = False
    # (17,) bool: labelled joints hidden behind something in the picture (not the body itself);
    # None where the source does not know (they count as in view)
    occluded: np.ndarray | None = None
    # (17,) bool: labelled joints behind the person's own body (a far arm in a side view). Not in
    # view, but their positions stay supervised: the body says where they are. None: not known
    self_occluded: np.ndarray | None = None

    def __post_init__(self) -> None:
        joints = np.asarray(self.joints, dtype=np.float64)
        mask = np.asarray(self.mask, dtype=bool)
        if joints.shape != (NUM_JOINTS, 3):
            raise ValueError(f"Sample.joints must have shape ({NUM_JOINTS}, 3), got {joints.shape}")
        if mask.shape != (NUM_JOINTS,):
            raise ValueError(f"Sample.mask must have shape ({NUM_JOINTS},), got {mask.shape}")
        if self.has_depth and self.teacher_depth:
            raise ValueError("A Sample's depth is either ground truth (has_depth) or a teacher's "
                             "estimate (teacher_depth), not both")
        if self.image.mode != "RGB":
            raise ValueError(f"Sample.image must be RGB, got mode {self.image.mode}")
        object.__setattr__(self, "joints", joints)
        object.__setattr__(self, "mask", mask)
        for name in ("occluded", "self_occluded"):
            if getattr(self, name) is not None:
                flags = np.asarray(getattr(self, name), dtype=bool)
                if flags.shape != (NUM_JOINTS,):
                    raise ValueError(f"Sample.{name} must have shape ({NUM_JOINTS},), "
                                     f"got {flags.shape}")
                object.__setattr__(self, name, flags)


@runtime_checkable
class SampleSource(Protocol):
    """A map-style dataset of `Sample`s (what the readers implement)."""

    name: str  # e.g. "h36m-trainval"
    has_depth: bool  # every sample is 3D (True) or every sample is 2D-only (False)

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


class ListSource:
    """A `SampleSource` over samples held in memory (tests, tiny experiments)."""

    def __init__(self, name: str, samples: Sequence[Sample]) -> None:
        if not samples:
            raise ValueError(f"{name}: a source needs at least one sample")
        depth = {s.has_depth for s in samples}
        if len(depth) != 1:
            raise ValueError(f"{name}: mixes 3D and 2D-only samples; split it into two sources")
        self.name = name
        self.has_depth = depth.pop()
        self._samples = list(samples)

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> Sample:
        return self._samples[index]


def open_rgb(path: Path) -> Image.Image:
    """Load a source's image file as RGB, closing the file; a missing file is named."""
    if not path.is_file():
        raise FileNotFoundError(f"Image {path} is missing")
    with Image.open(path) as image:
        return image.convert("RGB")
