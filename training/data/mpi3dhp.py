"""MPI-INF-3DHP as preprocessed by MargiPose (`preprocess_mpi3d`): a `Sample` per frame and camera.

Expected tree under the dataset directory (`<data root>/mpi3d`)::

    {train,val}/S{s}/Seq{q}/metadata.h5        joints3d (14, F, 28, 3): annot3, camera-space mm;
                                               scale (1,); interesting_frames/camera{c} (0-based)
    {train,val}/S{s}/Seq{q}/camera.calibration the dataset's calibration file (all 14 cameras)
    {train,val}/S{s}/Seq{q}/imageSequence/video_{c}/img_{frame+1:06d}.jpg    (768 x 768)
    test/S{t}/Seq1/metadata.h5                 joints3d (1, F, 17, 3) in canonical order; scale;
                                               interesting_frames/camera0 (the valid frames)
    test/S{t}/Seq1/annot_data.mat              activity_annotation, valid_frame (per frame)
    test/S{t}/Seq1/camera.calibration          camera 0 fitted to annot2/annot3 (original size)
    test/S{t}/Seq1/imageSequence/video_0/img_{frame+1:06d}.jpg    (height 768)

Splits follow the preprocessing: `train/` holds S1-S8 x Seq1-2 except S4/Seq1 and S8/Seq2, which
are in `val/`; "trainval" reads both; `test/` holds TS1-TS6 as S1-S6. Training cameras are the
VNect set (S6/Seq2 camera 2 is blacklisted: its video is short); the test set uses camera 0 and
only `valid_frame` frames. Ground truth is annot3 / scale, scaled about the camera origin (so
root-relative it equals univ_annot3). Calibrated intrinsics are for the original frame size and
are rescaled by (image size / calibration size), e.g. 768 / 2048.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from posecontract.geometry import Intrinsics
from training.camera import AUG_3D, reference_box
from training.data.sample import Sample, open_rgb
from training.skeleton import NUM_JOINTS, mpi3dhp_to_canonical

SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("train",), "val": ("val",), "trainval": ("train", "val"), "test": ("test",),
}
VNECT_CAMERAS = frozenset({0, 1, 2, 4, 5, 6, 7, 8})
BLACKLIST: dict[tuple[int, int], frozenset[int]] = {(6, 2): frozenset({2})}  # (subject, seq)
ACTIVITIES: dict[int, str] = {
    1: "Standing/Walking", 2: "Exercising", 3: "Sitting", 4: "Reaching/Crouching",
    5: "On The Floor", 6: "Sports", 7: "Miscellaneous",
}
_TRAIN_JOINTS = 28


def parse_calibration(path: Path) -> dict[int, tuple[np.ndarray, tuple[float, float]]]:
    """Read an MPI-INF-3DHP camera.calibration: camera name -> (3x3 intrinsics, (width, height))
    of the image size the intrinsics are for."""
    if not path.is_file():
        raise FileNotFoundError(f"Camera calibration {path} is missing")
    cameras: dict[int, dict[str, np.ndarray]] = {}
    current: dict[str, np.ndarray] | None = None
    for line in path.read_text().splitlines()[1:]:  # the first line is a title
        fields = line.split()
        if not fields:
            continue
        key, values = fields[0], fields[1:]
        if key == "name":
            current = cameras.setdefault(int(values[0]), {})
        elif key in ("size", "intrinsic"):
            if current is None:
                raise ValueError(f"{path}: {key!r} appears before any 'name' line")
            current[key] = np.array([float(v) for v in values])
    out = {}
    for name, props in cameras.items():
        size, intrinsic = props.get("size"), props.get("intrinsic")
        if size is None or size.shape != (2,) or intrinsic is None or intrinsic.shape != (16,):
            raise ValueError(
                f"{path}: camera {name} needs 'size' (2 numbers) and 'intrinsic' (16 numbers)"
            )
        out[name] = (intrinsic.reshape(4, 4)[:3, :3], (float(size[0]), float(size[1])))
    return out


def read_mat(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read variables of a MATLAB file, v7.3 (HDF5, as distributed) or older (scipy)."""
    if not path.is_file():
        raise FileNotFoundError(f"MATLAB file {path} is missing")
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as mat:
            found = {key: mat[key][()] for key in keys if key in mat}
    else:
        found = scipy.io.loadmat(path, variable_names=list(keys))
    missing = [key for key in keys if key not in found]
    if missing:
        raise ValueError(f"{path}: missing variable(s) {', '.join(missing)}")
    return {key: np.asarray(found[key]) for key in keys}


