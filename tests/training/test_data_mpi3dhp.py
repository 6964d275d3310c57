"""Tests for the MPI-INF-3DHP reader on fixtures in MargiPose's preprocessed format."""

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from tests.training.data_fixtures import drawn_joints, write_mpi3dhp
from training.camera import AUG_3D
from training.data.mpi3dhp import MpiInf3dhp, parse_calibration, read_mat
from training.data.sample import SampleSource


@pytest.fixture(scope="module")
def fixture(tmp_path_factory) -> tuple[Path, dict]:
    """A written fixture (its data root) and its ground truth."""
    root = tmp_path_factory.mktemp("data")
    return root, write_mpi3dhp(root)


@pytest.fixture
def copy(fixture, tmp_path) -> Path:
    """A private copy of the fixture's mpi3d directory, for tests that change it."""
    shutil.copytree(fixture[0] / "mpi3d", tmp_path / "mpi3d")
    return tmp_path / "mpi3d"


@pytest.mark.parametrize(
    ("split", "length"), [("train", 6), ("val", 6), ("trainval", 12), ("test", 8)]
)
def test_lengths_follow_selected_frames(fixture, split, length):
    root, truth = fixture
    # train/val: 6 frames, camera 0 selects frames 0, 2, 4 and camera 5 frames 1, 3, 5.
    # test: TS1 and TS5 keep 4 valid frames of 6 each.
    source = MpiInf3dhp(root / "mpi3d", split)
    assert len(source) == length == len(truth[f"mpi3d-{split}"])
    assert source.name == f"mpi3d-{split}" and source.has_depth
    assert isinstance(source, SampleSource)


@pytest.mark.parametrize("split", ["train", "val", "trainval", "test"])
def test_samples_equal_the_ground_truth(fixture, split):
    root, truth = fixture
    source = MpiInf3dhp(root / "mpi3d", split)
    for sample, expected in zip(source, truth[f"mpi3d-{split}"], strict=True):
        # annot3 / universal scale, about the camera origin, in canonical order.
        np.testing.assert_allclose(sample.joints, expected.joints, atol=1e-9)
        # Calibration intrinsics rescaled from the calibration size to the stored image size.
        assert sample.camera.fx == pytest.approx(expected.camera.fx)
        assert sample.camera.fy == pytest.approx(expected.camera.fy)
        assert sample.camera.cx == pytest.approx(expected.camera.cx)
        assert sample.camera.cy == pytest.approx(expected.camera.cy)
        np.testing.assert_allclose(sample.camera.project(sample.joints), expected.uv, atol=1e-6)
        assert sample.box.centre == pytest.approx(expected.box[0])
        assert sample.box.side == pytest.approx(expected.box[1])
        assert sample.mask.all() and sample.has_depth and sample.augmentation == AUG_3D
        assert sample.image.mode == "RGB" and sample.image.size == expected.image_size
        assert drawn_joints(sample.image, expected.uv).all()
        assert sample.meta["dataset"] == "mpi3d"
        assert {k: sample.meta[k] for k in expected.meta} == pytest.approx(expected.meta)
        if split == "test":
            assert sample.meta["activity"] == {
                1: "Standing/Walking", 2: "Exercising", 3: "Sitting", 4: "Reaching/Crouching",
                5: "On The Floor", 6: "Sports", 7: "Miscellaneous",
            }[expected.meta["activity_id"]]
        else:
            assert "activity" not in sample.meta


def test_test_set_keeps_only_valid_frames(copy, fixture):
    # Even if interesting_frames listed every frame, invalid ones stay out.
    with h5py.File(copy / "test" / "S1" / "Seq1" / "metadata.h5", "a") as f:
        del f["interesting_frames/camera0"]
        f["interesting_frames/camera0"] = np.arange(6)
    source = MpiInf3dhp(copy, "test")
    assert [s.meta["frame"] for s in source][:4] == [0, 1, 3, 4]
    assert len(source) == len(fixture[1]["mpi3d-test"])


def test_only_vnect_cameras_and_no_blacklisted_video(copy):
    # A copy of S1/Seq1 as S6/Seq2, also listing camera 2 (blacklisted there) and camera 3
    # (not a VNect camera): only cameras 0 and 5 count.
    shutil.copytree(copy / "train" / "S1" / "Seq1", copy / "train" / "S6" / "Seq2")
    with h5py.File(copy / "train" / "S6" / "Seq2" / "metadata.h5", "a") as f:
        f["interesting_frames/camera2"] = np.arange(6)
        f["interesting_frames/camera3"] = np.arange(6)
    source = MpiInf3dhp(copy, "train")
    assert len(source) == 12
    assert {(s.meta["sequence"], s.meta["camera"]) for s in source} == {
        ("S1/Seq1", 0), ("S1/Seq1", 5), ("S6/Seq2", 0), ("S6/Seq2", 5)
    }


