"""The teacher-labelled real 2D set: reader, splits, boxes, contact sheet, on a fixture written in
the builder's exact layout (images/{source}/{frame:04d}.jpg + labels.jsonl)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.camera import AUG_MPII
from training.data.real2d import BOX_PER_EXTENT, Real2D, contact_sheet, reference_box, split_of
from training.data.registry import open_dataset
from training.data.transforms import make_example
from training.skeleton import NUM_JOINTS


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
