"""Mocap-derived motion clips in our canonical joint frame (`assets/motions.npz`).

Source: the 15 DeepMimic clips shipped in pybullet 3.2.7 (`pybullet_data/data/motions/
humanoid3d_*.txt`, 1,620 frames; pybullet is zlib-licensed, the clips come from DeepMimic, MIT),
converted by `scripts/export_anny_asset.py`.

A DeepMimic frame is: duration, root position (3), root orientation quaternion, then for the
joints chest, neck, right hip, knee, ankle, shoulder, elbow, left hip, knee, ankle, shoulder,
elbow a quaternion each, except the hinges (knees, elbows): one angle about the joint's z axis.
Quaternions are (w, x, y, z) and local: each rotates its segment relative to its parent, and
in the rest pose (all identity) the humanoid stands upright with straight legs and arms hanging
down, every joint frame aligned with the world (DeepMimic axes: y up, x forward, z to the
person's right). The root orientation is global.

We store each rotation as a unit quaternion (w, x, y, z; float16) in the *canonical frame*:
Anny's axes (z up, the person facing -y, their left towards +x), that is R = C R_dm C^T with
`DEEPMIMIC_TO_ANNY` = C. Rest is the same upright arms-down stance. Root positions are dropped
(the renderer places the body itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from training.synthetic import rotations

MOTIONS = Path(__file__).with_name("assets") / "motions.npz"

# The joint order of a stored frame: the root, then the DeepMimic joints in file order.
CLIP_JOINTS: tuple[str, ...] = (
    "root", "chest", "neck",
    "right_hip", "right_knee", "right_ankle", "right_shoulder", "right_elbow",
    "left_hip", "left_knee", "left_ankle", "left_shoulder", "left_elbow",
)
# DeepMimic (x forward, y up, z right) -> Anny (x left, y back, z up): x_a = -z, y_a = -x, z_a = y.
DEEPMIMIC_TO_ANNY = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])

# Clips held out for the test split (different motions from those seen in training).
TEST_CLIPS: tuple[str, ...] = ("dance_b", "kick", "getup_faceup")


@dataclass(frozen=True, eq=False)
class MotionLibrary:
    """All clip frames as rotation matrices."""

    rotations: np.ndarray  # (N, 13, 3, 3) per CLIP_JOINTS, canonical frame
    clip: np.ndarray  # (N,) clip index of each frame
    clip_names: tuple[str, ...]

    def frames(self, split: str) -> np.ndarray:
        """Indices of the frames of the clips in `split`: "test" is `TEST_CLIPS`, "train" the
        rest."""
        if split not in ("train", "test"):
            raise ValueError(f"Unknown split {split!r}; choose train or test")
        held = np.isin(np.array(self.clip_names)[self.clip], TEST_CLIPS)
        return np.flatnonzero(held if split == "test" else ~held)


def load_motions(path: Path = MOTIONS) -> MotionLibrary:
    """Read the converted clips (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Motion clips {path} not found; they are committed under training/synthetic/"
            "assets/ or rebuilt with scripts/export_anny_asset.py"
        )
    with np.load(path, allow_pickle=False) as z:
        quats = z["quaternions"].astype(np.float64)
        clip = z["clip"].astype(np.int64)
        names = tuple(str(n) for n in z["clip_names"])
    if quats.ndim != 3 or quats.shape[1:] != (len(CLIP_JOINTS), 4):
        raise ValueError(f"{path}: quaternions must be (N, {len(CLIP_JOINTS)}, 4), "
                         f"got {quats.shape}")
    return MotionLibrary(rotations.from_quaternion(quats), clip, names)


@cache
def default_motions() -> MotionLibrary:
    """The committed clips, loaded once per process."""
    return load_motions(MOTIONS)