def _sequence_dirs(directory: Path) -> list[tuple[int, int, Path]]:
    """(subject, sequence, path) of the S{s}/Seq{q} directories holding metadata.h5, in order."""
    found = []
    for path in directory.glob("S*/Seq*/metadata.h5"):
        subject = re.fullmatch(r"S(\d+)", path.parent.parent.name)
        seq = re.fullmatch(r"Seq(\d+)", path.parent.name)
        if subject and seq:
            found.append((int(subject[1]), int(seq[1]), path.parent))
    return sorted(found)


def _read_sequence(
    directory: Path, subject: int, seq: int, test: bool
) -> tuple[float, list[dict[str, np.ndarray]]]:
    """Read one sequence: its universal scale and, per selected camera, the canonical joints at
    universal scale, frame indices and (test set) activities of its selected frames."""
    path = directory / "metadata.h5"
    joint_count = NUM_JOINTS if test else _TRAIN_JOINTS
    if test:
        mat = read_mat(directory / "annot_data.mat", ("activity_annotation", "valid_frame"))
        activity = mat["activity_annotation"].reshape(-1).astype(np.int64)
        valid = mat["valid_frame"].reshape(-1) == 1
    with h5py.File(path, "r") as meta:
        for key in ("joints3d", "scale", "interesting_frames"):
            if key not in meta:
                raise ValueError(
                    f"{path}: missing {key!r}; MargiPose's metadata.h5 holds joints3d, scale "
                    f"and interesting_frames/camera<c>"
                )
        joints3d = meta["joints3d"]
        if joints3d.ndim != 4 or joints3d.shape[2:] != (joint_count, 3):
            raise ValueError(
                f"{path}: joints3d must have shape (cameras, frames, {joint_count}, 3) in the "
                f"{'test' if test else 'train/val'} layout, got {joints3d.shape}"
            )
        n_cameras, n_frames = joints3d.shape[:2]
        if test and (len(activity) != n_frames or len(valid) != n_frames):
            raise ValueError(
                f"{directory / 'annot_data.mat'}: activity_annotation and valid_frame need "
                f"{n_frames} entries (one per frame), got {len(activity)} and {len(valid)}"
            )
        scale = float(np.asarray(meta["scale"][()]).reshape(-1)[0])
        groups = {}
        for key in meta["interesting_frames"]:
            match = re.fullmatch(r"camera(\d+)", key)
            if match is None:
                raise ValueError(f"{path}: unexpected interesting_frames/{key}; want camera<c>")
            groups[int(match[1])] = np.asarray(meta["interesting_frames"][key][()], np.int64)
        blacklist = BLACKLIST.get((subject, seq), frozenset())
        cameras = sorted(
            c for c in groups if (c == 0 if test else c in VNECT_CAMERAS) and c not in blacklist
        )
        parts = []
        for camera in cameras:
            frames = groups[camera]
            if camera >= n_cameras or np.any(frames < 0) or np.any(frames >= n_frames):
                raise ValueError(
                    f"{path}: interesting_frames/camera{camera} points outside joints3d "
                    f"({n_cameras} cameras, {n_frames} frames)"
                )
            if test:
                frames = frames[valid[frames]]
            joints = np.asarray(joints3d[camera], dtype=np.float64)[frames] / scale
            parts.append({
                "joints": joints if test else mpi3dhp_to_canonical(joints),
                "camera": np.full(len(frames), camera, dtype=np.int64),
                "frame": frames,
                "activity": activity[frames] if test else np.zeros(len(frames), np.int64),
            })
    return scale, parts


