"""Human3.6M as preprocessed by h36m-fetch (`process_all.py`): one `Sample` per frame and camera.

Expected tree under the dataset directory (`<data root>/h36m`)::

    processed/S{n}/{Action}-{subaction}/annot.h5
    processed/S{n}/{Action}-{subaction}/imageSequence/{camera id}/img_{frame:06d}.jpg

Each `annot.h5` holds one row per (camera, frame): ``pose/3d`` (N, 32, 3) camera-space mm,
``pose/3d-univ`` (N, 32, 3) the same at universal skeleton scale, ``camera`` (id such as
54138969), ``frame`` (1-based, as in the image names), ``subject``, ``action`` (2-16),
``subaction``, and per camera ``intrinsics/{id}`` = (fx, cx, fy, cy), fitted by least squares.

MargiPose's protocol #2, followed here: trainval = S1, S5, S6, S7, S8 and test = S9, S11; action
1 ("_ALL") excluded; every camera; the non-universal poses and intrinsics; all joints labelled.
Frames: every 64th for S9 and S11; for the training subjects a frame is kept when some joint has
moved at least 40 mm (universal pose) since the last kept frame of that camera. h36m-fetch applies
the same rules when it extracts images, so applying them again leaves its output unchanged and
thins annotations that list every frame.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from posecontract.geometry import Intrinsics
from training.camera import AUG_3D, reference_box
from training.data.sample import Sample, open_rgb
from training.skeleton import NUM_JOINTS, h36m_to_canonical

SPLITS: dict[str, tuple[int, ...]] = {"trainval": (1, 5, 6, 7, 8), "test": (9, 11)}
TEST_SUBJECTS = frozenset(SPLITS["test"])
# Test subjects: every 64th frame ("Compositional Human Pose Regression" protocol). Training
# subjects: a frame is kept once some joint has moved this far (mm) since the last kept one.
TEST_FRAME_STRIDE = 64
MIN_MOVE_MM = 40.0
EXCLUDED_ACTION = 1  # "_ALL"
ACTIONS: dict[int, str] = {
    2: "Directions", 3: "Discussion", 4: "Eating", 5: "Greeting", 6: "Phoning", 7: "Posing",
    8: "Purchases", 9: "Sitting", 10: "SittingDown", 11: "Smoking", 12: "TakingPhoto",
    13: "Waiting", 14: "Walking", 15: "WalkingDog", 16: "WalkingTogether",
}
_ROW_FIELDS = ("pose/3d", "pose/3d-univ", "camera", "frame", "subject", "action", "subaction")
_H36M_JOINTS = 32


def sparse_frames(frames: np.ndarray) -> np.ndarray:
    """Mask of 1-based frame numbers kept for the test subjects: frames 1, 65, 129, ..."""
    return (np.asarray(frames) - 1) % TEST_FRAME_STRIDE == 0


def moving_frames(poses: np.ndarray, min_move: float = MIN_MOVE_MM) -> np.ndarray:
    """Indices of the poses (N, J, 3) to keep, in order: the first, then each pose in which some
    joint lies at least `min_move` mm from where it was in the last kept pose."""
    poses = np.asarray(poses, dtype=np.float64)
    kept: list[int] = []
    last = None
    for i, pose in enumerate(poses):
        if last is not None and ((pose - last) ** 2).sum(axis=-1).max() < min_move**2:
            continue
        kept.append(i)
        last = pose
    return np.asarray(kept, dtype=np.int64)


def _read(annot: h5py.File, key: str, path: Path) -> np.ndarray:
    """Return dataset `key` of an open annot.h5, or say which file lacks it."""
    if key not in annot:
        raise ValueError(
            f"{path}: missing dataset {key!r}; an h36m-fetch annot.h5 holds "
            f"{', '.join(_ROW_FIELDS)} and intrinsics/<camera id>"
        )
    return annot[key][()]


def _select_rows(rows: dict[str, np.ndarray], subjects: tuple[int, ...]) -> np.ndarray:
    """Row indices of one annot.h5 kept by the split and the frame rules, ordered by
    (subject, camera, frame)."""
    wanted = np.isin(rows["subject"], subjects) & (rows["action"] != EXCLUDED_ACTION)
    kept = []
    for subject in np.unique(rows["subject"][wanted]):
        for camera in np.unique(rows["camera"][wanted]):
            idx = np.flatnonzero(wanted & (rows["subject"] == subject) & (rows["camera"] == camera))
            idx = idx[np.argsort(rows["frame"][idx], kind="stable")]
            if subject in TEST_SUBJECTS:
                idx = idx[sparse_frames(rows["frame"][idx])]
            else:
                idx = idx[moving_frames(rows["pose/3d-univ"][idx])]
            kept.append(idx)
    return np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)


def _read_sequence(path: Path, subjects: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Read the kept rows of one annot.h5: canonical joints, intrinsics and provenance."""
    with h5py.File(path, "r") as annot:
        rows = {key: _read(annot, key, path) for key in _ROW_FIELDS}
        n = len(rows["frame"])
        for key in ("pose/3d", "pose/3d-univ"):
            if rows[key].shape != (n, _H36M_JOINTS, 3):
                raise ValueError(
                    f"{path}: {key} must have shape ({n}, {_H36M_JOINTS}, 3), "
                    f"got {rows[key].shape}"
                )
        for key in _ROW_FIELDS[2:]:
            rows[key] = rows[key].reshape(-1).astype(np.int64)
            if len(rows[key]) != n:
                raise ValueError(f"{path}: {key} has {len(rows[key])} rows, pose/3d has {n}")
        keep = _select_rows(rows, subjects)
        intrinsics = {}
        for camera in np.unique(rows["camera"][keep]):
            key = f"intrinsics/{camera}"
            values = np.asarray(_read(annot, key, path), dtype=np.float64).reshape(-1)
            if values.shape != (4,):
                raise ValueError(f"{path}: {key} must hold (fx, cx, fy, cy), got {values}")
            fx, cx, fy, cy = values
            intrinsics[camera] = (fx, fy, cx, cy)
    out = {key: rows[key][keep] for key in _ROW_FIELDS[2:]}
    out["joints"] = h36m_to_canonical(np.asarray(rows["pose/3d"][keep], dtype=np.float64))
    out["intrinsics"] = np.array([intrinsics[c] for c in out["camera"]]).reshape(-1, 4)
    return out


