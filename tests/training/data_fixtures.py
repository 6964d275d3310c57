"""Writers of tiny datasets in the on-disk formats the readers expect, with known ground truth.

`write_h36m`, `write_mpi3dhp` and `write_mpii` each take the data root, write their own
subdirectory (``h36m/``, ``mpi3d/``, ``mpii/``: the tree `training.data.registry.open_dataset`
reads) and return, for every dataset name they cover (e.g. "h36m-test"), the `Truth` of each
sample the reader should yield, in the reader's order. People are synthetic skeletons in random
(seeded) poses seen by known cameras, drawn into small JPEGs as thick coloured sticks (right limbs
warm, left limbs cool, a distinct colour per joint) on a noisy background, so a model can learn
from them. Source skeletons (32 H36M joints, 28 MPI-INF-3DHP joints, 16 MPII joints) are built
from joint *names*, independently of the index tables in `training.skeleton`.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io
from PIL import Image, ImageDraw

from posecontract.geometry import Intrinsics
from posecontract.skeleton import BONES, JOINT_NAMES

H36M_NAMES = (
    "pelvis", "right_hip", "right_knee", "right_ankle", "right_toes", "right_site1", "left_hip",
    "left_knee", "left_ankle", "left_toes", "left_site1", "spine1", "spine", "neck", "head",
    "head_top", "left_clavicle", "left_shoulder", "left_elbow", "left_wrist", "left_thumb",
    "left_site2", "left_wrist2", "left_site3", "right_clavicle", "right_shoulder", "right_elbow",
    "right_wrist", "right_thumb", "right_site2", "right_wrist2", "right_site3",
)
MPI3DHP_NAMES = (
    "spine3", "spine4", "spine2", "spine", "pelvis", "neck", "head", "head_top", "left_clavicle",
    "left_shoulder", "left_elbow", "left_wrist", "left_hand", "right_clavicle", "right_shoulder",
    "right_elbow", "right_wrist", "right_hand", "left_hip", "left_knee", "left_ankle",
    "left_foot", "left_toe", "right_hip", "right_knee", "right_ankle", "right_foot", "right_toe",
)
MPII_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis",
    "thorax", "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder",
    "left_shoulder", "left_elbow", "left_wrist",
)
H36M_CAMERAS = (54138969, 55011271)
TEST_STRIDE = 64  # Human3.6M test subjects: every 64th frame
H36M_SIZE = (160, 168)  # (width, height): small stand-ins for the ~1000 x 1000 frames
MPI3D_CALIB_SIZE, MPI3D_IMAGE = 512, 192  # calibration for 512^2 frames stored at 192^2
# (the real ratio: 2048 -> 768)

# A standing person, canonical order, pelvis at the origin, y down, mm.
_BASE = np.array([
    [0, -700, 0], [0, -480, 0], [-170, -450, 0], [-200, -200, 0], [-210, 30, -50],
    [170, -450, 0], [200, -200, 0], [210, 30, -50], [-100, 0, 0], [-110, 420, 20],
    [-110, 820, 40], [100, 0, 0], [110, 420, 20], [110, 820, 40], [0, 0, 0], [0, -230, 10],
    [0, -590, 0],
], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Truth:
    """What a reader should yield for one sample of a fixture."""

    # Canonical joints (17, 3), camera space mm (MPII: lifted onto the focal plane), and their
    # 2D annotation (17, 2) in image pixels; NaN where unlabelled.
    joints: np.ndarray
    uv: np.ndarray
    mask: np.ndarray  # (17,) bool: labelled
    camera: Intrinsics  # of the image as written
    box: tuple[tuple[float, float], float]  # reference box (centre, side)
    image_size: tuple[int, int]  # (width, height)
    meta: dict[str, Any] = field(default_factory=dict)


def _rotation(axis: int, angle: float) -> np.ndarray:
    """3x3 rotation by `angle` radians about coordinate axis 0 (x), 1 (y) or 2 (z)."""
    c, s = np.cos(angle), np.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """A canonical pose (17, 3) about the pelvis: limbs swung, body turned."""
    pose = _BASE.copy()
    for pivot, chain, axis, limit in (
        (2, [3, 4], 2, 1.3), (5, [6, 7], 2, 1.3), (8, [9, 10], 0, 0.6), (11, [12, 13], 0, 0.6),
    ):
        turn = _rotation(axis, rng.uniform(-limit, limit))
        pose[chain] = (pose[chain] - pose[pivot]) @ turn.T + pose[pivot]
    return pose @ _rotation(1, rng.uniform(-0.8, 0.8)).T


def _from_names(canonical: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """A source skeleton (len(names), 3): canonical joints (17, 3) by name; the others at fixed,
    distinct offsets from the pelvis, so they move with the body."""
    pelvis = canonical[JOINT_NAMES.index("pelvis")]
    return np.array([
        canonical[JOINT_NAMES.index(name)] if name in JOINT_NAMES
        else pelvis + (13.0 * i, -11.0 * i, 7.0 * i)
        for i, name in enumerate(names)
    ])


def _box(uv: np.ndarray) -> tuple[tuple[float, float], float]:
    """Reference box of 2D joints: centred on their extent, side 1.5 x its larger side."""
    low, high = uv.min(axis=0), uv.max(axis=0)
    centre = (low + high) / 2
    return (float(centre[0]), float(centre[1])), float(1.5 * max(high - low))


_JOINT_COLOURS = [
    tuple(int(255 * c) for c in colorsys.hsv_to_rgb(j / 17, 0.75, 1.0)) for j in range(17)
]


def _bone_colour(child: int) -> tuple[int, int, int]:
    """Warm for right limbs, cool for left limbs, green for the trunk and head."""
    side = JOINT_NAMES[child].split("_")[0]
    return {"right": (235, 80, 40), "left": (40, 110, 235)}.get(side, (60, 190, 80))


def render(
    size: tuple[int, int], people: list[np.ndarray], rng: np.random.Generator
) -> Image.Image:
    """Draw canonical 2D skeletons (17, 2), in continuous pixels, on a noisy grey background."""
    width, height = size
    coarse = rng.integers(60, 160, size=(max(2, height // 8), max(2, width // 8)), dtype=np.uint8)
    image = Image.fromarray(coarse).resize(size, Image.Resampling.BILINEAR).convert("RGB")
    draw = ImageDraw.Draw(image)
    thickness = max(2, round(min(size) / 40))
    for uv in people:
        points = [(float(u) - 0.5, float(v) - 0.5) for u, v in uv]  # PIL puts pixel i at i
        for child, parent in BONES:
            if np.all(np.isfinite(uv[[child, parent]])):
                draw.line([points[child], points[parent]], _bone_colour(child), thickness)
        for j, (u, v) in enumerate(points):
            if np.isfinite(u) and np.isfinite(v):
                r = thickness
                draw.ellipse([u - r, v - r, u + r, v + r], fill=_JOINT_COLOURS[j])
    return image


def drawn_joints(image: Image.Image, uv: np.ndarray) -> np.ndarray:
    """Mask (N,) of the points uv (N, 2) where `image` shows a strongly coloured pixel (a drawn
    joint), as opposed to the grey background."""
    hsv = np.asarray(image.convert("HSV"), dtype=np.float64)
    cols = np.clip(np.floor(uv[:, 0]).astype(int), 0, image.width - 1)
    rows = np.clip(np.floor(uv[:, 1]).astype(int), 0, image.height - 1)
    return hsv[rows, cols, 1] > 80


def _save(image: Image.Image, path: Path) -> None:
    """Write a JPEG, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=92, subsampling=0)  # 4:4:4 keeps small coloured discs crisp


