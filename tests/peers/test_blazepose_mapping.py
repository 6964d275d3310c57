"""The 33 -> 17 BlazePose mapping on synthetic landmarks with known answers (no MediaPipe)."""

import numpy as np
import pytest

from peers import blazepose_mapping as bm
from posecontract import skeleton

LM = {name: i for i, name in enumerate(bm.LANDMARK_NAMES)}
J = {name: i for i, name in enumerate(skeleton.JOINT_NAMES)}


def random_landmarks(seed: int = 0, dims: int = 3) -> np.ndarray:
    """(33, dims) distinct random landmark coordinates."""
    return np.random.default_rng(seed).normal(scale=300.0, size=(bm.NUM_LANDMARKS, dims))


def test_joint_names_repeat_the_contract():
    assert bm.JOINT_NAMES == skeleton.JOINT_NAMES
    assert bm.ROOT == skeleton.ROOT


def test_landmark_indices_are_mediapipes():
    # MediaPipe's PoseLandmark enum: the indices the mapping relies on.
    assert len(bm.LANDMARK_NAMES) == 33
    assert (LM["nose"], LM["left_ear"], LM["right_ear"]) == (0, 7, 8)
    assert (LM["left_shoulder"], LM["right_shoulder"], LM["left_wrist"]) == (11, 12, 15)
    assert (LM["left_hip"], LM["right_hip"], LM["right_ankle"]) == (23, 24, 28)


def test_direct_joints_copy_their_landmark():
    points = random_landmarks()
    joints = bm.map_points(points)
    for name in ("right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
                 "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
                 "left_knee", "left_ankle"):
        np.testing.assert_array_equal(joints[J[name]], points[LM[name]], err_msg=name)


def test_derived_joints_are_midpoints():
    points = random_landmarks()
    joints = bm.map_points(points)
    hips = (points[LM["left_hip"]] + points[LM["right_hip"]]) / 2
    shoulders = (points[LM["left_shoulder"]] + points[LM["right_shoulder"]]) / 2
    np.testing.assert_allclose(joints[J["pelvis"]], hips, rtol=0, atol=1e-12)
    np.testing.assert_allclose(joints[J["neck"]], shoulders, rtol=0, atol=1e-12)
    np.testing.assert_allclose(joints[J["spine"]], (hips + shoulders) / 2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(joints[J["head"]],
                               (points[LM["left_ear"]] + points[LM["right_ear"]]) / 2,
                               rtol=0, atol=1e-12)


def test_head_top_extrapolates_neck_through_head():
    # Shoulders at +-200 mm, 100 mm above the hips; ears 200 mm above the shoulders.
    points = np.zeros((33, 3))
    points[LM["left_shoulder"]], points[LM["right_shoulder"]] = (200, -100, 0), (-200, -100, 0)
    points[LM["left_ear"]], points[LM["right_ear"]] = (80, -300, 10), (-80, -300, -10)
    joints = bm.map_points(points)
    np.testing.assert_allclose(joints[J["neck"]], (0, -100, 0))
    np.testing.assert_allclose(joints[J["head"]], (0, -300, 0))
    np.testing.assert_allclose(joints[J["head_top"]], (0, -300 - bm.HEAD_TOP_RATIO * 200, 0))


def test_batch_dimensions_map_like_single_samples():
    batch = np.stack([random_landmarks(seed, dims=2) for seed in range(3)])  # (3, 33, 2)
    mapped = bm.map_points(batch)
    assert mapped.shape == (3, 17, 2)
    for i in range(3):
        np.testing.assert_array_equal(mapped[i], bm.map_points(batch[i]))


def test_mirrored_landmarks_map_to_mirrored_joints():
    points = random_landmarks(seed=1)
    swap = [LM[n.replace("left_", "@").replace("right_", "left_").replace("@", "right_")]
            for n in bm.LANDMARK_NAMES]
    mirrored = points[swap] * (-1, 1, 1)
    expected = bm.map_points(points)[list(skeleton.FLIP_PERMUTATION)] * (-1, 1, 1)
    np.testing.assert_allclose(bm.map_points(mirrored), expected, rtol=0, atol=1e-9)


def test_mask_all_visible():
    assert bm.map_mask(np.ones(33)).all()


def test_mask_follows_source_landmarks():
    visibility = np.ones(33)
    visibility[LM["left_ear"]] = 0.3
    visibility[LM["right_hip"]] = np.nan  # undefined counts as not visible
    mask = bm.map_mask(visibility)
    hidden = {"head", "head_top", "right_hip", "pelvis", "spine"}
    assert {skeleton.JOINT_NAMES[j] for j in np.flatnonzero(~mask)} == hidden


def test_mask_threshold_is_inclusive():
    visibility = np.full(33, 0.9)
    visibility[LM["left_wrist"]] = bm.VISIBILITY_THRESHOLD
    visibility[LM["right_wrist"]] = np.nextafter(bm.VISIBILITY_THRESHOLD, 0)
    mask = bm.map_mask(visibility)
    assert mask[J["left_wrist"]] and not mask[J["right_wrist"]]


def test_mask_keeps_batch_dimensions():
    visibility = np.ones((2, 4, 33))
    visibility[1, 2, LM["left_knee"]] = 0.0
    mask = bm.map_mask(visibility)
    assert mask.shape == (2, 4, 17)
    assert mask.sum() == 2 * 4 * 17 - 1 and not mask[1, 2, J["left_knee"]]


def test_root_relative_zeroes_the_pelvis_and_keeps_offsets():
    joints = bm.map_points(random_landmarks())
    rel = bm.root_relative(joints)
    np.testing.assert_array_equal(rel[bm.ROOT], 0.0)
    np.testing.assert_allclose(rel[3] - rel[7], joints[3] - joints[7], atol=1e-9)


@pytest.mark.parametrize("shape", [(17, 3), (33,), (2, 32, 2)])
def test_map_points_rejects_wrong_shapes(shape):
    with pytest.raises(ValueError, match=r"\(\.\.\., 33, D\)"):
        bm.map_points(np.zeros(shape))


def test_map_mask_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(\.\.\., 33\)"):
        bm.map_mask(np.ones(17))