def test_parse_calibration(tmp_path):
    path = tmp_path / "camera.calibration"
    path.write_text(
        "Skeletool Camera Calibration File V1.0\n"
        "name          3\n  sensor      10 10\n  size        2048 1024\n  animated    0\n"
        "  intrinsic   1497.5 0 1024.25 0 0 1496.75 1051.5 0 0 0 1 0 0 0 0 1 \n"
        "  extrinsic   1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1\n  radial      0\n"
    )
    (matrix, size), = parse_calibration(path).values()
    assert list(parse_calibration(path)) == [3]
    np.testing.assert_array_equal(matrix, [[1497.5, 0, 1024.25], [0, 1496.75, 1051.5], [0, 0, 1]])
    assert size == (2048.0, 1024.0)


def test_read_mat_reads_both_matlab_formats(fixture, tmp_path):
    # The fixture writes TS1 as MATLAB v7.3 (HDF5) and TS5 as MATLAB 5.
    test_dir = fixture[0] / "mpi3d" / "test"
    assert h5py.is_hdf5(test_dir / "S1" / "Seq1" / "annot_data.mat")
    assert not h5py.is_hdf5(test_dir / "S5" / "Seq1" / "annot_data.mat")
    for subject in (1, 5):
        mat = read_mat(test_dir / f"S{subject}" / "Seq1" / "annot_data.mat", ("valid_frame",))
        assert mat["valid_frame"].reshape(-1).tolist() == [1, 1, 0, 1, 1, 0]
    scipy.io.savemat(tmp_path / "empty.mat", {"other": np.zeros(2)})
    with pytest.raises(ValueError, match=r"empty\.mat: missing variable\(s\) activity"):
        read_mat(tmp_path / "empty.mat", ("activity_annotation",))


def test_unknown_split_and_missing_directories(tmp_path):
    with pytest.raises(ValueError, match="'validation'"):
        MpiInf3dhp(tmp_path, "validation")
    with pytest.raises(FileNotFoundError, match="train not found"):
        MpiInf3dhp(tmp_path / "mpi3d", "train")
    (tmp_path / "mpi3d" / "val").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"No S<s>/Seq<q>/metadata.h5 under"):
        MpiInf3dhp(tmp_path / "mpi3d", "val")


def test_missing_scale_is_named(copy):
    with h5py.File(copy / "val" / "S4" / "Seq1" / "metadata.h5", "a") as f:
        del f["scale"]
    with pytest.raises(ValueError, match=r"metadata\.h5: missing 'scale'"):
        MpiInf3dhp(copy, "val")


def test_wrong_joint_layout_is_named(copy):
    # A 17-joint (test layout) skeleton where the 28-joint training layout belongs.
    with h5py.File(copy / "val" / "S4" / "Seq1" / "metadata.h5", "a") as f:
        joints = f["joints3d"][()]
        del f["joints3d"]
        f["joints3d"] = joints[:, :, :17]
    with pytest.raises(ValueError, match=r"\(cameras, frames, 28, 3\).*got \(14, 6, 17, 3\)"):
        MpiInf3dhp(copy, "val")


def test_missing_calibration_and_activity(copy):
    (copy / "val" / "S4" / "Seq1" / "camera.calibration").unlink()
    with pytest.raises(FileNotFoundError, match="camera.calibration"):
        MpiInf3dhp(copy, "val")
    scipy.io.savemat(copy / "test" / "S5" / "Seq1" / "annot_data.mat",
                     {"valid_frame": np.ones((6, 1))})
    with pytest.raises(ValueError, match="activity_annotation"):
        MpiInf3dhp(copy, "test")


def test_calibration_without_a_selected_camera(copy):
    path = copy / "train" / "S1" / "Seq1" / "camera.calibration"
    lines = path.read_text().splitlines()
    start = lines.index("name          5")
    path.write_text("\n".join(lines[:start] + lines[start + 7:]) + "\n")
    with pytest.raises(ValueError, match=r"no calibration for camera\(s\) \[5\]"):
        MpiInf3dhp(copy, "train")


def test_real_mpi_inf_3dhp():
    root = os.environ.get("MARGIPOSE_DATA_ROOT")
    if not root or not (Path(root) / "mpi3d").is_dir():
        pytest.skip("real MPI-INF-3DHP not available: set MARGIPOSE_DATA_ROOT to a root holding "
                    "mpi3d/{train,val,test}")
    val = MpiInf3dhp(Path(root) / "mpi3d", "val")
    assert len(val) == 18561  # MargiPose's test of its preprocessed val split
    test = MpiInf3dhp(Path(root) / "mpi3d", "test")
    assert test[0].meta["sequence"] == "TS1" and test[len(test) - 1].meta["sequence"] == "TS6"
    for source in (val, test):
        for index in (0, len(source) // 2, len(source) - 1):
            sample = source[index]
            assert sample.image.height == 768
            assert 1000 < sample.joints[14, 2] < 9000  # pelvis depth, mm
            pelvis = sample.camera.project(sample.joints[14])
            assert np.all((pelvis > 0) & (pelvis < np.array(sample.image.size)))
            if source is test:
                assert 1 <= sample.meta["activity_id"] <= 7