def _camera_space(world: np.ndarray, yaw: float, shift: tuple[float, float, float]) -> np.ndarray:
    """World points (..., 3) seen by a camera turned by `yaw` about y and shifted by `shift`."""
    return world @ _rotation(1, yaw).T + np.asarray(shift)


def write_h36m(
    root: Path, train_frames: int = 4, test_frames: int = 2, seed: int = 0,
    prefiltered: bool = False,
) -> dict[str, list[Truth]]:
    """Write `root`/h36m/processed in h36m-fetch's layout and return its ground truth.

    Trainval: S1 Directions-1 and S5 Walking-2 with `train_frames` kept frames per camera; their
    annotations alternate a new pose (the pelvis moves 60 mm) with a copy whose right wrist moved
    42 mm (37.8 mm at universal scale, so not kept by the 40 mm rule). Test: S9 Sitting-1 with
    `test_frames` kept frames (1, 65, ...). S1 also has an action-1 "_ALL-1" sequence (excluded).
    Two cameras. With `prefiltered` the annotations list only kept frames, as h36m-fetch writes
    them; otherwise every frame (the reader must thin them). Images exist for kept frames only.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / "h36m" / "processed"
    cameras = {
        cam: (Intrinsics(205.0 + 4 * i, 200.0 + 3 * i, 82.5 - 2 * i, 85.0 + i), 0.3 - 0.6 * i,
              (-80.0 + 160 * i, -60.0, 4500.0 + 200 * i))
        for i, cam in enumerate(H36M_CAMERAS)
    }
    truth: dict[str, list[Truth]] = {"h36m-trainval": [], "h36m-test": []}
    sequences = [(1, "Directions", 2, 1, "trainval"), (1, "_ALL", 1, 1, None),
                 (5, "Walking", 14, 2, "trainval"), (9, "Sitting", 9, 1, "test")]
    for subject, action_name, action, subaction, split in sequences:
        if split == "test":
            count = TEST_STRIDE * (test_frames - 1) + 2
            poses = [random_pose(rng) for _ in range(count)]
            kept = [r for r in range(count) if r % TEST_STRIDE == 0]
        else:
            poses = []
            for k in range(train_frames):
                pose = random_pose(rng) + (60.0 * k, 0.0, 0.0)
                moved = pose.copy()
                moved[JOINT_NAMES.index("right_wrist"), 2] += 42.0
                poses += [pose, moved]
            kept = list(range(0, 2 * train_frames, 2))
        rows = kept if prefiltered else list(range(len(poses)))
        directory = base / f"S{subject}" / f"{action_name}-{subaction}"
        fields: dict[str, list] = {k: [] for k in ("pose/2d", "pose/3d", "pose/3d-univ", "frame",
                                                    "camera", "subject", "action", "subaction")}
        extra = {}
        for cam, (intr, yaw, shift) in cameras.items():
            for r in rows:
                joints = _camera_space(poses[r], yaw, shift)
                full = _from_names(joints, H36M_NAMES)
                root_joint = full[0]
                uv = intr.project(full)
                for key, value in (("pose/2d", uv), ("pose/3d", full), ("frame", r + 1),
                                   ("pose/3d-univ", root_joint + 0.9 * (full - root_joint)),
                                   ("camera", cam), ("subject", subject), ("action", action),
                                   ("subaction", subaction)):
                    fields[key].append(value)
                if split is not None and r in kept:
                    canonical_uv = intr.project(joints)
                    _save(render(H36M_SIZE, [canonical_uv], rng),
                          directory / "imageSequence" / str(cam) / f"img_{r + 1:06d}.jpg")
                    truth[f"h36m-{split}"].append(Truth(
                        joints, canonical_uv, np.ones(17, bool), intr, _box(canonical_uv),
                        H36M_SIZE, {"subject": subject, "sequence": directory.name,
                                    "action": action_name, "action_id": action,
                                    "subaction": subaction, "camera": cam, "frame": r + 1}))
            extra[f"intrinsics/{cam}"] = np.array([intr.fx, intr.cx, intr.fy, intr.cy])
            # Differs from `intrinsics`, so a reader that takes the wrong one is caught.
            extra[f"intrinsics-univ/{cam}"] = np.array([intr.fx * 0.9, intr.cx, intr.fy * 0.9,
                                                        intr.cy])
        directory.mkdir(parents=True, exist_ok=True)
        with h5py.File(directory / "annot.h5", "w") as f:
            for key, values in fields.items():
                f.create_dataset(key, data=np.asarray(values))
            for key, value in extra.items():
                f.create_dataset(key, data=value)
    return truth


_CALIBRATION_TITLE = "Skeletool Camera Calibration File V1.0"
_MAT73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5"


def _mpi3d_camera(c: int) -> tuple[Intrinsics, float, tuple[float, float, float]]:
    """Camera `c` of the 14-camera ring: intrinsics for 512^2 frames, yaw and shift (mm)."""
    intr = Intrinsics(375.5 + 3 * c, 372.25 + 3 * c, 256.5 + 1.5 * (c - 7), 254.0 - (c - 7))
    return intr, np.radians(-60 + 120 * c / 13), (30.0 * c - 200, -150.0, 3800.0 + 40 * c)


def _scaled(intr: Intrinsics, sx: float, sy: float) -> Intrinsics:
    """Intrinsics for the image resized by (sx, sy)."""
    return Intrinsics(intr.fx * sx, intr.fy * sy, intr.cx * sx, intr.cy * sy)


def _write_mat73(path: Path, variables: dict[str, np.ndarray]) -> None:
    """Write a MATLAB v7.3 file: HDF5 behind a 512-byte MATLAB header, arrays transposed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, value in variables.items():
            f.create_dataset(key, data=np.asarray(value).T)
    with open(path, "r+b") as f:
        f.write(_MAT73_HEADER.ljust(128, b" "))