def _sequence_files(processed: Path, subjects: tuple[int, ...]) -> list[Path]:
    """The annot.h5 files of `subjects`, ordered by subject number, then sequence name."""
    return [p for s in subjects for p in sorted((processed / f"S{s}").glob("*/annot.h5"))]


class Human36M:
    """Human3.6M protocol #2 samples of one split ("trainval" or "test"), as a `SampleSource`.

    `root` is the directory holding ``processed/``. Annotations are indexed at construction;
    images are read in `__getitem__`. Order: subject number, sequence directory, camera, frame.
    """

    has_depth = True

    def __init__(self, root: Path, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"Unknown Human3.6M split {split!r}; choose one of {sorted(SPLITS)}")
        processed = Path(root) / "processed"
        if not processed.is_dir():
            raise FileNotFoundError(
                f"Human3.6M directory {processed} not found; expected the h36m-fetch layout "
                f"{processed}/S<n>/<Action>-<subaction>/annot.h5"
            )
        files = _sequence_files(processed, SPLITS[split])
        if not files:
            raise FileNotFoundError(
                f"No Human3.6M {split} annotations under {processed}: expected "
                f"S<n>/<Action>-<subaction>/annot.h5 for subjects {SPLITS[split]}"
            )
        parts = [_read_sequence(path, SPLITS[split]) for path in files]
        self.name = f"h36m-{split}"
        self._dirs = [path.parent for path in files]
        self._rows = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        self._rows["sequence"] = np.concatenate(
            [np.full(len(p["frame"]), i) for i, p in enumerate(parts)]
        )
        if len(self) == 0:
            raise ValueError(f"No Human3.6M {split} frames left in {processed} after selection")

    def __len__(self) -> int:
        return len(self._rows["frame"])

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"Index {index} out of range for {self.name} of length {len(self)}")
        row = {key: values[index] for key, values in self._rows.items()}
        directory = self._dirs[row["sequence"]]
        camera_id, frame = int(row["camera"]), int(row["frame"])
        path = directory / "imageSequence" / str(camera_id) / f"img_{frame:06d}.jpg"
        camera = Intrinsics(*(float(v) for v in row["intrinsics"]))
        joints = row["joints"].copy()
        action = int(row["action"])
        return Sample(
            image=open_rgb(path),
            camera=camera,
            joints=joints,
            mask=np.ones(NUM_JOINTS, dtype=bool),
            has_depth=True,
            box=reference_box(camera, joints),
            augmentation=AUG_3D,
            meta={
                "dataset": "h36m",
                "subject": int(row["subject"]),
                "sequence": directory.name,
                "action": ACTIONS.get(action, str(action)),
                "action_id": action,
                "subaction": int(row["subaction"]),
                "camera": camera_id,
                "frame": frame,
                "image": str(path),
            },
        )
