"""Tests for the MPII reader on fixtures in pose-hg-train's format."""

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.training.data_fixtures import drawn_joints, write_mpii
from training.camera import AUG_MPII
from training.data.mpii import Mpii, decode_names
from training.data.sample import SampleSource
from training.skeleton import joint_index


@pytest.fixture(scope="module")
def fixture(tmp_path_factory) -> tuple[Path, dict]:
    """A written fixture (its data root) and its ground truth."""
    root = tmp_path_factory.mktemp("data")
    return root, write_mpii(root)


@pytest.fixture
def copy(fixture, tmp_path) -> Path:
    """A private copy of the fixture's mpii directory, for tests that damage it."""
    shutil.copytree(fixture[0] / "mpii", tmp_path / "mpii")
    return tmp_path / "mpii"


@pytest.mark.parametrize(("split", "length"), [("train", 4), ("val", 2), ("trainval", 6)])
def test_lengths_follow_valid_h5_and_istrain(fixture, split, length):
    root, truth = fixture
    source = Mpii(root / "mpii", split)
    assert len(source) == length == len(truth[f"mpii-{split}"])
    assert source.name == f"mpii-{split}" and not source.has_depth
    assert isinstance(source, SampleSource)
    people = {(s.meta["index"], s.meta["person"]) for s in source}
    assert (6, 1) not in people  # the istrain = 0 (test) person
    assert ((1, 2) in people) == (split != "train")  # listed in valid.h5


@pytest.mark.parametrize("split", ["train", "val", "trainval"])
def test_samples_equal_the_ground_truth(fixture, split):
    root, truth = fixture
    for sample, expected in zip(Mpii(root / "mpii", split), truth[f"mpii-{split}"], strict=True):
        mask = expected.mask
        np.testing.assert_array_equal(sample.mask, mask)
        # Keypoints lifted onto the focal plane of the stand-in camera (f = 1.2 W).
        np.testing.assert_allclose(sample.joints[mask], expected.joints[mask], atol=1e-9)
        assert sample.camera == expected.camera
        np.testing.assert_allclose(
            sample.camera.project(sample.joints[mask]), expected.uv[mask], atol=1e-9
        )
        # Box: centre (cx, cy + 15 scale), side 250 scale.
        assert sample.box.centre == pytest.approx(expected.box[0])
        assert sample.box.side == pytest.approx(expected.box[1])
        assert not sample.has_depth and sample.augmentation == AUG_MPII
        assert sample.image.mode == "RGB" and sample.image.size == expected.image_size
        assert drawn_joints(sample.image, expected.uv[mask]).all()
        assert sample.meta["dataset"] == "mpii"
        assert {k: sample.meta[k] for k in expected.meta} == expected.meta
        assert sample.meta["normalize"] > 0


def test_unlabelled_joints_are_masked_and_occluded_ones_kept(fixture):
    by_image = {s.meta["index"]: s for s in Mpii(fixture[0] / "mpii", "train")}
    assert by_image[2].mask.sum() == 16 and not by_image[2].mask[joint_index("left_ankle")]
    # No head top: the head (mean of head top and upper neck) is unlabelled too.
    assert by_image[3].mask.sum() == 15
    assert not by_image[3].mask[joint_index("head_top")]
    assert not by_image[3].mask[joint_index("head")]
    # visible = 0 marks occlusion only: the wrist is labelled.
    assert by_image[5].mask.all()


def test_decode_names_accepts_codes_and_strings():
    codes = np.zeros((2, 16))
    codes[0, :5], codes[1, :3] = list(b"a.jpg"), list(b"b.j")
    assert decode_names(codes) == ["a.jpg", "b.j"]
    assert decode_names(np.array([b"c.jpg", b"d.jpg"])) == ["c.jpg", "d.jpg"]


def test_unknown_split_and_missing_files(tmp_path, copy):
    with pytest.raises(ValueError, match="'test'"):
        Mpii(copy, "test")
    with pytest.raises(FileNotFoundError, match="images"):
        Mpii(tmp_path / "nowhere", "train")
    (copy / "valid.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"valid\.h5 is missing"):
        Mpii(copy, "train")


def test_missing_field_is_named(copy):
    with h5py.File(copy / "annot.h5", "a") as f:
        del f["part"]
    with pytest.raises(ValueError, match=r"annot\.h5: missing dataset\(s\) part"):
        Mpii(copy, "train")


def test_valid_people_must_exist(copy):
    with h5py.File(copy / "valid.h5", "a") as f:
        del f["person"]
        f["person"] = np.array([2.0, 9.0])
    with pytest.raises(ValueError, match=r"lists 1 \(index, person\) pairs absent.*\(4, 9\)"):
        Mpii(copy, "val")


def test_missing_image_is_named(copy):
    source = Mpii(copy, "val")
    (copy / "images" / "000000004.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000000004.jpg"):
        source[1]


def test_real_mpii():
    root = os.environ.get("MARGIPOSE_DATA_ROOT")
    if not root or not (Path(root) / "mpii").is_dir():
        pytest.skip("real MPII not available: set MARGIPOSE_DATA_ROOT to a root holding "
                    "mpii/{images,annot.h5,valid.h5}")
    train, val = Mpii(Path(root) / "mpii", "train"), Mpii(Path(root) / "mpii", "val")
    assert len(val) == 2958  # Newell's validation people
    assert len(train) > 20000
    for source in (train, val):
        for index in (0, len(source) // 2, len(source) - 1):
            sample = source[index]
            assert sample.mask.any()
            uv = sample.camera.project(sample.joints[sample.mask])
            size = np.array(sample.image.size)
            assert np.all((uv > -0.1 * size) & (uv < 1.1 * size))