def _intrinsic_line(intr: Intrinsics) -> str:
    """The 16 numbers of a calibration file's 4x4 intrinsic matrix."""
    return f"{intr.fx:.3f} 0 {intr.cx:.3f} 0 0 {intr.fy:.3f} {intr.cy:.3f} 0 0 0 1 0 0 0 0 1"


def _mpi3d_train_sequence(
    directory: Path, subject: int, seq: int, frames: int, rng: np.random.Generator,
    label: str,
) -> list[Truth]:
    """Write one train/val sequence (cameras 0 and 5 selected) and return its truth."""
    scale = 1.0 + 0.04 * subject
    poses = [random_pose(rng) for _ in range(frames)]
    joints3d = np.empty((14, frames, 28, 3))
    lines = [_CALIBRATION_TITLE]
    for c in range(14):
        intr, yaw, shift = _mpi3d_camera(c)
        for i, pose in enumerate(poses):
            joints3d[c, i] = _from_names(_camera_space(pose * scale, yaw, shift), MPI3DHP_NAMES)
        extrinsic = np.eye(4)
        extrinsic[:3, :3], extrinsic[:3, 3] = _rotation(1, yaw), shift
        lines += [f"name          {c}", "  sensor      10 10",
                  f"  size        {MPI3D_CALIB_SIZE} {MPI3D_CALIB_SIZE}", "  animated    0",
                  f"  intrinsic   {_intrinsic_line(intr)} ",
                  "  extrinsic   " + " ".join(f"{v:.6f}" for v in extrinsic.reshape(-1)) + " ",
                  "  radial      0"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "camera.calibration").write_text("\n".join(lines) + "\n")
    truth = []
    ratio = MPI3D_IMAGE / MPI3D_CALIB_SIZE
    with h5py.File(directory / "metadata.h5", "w") as f:
        f.create_dataset("joints3d", data=joints3d)
        f.create_dataset("scale", data=np.array([scale]))
        for c in (0, 5):
            selected = np.arange(c % 2, frames, 2)
            f.create_dataset(f"interesting_frames/camera{c}", data=selected.astype(np.int64))
            camera = _scaled(_mpi3d_camera(c)[0], ratio, ratio)
            for i in selected:
                joints = np.array([joints3d[c, i, MPI3DHP_NAMES.index(n)] for n in JOINT_NAMES])
                joints /= scale
                uv = camera.project(joints)
                _save(render((MPI3D_IMAGE, MPI3D_IMAGE), [uv], rng),
                      directory / "imageSequence" / f"video_{c}" / f"img_{i + 1:06d}.jpg")
                truth.append(Truth(joints, uv, np.ones(17, bool), camera, _box(uv),
                                   (MPI3D_IMAGE, MPI3D_IMAGE),
                                   {"subject": subject, "sequence": label, "camera": c,
                                    "frame": int(i), "univ_scale": scale}))
    return truth