class MpiInf3dhp:
    """MPI-INF-3DHP samples of one split ("train", "val", "trainval" or "test"), as a
    `SampleSource`.

    `root` is the directory holding ``train/``, ``val/`` and ``test/``. Annotations and
    calibrations are indexed at construction; images are read in `__getitem__`. Order: split
    directory, subject, sequence, camera, frame.
    """

    has_depth = True

    def __init__(self, root: Path, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(
                f"Unknown MPI-INF-3DHP split {split!r}; choose one of {sorted(SPLITS)}"
            )
        test = split == "test"
        self.name = f"mpi3d-{split}"
        self._sequences: list[dict] = []
        parts = []
        for part in SPLITS[split]:
            directory = Path(root) / part
            if not directory.is_dir():
                raise FileNotFoundError(
                    f"MPI-INF-3DHP directory {directory} not found; expected the output of "
                    f"MargiPose's preprocess_mpi3d: {directory}/S<s>/Seq<q>/metadata.h5"
                )
            found = _sequence_dirs(directory)
            if not found:
                raise FileNotFoundError(f"No S<s>/Seq<q>/metadata.h5 under {directory}")
            for subject, seq, seq_dir in found:
                calibration = parse_calibration(seq_dir / "camera.calibration")
                scale, cameras = _read_sequence(seq_dir, subject, seq, test)
                missing = {int(c) for rows in cameras for c in rows["camera"]} - set(calibration)
                if missing:
                    raise ValueError(
                        f"{seq_dir / 'camera.calibration'}: no calibration for camera(s) "
                        f"{sorted(missing)}"
                    )
                for rows in cameras:
                    rows["sequence"] = np.full(len(rows["frame"]), len(self._sequences))
                    parts.append(rows)
                self._sequences.append({
                    "dir": seq_dir, "subject": subject, "scale": scale, "calibration": calibration,
                    "label": f"TS{subject}" if test else f"S{subject}/Seq{seq}",
                })
        if not parts or sum(len(p["frame"]) for p in parts) == 0:
            raise ValueError(f"No MPI-INF-3DHP {split} frames selected under {root}")
        self._rows = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def __len__(self) -> int:
        return len(self._rows["frame"])

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"Index {index} out of range for {self.name} of length {len(self)}")
        row = {key: values[index] for key, values in self._rows.items()}
        sequence = self._sequences[int(row["sequence"])]
        camera_id, frame = int(row["camera"]), int(row["frame"])
        path = sequence["dir"] / "imageSequence" / f"video_{camera_id}" / f"img_{frame + 1:06d}.jpg"
        image = open_rgb(path)
        matrix, (width, height) = sequence["calibration"][camera_id]
        sx, sy = image.width / width, image.height / height
        camera = Intrinsics(
            float(matrix[0, 0] * sx), float(matrix[1, 1] * sy),
            float(matrix[0, 2] * sx), float(matrix[1, 2] * sy),
        )
        joints = row["joints"].copy()
        meta = {
            "dataset": "mpi3d",
            "subject": sequence["subject"],
            "sequence": sequence["label"],
            "camera": camera_id,
            "frame": frame,
            "univ_scale": sequence["scale"],
            "image": str(path),
        }
        if self.name == "mpi3d-test":
            activity = int(row["activity"])
            meta["activity_id"] = activity
            meta["activity"] = ACTIVITIES.get(activity, str(activity))
        return Sample(
            image=image,
            camera=camera,
            joints=joints,
            mask=np.ones(NUM_JOINTS, dtype=bool),
            has_depth=True,
            box=reference_box(camera, joints),
            augmentation=AUG_3D,
            meta=meta,
        )
