"""Known-value tests for the dataset-to-canonical joint mappings in training.skeleton."""

import numpy as np
import pytest

from posecontract import skeleton as contract
from training.skeleton import (
    FLIP_PERMUTATION,
    JOINT_NAMES,
    NUM_JOINTS,
    ROOT,
    flip_joint_order,
    h36m_to_canonical,
    joint_index,
    mpi3dhp_to_canonical,
    mpii_to_canonical,
)


def _tagged(count: int, dims: int = 3) -> np.ndarray:
    """Return joints (count, dims) whose coordinates all equal the source index + 1."""
    return np.repeat(np.arange(1.0, count + 1)[:, None], dims, axis=1)


def test_reexports_the_contract_skeleton() -> None:
    assert JOINT_NAMES is contract.JOINT_NAMES and NUM_JOINTS == 17
    assert FLIP_PERMUTATION is contract.FLIP_PERMUTATION
    assert ROOT == joint_index("pelvis") == 14


def test_h36m_mapping_picks_the_published_indices() -> None:
    out = h36m_to_canonical(_tagged(32))
    assert out.shape == (17, 3)
    np.testing.assert_array_equal(
        out[:, 0] - 1, [15, 13, 25, 26, 27, 17, 18, 19, 1, 2, 3, 6, 7, 8, 0, 12, 14]
    )
    # H36M joint 0 is the hip centre (canonical pelvis) and 13 the thorax (canonical neck).
    assert out[ROOT, 0] == 1 and out[joint_index("neck"), 0] == 14


def test_mpi3dhp_mapping_picks_the_published_indices() -> None:
    out = mpi3dhp_to_canonical(_tagged(28))
    np.testing.assert_array_equal(
        out[:, 0] - 1, [7, 5, 14, 15, 16, 9, 10, 11, 23, 24, 25, 18, 19, 20, 4, 3, 6]
    )


def test_mappings_keep_batch_axes_and_coordinate_width() -> None:
    joints = np.random.default_rng(0).normal(size=(4, 5, 32, 2))
    out = h36m_to_canonical(joints)
    assert out.shape == (4, 5, 17, 2)
    np.testing.assert_array_equal(out[2, 3, 0], joints[2, 3, 15])
    assert mpi3dhp_to_canonical(np.zeros((7, 28, 3))).shape == (7, 17, 3)


def test_mappings_reject_the_wrong_joint_count() -> None:
    with pytest.raises(ValueError, match=r"Human3.6M joints must have shape \(\.\.\., 32, D\), "
                                         r"got \(17, 3\)"):
        h36m_to_canonical(np.zeros((17, 3)))
    with pytest.raises(ValueError, match=r"MPI-INF-3DHP .* got \(32, 3\)"):
        mpi3dhp_to_canonical(np.zeros((32, 3)))
    with pytest.raises(ValueError, match=r"MPII joints must have shape \(\.\.\., 16, 2\)"):
        mpii_to_canonical(np.zeros((16, 3)))


def _mpii_person() -> np.ndarray:
    """Return one labelled MPII person (16, 2) in pixels, torchdata joint order."""
    return np.array([
        [300, 700], [310, 560], [320, 420],   # right ankle, knee, hip
        [380, 420], [390, 560], [400, 700],   # left hip, knee, ankle
        [350, 420],                           # pelvis
        [350, 220],                           # thorax
        [352, 190],                           # upper neck
        [356, 100],                           # head top
        [260, 400], [270, 310], [300, 230],   # right wrist, elbow, shoulder
        [400, 230], [430, 310], [440, 400],   # left shoulder, elbow, wrist
    ], dtype=np.float64)


def test_mpii_mapping_derives_spine_and_head() -> None:
    person = _mpii_person()
    joints, mask = mpii_to_canonical(person)
    assert joints.shape == (17, 2) and mask.shape == (17,) and mask.dtype == bool
    assert mask.all()
    np.testing.assert_array_equal(joints[joint_index("head_top")], [356, 100])
    np.testing.assert_array_equal(joints[joint_index("neck")], [352, 190])
    np.testing.assert_array_equal(joints[joint_index("right_shoulder")], [300, 230])
    np.testing.assert_array_equal(joints[joint_index("left_wrist")], [440, 400])
    np.testing.assert_array_equal(joints[joint_index("right_ankle")], [300, 700])
    np.testing.assert_array_equal(joints[ROOT], [350, 420])
    # spine = 0.53 thorax + 0.47 pelvis; head = mean(head top, upper neck).
    np.testing.assert_allclose(joints[joint_index("spine")], [350, 0.53 * 220 + 0.47 * 420])
    np.testing.assert_allclose(joints[joint_index("head")], [354, 145])


def test_mpii_unlabelled_joints_and_derived_masks() -> None:
    person = _mpii_person()
    person[8] = 0  # upper neck missing: canonical neck and head unlabelled
    person[0] = 0  # right ankle missing
    person[6] = 0  # pelvis missing: the spine still follows the thorax's mask
    _, mask = mpii_to_canonical(person)
    unlabelled = {joint_index(n) for n in ("neck", "head", "right_ankle", "pelvis")}
    assert set(np.flatnonzero(~mask)) == unlabelled
    assert mask[joint_index("spine")] and mask[joint_index("head_top")]

    person = _mpii_person()
    person[7] = 0  # thorax missing: the spine goes with it
    _, mask = mpii_to_canonical(person)
    assert set(np.flatnonzero(~mask)) == {joint_index("spine")}


def test_mpii_label_mask_is_combined_and_batched() -> None:
    people = np.stack([_mpii_person(), _mpii_person()])
    people[1, 9] = 0  # second person: head top at (0, 0)
    labelled = np.ones((2, 16), dtype=bool)
    labelled[0, 3] = False  # first person: left hip marked unlabelled
    joints, mask = mpii_to_canonical(people, labelled)
    assert joints.shape == (2, 17, 2)
    assert set(np.flatnonzero(~mask[0])) == {joint_index("left_hip")}
    assert set(np.flatnonzero(~mask[1])) == {joint_index("head_top"), joint_index("head")}
    with pytest.raises(ValueError, match=r"label mask must have shape \(2, 16\), got \(16,\)"):
        mpii_to_canonical(people, np.ones(16, dtype=bool))


def test_a_joint_at_zero_on_one_axis_only_is_labelled() -> None:
    person = _mpii_person()
    person[5] = [0.0, 700.0]  # left ankle on the image's left border
    _, mask = mpii_to_canonical(person)
    assert mask[joint_index("left_ankle")]


def test_flip_joint_order_swaps_sides_and_is_an_involution() -> None:
    joints = _tagged(17, 3)
    flipped = flip_joint_order(joints)
    assert flipped[joint_index("left_wrist"), 0] == joint_index("right_wrist") + 1
    assert flipped[joint_index("right_hip"), 0] == joint_index("left_hip") + 1
    for centre in ("head_top", "neck", "pelvis", "spine", "head"):
        assert flipped[joint_index(centre), 0] == joint_index(centre) + 1
    np.testing.assert_array_equal(flip_joint_order(flipped), joints)
    mask = np.zeros((3, 17), dtype=bool)
    mask[:, joint_index("left_knee")] = True
    assert flip_joint_order(mask, axis=-1)[:, joint_index("right_knee")].all()
    with pytest.raises(ValueError, match=r"Axis -2 of shape \(16, 3\) must hold the 17"):
        flip_joint_order(np.zeros((16, 3)))