def _mpi3d_test_sequence(
    directory: Path, subject: int, calib_size: tuple[int, int], mat73: bool, frames: int,
    rng: np.random.Generator,
) -> list[Truth]:
    """Write test sequence TS`subject` (annot_data.mat as MATLAB v7.3 or 5) and return its
    truth."""
    scale = 0.95 + 0.02 * subject
    intr = Intrinsics(380.125 + subject, 378.5, calib_size[0] / 2 + 3.25, calib_size[1] / 2 - 2.5)
    image_size = (int(calib_size[0] * MPI3D_IMAGE / calib_size[1]), MPI3D_IMAGE)
    camera = _scaled(intr, image_size[0] / calib_size[0], image_size[1] / calib_size[1])
    annot3 = np.stack([_camera_space(random_pose(rng) * scale * 0.8, 0.2, (0.0, -50.0, 3300.0))
                       for _ in range(frames)])
    valid = (np.arange(frames) % 3 != 2).astype(np.float64)
    activity = (np.arange(frames) % 7 + 1).astype(np.float64)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "camera.calibration").write_text("\n".join([
        "Fake Camera Calibration File", "name          0",
        f"  size        {calib_size[0]} {calib_size[1]}", f"  intrinsic   {_intrinsic_line(intr)}",
        "  extrinsic   1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1"]) + "\n")
    annot2 = intr.project(annot3)
    variables = {"activity_annotation": activity[:, None], "valid_frame": valid[:, None],
                 "annot2": annot2[:, None], "annot3": annot3[:, None],
                 "univ_annot3": annot3[:, None] / scale}
    if mat73:
        _write_mat73(directory / "annot_data.mat", variables)
    else:  # MATLAB 5 format, which the reader also accepts
        scipy.io.savemat(directory / "annot_data.mat", variables)
    valid_frames = np.flatnonzero(valid == 1)
    with h5py.File(directory / "metadata.h5", "w") as f:
        f.create_dataset("joints3d", data=annot3[None])
        f.create_dataset("scale", data=np.array([scale]))
        f.create_dataset("interesting_frames/camera0", data=valid_frames.astype(np.int64))
    truth = []
    for i in valid_frames:
        joints = annot3[i] / scale
        uv = camera.project(joints)
        _save(render(image_size, [uv], rng),
              directory / "imageSequence" / "video_0" / f"img_{i + 1:06d}.jpg")
        truth.append(Truth(joints, uv, np.ones(17, bool), camera, _box(uv), image_size,
                           {"subject": subject, "sequence": f"TS{subject}", "camera": 0,
                            "frame": int(i), "univ_scale": scale,
                            "activity_id": int(activity[i])}))
    return truth


