"""The teacher-labelled real 2D set: reader, splits, boxes, contact sheet, on a fixture written in
the builder's exact layout (images/{source}/{frame:04d}.jpg + labels.jsonl)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.training.stick_figures import random_joints
from training.camera import AUG_MPII, mpii_camera
from training.data.mixed import collate
from training.data.real2d import (
    BOX_PER_EXTENT,
    Real2D,
    Real2D3D,
    contact_sheet,
    reference_box,
    split_of,
    teacher_root_depth,
)
from training.data.registry import open_dataset
from training.data.transforms import make_example, random_example
from training.skeleton import NUM_JOINTS, ROOT


def _record(source: str, frame: int, rng: np.random.Generator, width: int, height: int) -> dict:
    joints = np.stack([rng.uniform(100, width - 100, NUM_JOINTS),
                       rng.uniform(50, height - 50, NUM_JOINTS)], axis=1)
    mask = rng.random(NUM_JOINTS) > 0.2
    mask[:4] = True
    return {"image": f"images/{source}/{frame:04d}.jpg", "width": width, "height": height,
            "person": 0, "box": [0, 0, 1, 1], "joints": joints.round(2).tolist(),
            "mask": mask.tolist(), "score": 0.9, "refined": True, "source": source,
            "frame": frame, "split": split_of(source, frame)}


def write_fixture(root: Path) -> list[dict]:
    """A real2d directory: 3 Pose2Sim frames of cameras 1 and 4 and 4 Sports2D frames."""
    rng = np.random.default_rng(0)
    records = []
    for source, frames, (w, h) in (("pose2sim-cam1", (0, 1, 2), (270, 480)),
                                   ("pose2sim-cam4", (0, 1, 2), (272, 480)),
                                   ("sports2d", (5, 40, 76, 100), (442, 248))):
        (root / "images" / source).mkdir(parents=True, exist_ok=True)
        for frame in frames:
            Image.new("RGB", (w, h), (frame * 20 % 255, 90, 140)).save(
                root / "images" / source / f"{frame:04d}.jpg")
            records.append(_record(source, frame, rng, w, h))
    with open(root / "labels.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return records


@pytest.fixture
def real2d_root(tmp_path: Path) -> Path:
    write_fixture(tmp_path / "real2d")
    return tmp_path


def test_split_rules():
    assert split_of("pose2sim-cam4", 50) == "val"
    assert split_of("pose2sim-cam1", 50) == "train"
    for held in (0, 75, 150, 225):  # the frames committed in data/photos
        assert split_of("sports2d", held) == "val"
        assert split_of("sports2d", held + 10) == "val"
    assert split_of("sports2d", 86) == "train"
    assert split_of("sports2d", 40) == "train"


def test_splits_partition_the_labels(real2d_root):
    root = real2d_root / "real2d"
    train, val, both = (Real2D(root, s) for s in ("train", "val", "trainval"))
    # train: cam1 x3 + sports2d 40 and 100; val: cam4 x3 + sports2d 5 and 76.
    assert (len(train), len(val), len(both)) == (5, 5, 10)
    frames = {(s.meta["source"], s.meta["frame"]) for s in (train[i] for i in range(len(train)))}
    assert frames == {("pose2sim-cam1", 0), ("pose2sim-cam1", 1), ("pose2sim-cam1", 2),
                      ("sports2d", 40), ("sports2d", 100)}
    assert open_dataset("real2d-val", real2d_root).name == "real2d-val"


def test_samples_project_back_onto_the_teacher_labels(real2d_root):
    records = {(r["source"], r["frame"]): r for r in write_fixture(real2d_root / "again")}
    source = Real2D(real2d_root / "again", "trainval")
    for i in range(len(source)):
        sample = source[i]
        record = records[(sample.meta["source"], sample.meta["frame"])]
        assert not sample.has_depth
        assert sample.augmentation == AUG_MPII
        np.testing.assert_array_equal(sample.mask, record["mask"])
        np.testing.assert_allclose(sample.camera.project(sample.joints), record["joints"],
                                   atol=1e-6)
        assert sample.camera.fx == pytest.approx(1.2 * sample.image.width)
        # The box: 1.3 x the extent of the labelled joints, centred on it.
        uv = np.asarray(record["joints"])[sample.mask]
        extent = (uv.max(axis=0) - uv.min(axis=0)).max()
        assert sample.box.side == pytest.approx(BOX_PER_EXTENT * extent)
        np.testing.assert_allclose(sample.box.centre, (uv.max(axis=0) + uv.min(axis=0)) / 2)
        example = make_example(sample)  # the training crop pipeline takes it
        assert tuple(example.image.shape) == (3, 256, 256) and not example.has_depth


def test_unlabelled_joints_do_not_move_the_box():
    joints = np.zeros((NUM_JOINTS, 2))
    joints[:, 0] = np.arange(NUM_JOINTS)
    mask = np.ones(NUM_JOINTS, dtype=bool)
    far = joints.copy()
    far[5] = (1e4, 1e4)
    mask_far = mask.copy()
    mask_far[5] = False
    a, b = reference_box(joints, mask), reference_box(far, mask_far)
    assert a.side == pytest.approx(b.side) and a.centre == pytest.approx(b.centre)


def test_errors_name_the_problem(tmp_path, real2d_root):
    with pytest.raises(FileNotFoundError, match="python -m training.data.real2d build"):
        Real2D(tmp_path / "nothing", "train")
    with pytest.raises(ValueError, match="Unknown real2d split 'test'"):
        Real2D(real2d_root / "real2d", "test")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "labels.jsonl").write_text(json.dumps(
        {"joints": [[0, 0]] * 3, "mask": [True] * 3, "split": "train"}) + "\n")
    with pytest.raises(ValueError, match="labels.jsonl:1: joints must be 17 x 2"):
        Real2D(bad, "train")


def test_contact_sheet_draws_the_people(real2d_root):
    sheet = contact_sheet(Real2D(real2d_root / "real2d", "trainval"), count=4, cols=2, tile=64)
    assert sheet.size == (128, 128)
    pixels = np.asarray(sheet)
    assert (pixels == 255).all(axis=-1).any()  # white bones drawn


# ----------------------------------------------------------------------------- teacher depth

TEACHER_DEPTH = 3000.0  # mm: where the fixture's people stand in the stand-in camera


def write_fixture_3d(root: Path, seed: int = 1) -> list[dict]:
    """A real2d directory whose records carry joints3d: a known person (the stick figure's
    body, turned) at TEACHER_DEPTH, projected by the stand-in camera; its pelvis-relative joints
    are the teacher's 3D, plus 20 mm of noise (the teacher's 2D and 3D heads disagree a bit)."""
    rng = np.random.default_rng(seed)
    records = []
    for source, frames, (w, h) in (("pose2sim-cam1", (0, 1), (1080, 1920)),
                                   ("sports2d", (40, 76), (1768, 994))):
        (root / "images" / source).mkdir(parents=True, exist_ok=True)
        camera = mpii_camera(w, h)
        for frame in frames:
            Image.new("RGB", (w, h), (60, 90, 140)).save(root / "images" / source
                                                         / f"{frame:04d}.jpg")
            body = random_joints(rng)
            rel = body - body[ROOT]  # pelvis-relative, mm
            uv = camera.project(rel + (0.0, 0.0, TEACHER_DEPTH))
            mask = np.ones(NUM_JOINTS, dtype=bool)
            mask[[0, 4]] = False  # head top and a wrist unseen
            teacher = rel + rng.normal(0.0, 20.0, rel.shape)
            teacher -= teacher[ROOT]
            records.append({
                "image": f"images/{source}/{frame:04d}.jpg", "width": w, "height": h,
                "person": 0, "box": [0, 0, 1, 1], "joints": uv.round(2).tolist(),
                "joints3d": teacher.round(2).tolist(), "mask": mask.tolist(), "score": 0.9,
                "refined": True, "source": source, "frame": frame,
                "split": split_of(source, frame)})
    with open(root / "labels.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return records


@pytest.fixture
def real2d3d_root(tmp_path: Path) -> Path:
    write_fixture_3d(tmp_path / "real2d")
    return tmp_path


def test_weak_perspective_root_depth_is_recovered_exactly():
    # Pixels made by weak perspective at depth 2500 mm: the least-squares scale is exact, and a
    # 3D skeleton 10 % larger (the teacher's average body on a small person) sits 10 % deeper.
    rng = np.random.default_rng(0)
    rel = rng.normal(0.0, 400.0, (NUM_JOINTS, 3))
    rel -= rel[ROOT]
    fx, fy, depth = 1300.0, 1250.0, 2500.0
    uv = (640.0, 360.0) + rel[:, :2] * (fx, fy) / depth
    mask = np.ones(NUM_JOINTS, dtype=bool)
    assert teacher_root_depth(uv, rel, mask, fx, fy) == pytest.approx(depth, rel=1e-12)
    assert teacher_root_depth(uv, 1.1 * rel, mask, fx, fy) == pytest.approx(1.1 * depth,
                                                                            rel=1e-12)
    # Masked joints take no part in the fit.
    moved = uv.copy()
    moved[3] += 500.0
    mask[3] = False
    assert teacher_root_depth(moved, rel, mask, fx, fy) == pytest.approx(depth, rel=1e-12)
    with pytest.raises(ValueError, match="do not scale onto"):
        teacher_root_depth(uv, rel * (-1.0, 1.0, 1.0) * (1.0, -1.0, 1.0), mask, fx, fy)


def test_teacher_samples_sit_on_the_teacher_pixels_at_its_relative_depths(real2d3d_root):
    records = {(r["source"], r["frame"]): r for r in write_fixture_3d(real2d3d_root / "again")}
    source = Real2D3D(real2d3d_root / "again", "trainval")
    assert len(source) == 4 and source.name == "real2d3d-trainval"
    for i in range(len(source)):
        sample = source[i]
        record = records[(sample.meta["source"], sample.meta["frame"])]
        teacher = np.asarray(record["joints3d"])
        assert sample.teacher_depth and not sample.has_depth
        assert sample.meta["dataset"] == "real2d3d" and sample.augmentation == AUG_MPII
        np.testing.assert_array_equal(sample.mask, record["mask"])  # masked joints stay masked
        # Every joint, masked ones too, projects onto the teacher's pixel: float64 rounding of
        # pixels ~1e3 leaves ~1e-13 px.
        np.testing.assert_allclose(sample.camera.project(sample.joints), record["joints"],
                                   rtol=0, atol=1e-9)
        # Depths relative to the pelvis are the teacher's (mm; ~1e-12 rounding at 3000 mm).
        np.testing.assert_allclose(sample.joints[:, 2] - sample.joints[ROOT, 2], teacher[:, 2],
                                   rtol=0, atol=1e-9)
        # The root depth makes the teacher's size match the 2D extent: the fixture's person
        # stands at 3000 mm; perspective, the 20 mm noise and the 2-decimal pixels move the
        # weak-perspective fit by a few percent at most.
        assert sample.joints[ROOT, 2] == pytest.approx(TEACHER_DEPTH, rel=0.05)
        # The same box and image as the 2D-only reader's sample.
        flat = Real2D(real2d3d_root / "again", "trainval")[i]
        assert sample.box == flat.box and sample.camera == flat.camera


def test_teacher_examples_equal_the_2d_ones_but_for_depth(real2d3d_root):
    # Same crop, pixels and mask as real2d (whose xy targets they match to float rounding), so
    # a teacher depth weight of 0 trains on what real2d-train gives; z targets are the teacher's.
    flat, deep = (open_dataset(f"{name}-train", real2d3d_root) for name in ("real2d", "real2d3d"))
    assert len(flat) == len(deep) == 3
    for i in range(len(deep)):
        a = random_example(flat[i], np.random.default_rng(i))
        b = random_example(deep[i], np.random.default_rng(i))
        assert a.crop.camera == b.crop.camera and a.crop.flipped == b.crop.flipped
        np.testing.assert_array_equal(a.crop.pixel_matrix, b.crop.pixel_matrix)
        assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask)
        torch.testing.assert_close(a.target[:, :2], b.target[:, :2], rtol=0, atol=1e-6)
        assert not a.teacher_depth and b.teacher_depth
        assert (a.target[:, 2] == 0).all() and b.target[:, 2].abs().max() > 0.05
    batch = collate([random_example(deep[0], np.random.default_rng(0))])
    assert batch["teacher_depth"].tolist() == [True] and batch["has_depth"].tolist() == [False]


def test_teacher_depth_needs_joints3d(tmp_path, real2d_root):
    with pytest.raises(ValueError, match=r"labels.jsonl:1: no joints3d .* rebuild the set"):
        Real2D3D(real2d_root / "real2d", "train")
    records = write_fixture_3d(tmp_path / "flipped")
    records[1]["joints3d"] = (-np.asarray(records[1]["joints3d"])).tolist()  # upside down
    with open(tmp_path / "flipped" / "labels.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    with pytest.raises(ValueError, match=r"labels.jsonl:2: The teacher's 3D x/y offsets"):
        Real2D3D(tmp_path / "flipped", "train")
