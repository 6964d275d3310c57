"""Tests for the Human3.6M reader on fixtures in h36m-fetch's format."""

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.training.data_fixtures import H36M_SIZE, drawn_joints, write_h36m
from training.camera import AUG_3D
from training.data.h36m import Human36M, moving_frames, sparse_frames
from training.data.sample import SampleSource


@pytest.fixture(scope="module")
def fixture(tmp_path_factory) -> tuple[Path, dict]:
    """A written fixture (its data root) and its ground truth."""
    root = tmp_path_factory.mktemp("data")
    return root, write_h36m(root)


@pytest.fixture
def copy(fixture, tmp_path) -> Path:
    """A private copy of the fixture's h36m directory, for tests that damage it."""
    shutil.copytree(fixture[0] / "h36m", tmp_path / "h36m")
    return tmp_path / "h36m"


def test_sparse_frames_keeps_every_64th_from_frame_1():
    frames = np.array([1, 2, 64, 65, 66, 129, 130])
    assert sparse_frames(frames).tolist() == [True, False, False, True, False, True, False]


def test_moving_frames_measures_from_the_last_kept_frame():
    # One joint moving along x; kept when >= 40 mm from the last kept position.
    x = np.array([0.0, 30.0, 39.9, 40.0, 60.0, 79.0, 80.5, 80.5])
    poses = np.zeros((len(x), 2, 3))
    poses[:, 1, 0] = x
    assert moving_frames(poses).tolist() == [0, 3, 6]
    assert moving_frames(poses[:1]).tolist() == [0]


@pytest.mark.parametrize(("split", "length"), [("trainval", 16), ("test", 4)])
def test_lengths_follow_splits_and_frame_rules(fixture, split, length):
    root, truth = fixture
    source = Human36M(root / "h36m", split)
    # trainval: S1 + S5, 2 cameras, 4 of 8 frames each (the wrist-only moves stay below 40 mm
    # at universal scale; action 1 excluded). test: S9, 2 cameras, frames 1 and 65 of 66.
    assert len(source) == length == len(truth[f"h36m-{split}"])
    assert source.name == f"h36m-{split}"
    assert source.has_depth
    assert isinstance(source, SampleSource)


@pytest.mark.parametrize("split", ["trainval", "test"])
def test_samples_equal_the_ground_truth(fixture, split):
    root, truth = fixture
    source = Human36M(root / "h36m", split)
    for sample, expected in zip(source, truth[f"h36m-{split}"], strict=True):
        np.testing.assert_allclose(sample.joints, expected.joints, atol=1e-9)
        assert sample.camera == expected.camera
        # The sample camera projects the canonical joints onto the 2D annotations.
        np.testing.assert_allclose(sample.camera.project(sample.joints), expected.uv, atol=1e-9)
        assert sample.box.centre == pytest.approx(expected.box[0])
        assert sample.box.side == pytest.approx(expected.box[1])
        assert sample.mask.all() and sample.has_depth
        assert sample.augmentation == AUG_3D
        assert sample.image.mode == "RGB" and sample.image.size == H36M_SIZE
        assert drawn_joints(sample.image, expected.uv).all()  # the right frame's image
        assert sample.meta["dataset"] == "h36m"
        assert {k: sample.meta[k] for k in expected.meta} == expected.meta
    subjects = {sample.meta["subject"] for sample in source}
    assert subjects == ({1, 5} if split == "trainval" else {9})


def test_prefiltered_annotations_give_the_same_samples(tmp_path, fixture):
    truth = write_h36m(tmp_path, prefiltered=True)
    source = Human36M(tmp_path / "h36m", "trainval")
    assert len(source) == len(fixture[1]["h36m-trainval"]) == len(truth["h36m-trainval"])
    for sample, expected in zip(source, fixture[1]["h36m-trainval"], strict=True):
        np.testing.assert_allclose(sample.joints, expected.joints, atol=1e-9)
        assert sample.meta["frame"] == expected.meta["frame"]


def test_indexing_bounds(fixture):
    source = Human36M(fixture[0] / "h36m", "test")
    assert source[-1].meta == source[len(source) - 1].meta
    with pytest.raises(IndexError, match="out of range"):
        source[len(source)]


def test_unknown_split_and_missing_directories(tmp_path):
    with pytest.raises(ValueError, match="'train'.*trainval"):
        Human36M(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="processed"):
        Human36M(tmp_path / "h36m", "test")
    (tmp_path / "h36m" / "processed").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"S<n>/<Action>-<subaction>/annot.h5"):
        Human36M(tmp_path / "h36m", "test")


def test_missing_dataset_is_named(copy):
    annot = copy / "processed" / "S9" / "Sitting-1" / "annot.h5"
    with h5py.File(annot, "a") as f:
        del f["pose/3d-univ"]
    with pytest.raises(ValueError, match=r"annot\.h5: missing dataset 'pose/3d-univ'"):
        Human36M(copy, "test")


def test_missing_intrinsics_are_named(copy):
    annot = copy / "processed" / "S9" / "Sitting-1" / "annot.h5"
    with h5py.File(annot, "a") as f:
        del f["intrinsics/55011271"]
    with pytest.raises(ValueError, match="intrinsics/55011271"):
        Human36M(copy, "test")


def test_missing_image_is_named(copy):
    source = Human36M(copy, "test")
    Path(source[0].meta["image"]).unlink()
    with pytest.raises(FileNotFoundError, match="img_000001.jpg"):
        source[0]


def test_real_human36m():
    root = os.environ.get("MARGIPOSE_DATA_ROOT")
    if not root or not (Path(root) / "h36m" / "processed").is_dir():
        pytest.skip("real Human3.6M not available: set MARGIPOSE_DATA_ROOT to a root holding "
                    "h36m/processed")
    for split in ("test", "trainval"):
        source = Human36M(Path(root) / "h36m", split)
        assert len(source) > 0
        for index in (0, len(source) // 2, len(source) - 1):
            sample = source[index]
            assert sample.meta["subject"] in ({9, 11} if split == "test" else {1, 5, 6, 7, 8})
            assert sample.meta["action_id"] != 1
            if split == "test":
                assert (sample.meta["frame"] - 1) % 64 == 0
            assert 1500 < sample.joints[14, 2] < 9000  # pelvis depth, mm
            uv = sample.camera.project(sample.joints)
            width, height = sample.image.size
            assert np.all((uv > -0.05 * width) & (uv < 1.05 * np.array([width, height])))