def write_mpi3dhp(root: Path, frames: int = 6, seed: int = 0) -> dict[str, list[Truth]]:
    """Write `root`/mpi3d in MargiPose's preprocessed layout and return its ground truth.

    train: S1/Seq1; val: S4/Seq1; each with 14 cameras of 512^2 calibration, frames stored at
    192^2, cameras 0 and 5 selected (even / odd frames), universal scale 1 + 0.04 subject.
    test: TS1 (512^2 calibration, 192^2 images, annot_data.mat in MATLAB v7.3) and TS5 (480 x 270
    -> 341 x 192, MATLAB 5 file), every third frame invalid.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / "mpi3d"
    train = _mpi3d_train_sequence(base / "train" / "S1" / "Seq1", 1, 1, frames, rng, "S1/Seq1")
    val = _mpi3d_train_sequence(base / "val" / "S4" / "Seq1", 4, 1, frames, rng, "S4/Seq1")
    test = []
    for subject, calib_size, mat73 in ((1, (512, 512), True), (5, (480, 270), False)):
        test += _mpi3d_test_sequence(base / "test" / f"S{subject}" / "Seq1", subject,
                                     calib_size, mat73, frames, rng)
    return {"mpi3d-train": train, "mpi3d-val": val, "mpi3d-trainval": train + val,
            "mpi3d-test": test}


def _mpii_person(
    rng: np.random.Generator, size: tuple[int, int], slot: float, missing: tuple[str, ...] = ()
) -> np.ndarray:
    """MPII keypoints (16, 2) of a random person centred near `slot` x the image width; the
    joints named in `missing` are unlabelled (0, 0)."""
    width, height = size
    pose = random_pose(rng)
    uv = pose[:, :2] / np.ptp(pose[:, :2], axis=0).max() * 0.55 * min(size)
    uv += (slot * width, rng.uniform(0.45, 0.55) * height) - uv.mean(axis=0)
    by_name = dict(zip(JOINT_NAMES, uv, strict=True))
    by_name["thorax"] = by_name["neck"]
    by_name["upper_neck"] = 0.5 * (by_name["neck"] + by_name["head"])
    part = np.array([by_name[name] for name in MPII_NAMES])
    part[[MPII_NAMES.index(name) for name in missing]] = 0.0
    return part


def _mpii_truth(part: np.ndarray, size: tuple[int, int], meta: dict) -> tuple[Truth, tuple]:
    """Expected canonical joints of MPII keypoints, and the (centre, scale) to store for them."""
    p = {name: part[i] for i, name in enumerate(MPII_NAMES)}
    ok = {name: bool(np.any(p[name] != 0)) for name in MPII_NAMES}
    # MargiPose: neck <- upper neck; spine = 0.53 thorax + 0.47 pelvis; head = mean(top, neck).
    p |= {"neck": p["upper_neck"], "spine": 0.53 * p["thorax"] + 0.47 * p["pelvis"],
          "head": 0.5 * (p["head_top"] + p["upper_neck"])}
    ok |= {"neck": ok["upper_neck"], "spine": ok["thorax"],
           "head": ok["head_top"] and ok["upper_neck"]}
    mask = np.array([ok[name] for name in JOINT_NAMES])
    uv = np.array([p[name] for name in JOINT_NAMES])
    uv[~mask] = np.nan
    width, height = size
    focal = 1.2 * width
    joints = np.concatenate([uv - (width / 2, height / 2), np.full((17, 1), focal)], axis=1)
    low, high = uv[mask].min(axis=0), uv[mask].max(axis=0)
    scale = float(max(high - low)) / 200
    centre = ((low[0] + high[0]) / 2, (low[1] + high[1]) / 2 - 15 * scale)
    box = (((low[0] + high[0]) / 2, (low[1] + high[1]) / 2), 250 * scale)
    camera = Intrinsics(focal, focal, width / 2, height / 2)
    return Truth(joints, uv, mask, camera, box, size, meta), (centre, scale)


def write_mpii(root: Path, seed: int = 0) -> dict[str, list[Truth]]:
    """Write `root`/mpii in pose-hg-train's format (images/, annot.h5, valid.h5) and return its
    ground truth.

    Seven people in six images: four train (one missing its left ankle, one its head top, one
    with an occluded but labelled wrist), two val, one unlabelled test person (istrain = 0).
    Image 1 holds a train and a val person.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / "mpii"
    # (image index, person, istrain, in valid.h5, image size, unlabelled joints)
    people = [(1, 1, 1, False, (200, 160), ()), (1, 2, 1, True, (200, 160), ()),
              (2, 1, 1, False, (180, 220), ("left_ankle",)),
              (3, 1, 1, False, (220, 180), ("head_top",)), (4, 1, 1, True, (160, 160), ()),
              (5, 1, 1, False, (190, 170), ()), (6, 1, 0, False, (170, 170), ())]
    fields: dict[str, list] = {key: [] for key in (
        "index", "person", "istrain", "imgname", "center", "scale", "part", "visible",
        "normalize")}
    drawn: dict[int, list[np.ndarray]] = {}
    truth: dict[str, list[Truth]] = {"mpii-train": [], "mpii-val": []}
    for index, person, istrain, is_val, size, missing in people:
        slot = (0.3 if person == 1 else 0.7) if index == 1 else 0.5
        part = _mpii_person(rng, size, slot + rng.uniform(-0.05, 0.05), missing)
        name = f"{index:09d}.jpg"
        record, (centre, scale) = _mpii_truth(part, size, {"image": name, "index": index,
                                                            "person": person})
        drawn.setdefault(index, []).append(record.uv)
        visible = np.ones(16)
        if index == 5:
            visible[MPII_NAMES.index("right_wrist")] = 0  # occluded, still labelled
        normalize = 0.6 * float(np.linalg.norm(part[9] - part[8]))
        if istrain == 0:  # the test set has no keypoints
            part, visible = np.zeros_like(part), np.zeros(16)
        else:
            truth["mpii-val" if is_val else "mpii-train"].append(record)
        codes = np.frombuffer(name.encode().ljust(16, b"\0"), dtype=np.uint8)  # char codes
        for key, value in zip(fields, (index, person, istrain, codes, centre, scale, part,
                                       visible, normalize), strict=True):
            fields[key].append(value)
    for index, size in {p[0]: p[4] for p in people}.items():
        _save(render(size, drawn[index], rng), base / "images" / f"{index:09d}.jpg")
    with h5py.File(base / "annot.h5", "w") as f:
        for key, values in fields.items():
            f.create_dataset(key, data=np.asarray(values, dtype=np.float64))
    with h5py.File(base / "valid.h5", "w") as f:
        f.create_dataset("index", data=np.array([p[0] for p in people if p[3]], np.float64))
        f.create_dataset("person", data=np.array([p[1] for p in people if p[3]], np.float64))
    truth["mpii-trainval"] = truth["mpii-train"] + truth["mpii-val"]
    return truth
