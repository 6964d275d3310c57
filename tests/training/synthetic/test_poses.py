import numpy as np
import pytest

from training.synthetic import poses
from training.synthetic.motions import CLIP_JOINTS, TEST_CLIPS, default_motions


def test_clip_library_and_split():
    lib = default_motions()
    assert lib.rotations.shape[1:] == (len(CLIP_JOINTS), 3, 3)
    assert len(lib.clip_names) == 15 and len(lib.rotations) == 1620
    train, test = lib.frames("train"), lib.frames("test")
    assert len(train) + len(test) == len(lib.rotations) and not set(train) & set(test)
    assert {lib.clip_names[c] for c in lib.clip[test]} == set(TEST_CLIPS)
    # Walking: the knees stay within the hinge range.
    walk = lib.clip == lib.clip_names.index("walk")
    knee = lib.rotations[walk, CLIP_JOINTS.index("left_knee")]
    angles = [poses.hinge_angle(r, "knee") for r in knee]
    assert min(angles) > -0.1 and 0.5 < max(angles) < 2.0


def test_mirror_is_an_involution():
    pose = poses.random_pose(np.random.default_rng(0))
    np.testing.assert_allclose(poses.mirror(poses.mirror(pose)).rotations, pose.rotations,
                               atol=1e-12)


def test_random_poses_respect_hinge_limits_and_are_reproducible():
    for seed in range(20):
        pose = poses.random_pose(np.random.default_rng(seed))
        for joint in ("left_knee", "right_knee"):
            angle = poses.hinge_angle(pose.rotations[poses.POSE_JOINTS.index(joint)], "knee")
            assert poses.KNEE_RANGE[0] - 1e-9 <= angle <= poses.KNEE_RANGE[1] + 1e-9
    a = poses.random_pose(np.random.default_rng(7)).rotations
    b = poses.random_pose(np.random.default_rng(7)).rotations
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("split", ["train", "test"])
def test_sampled_clip_poses_come_from_their_split(split):
    lib = default_motions()
    rng = np.random.default_rng(3)
    clips = set()
    for _ in range(60):
        _, meta = poses.sample_pose(rng, lib, split)
        if "clip" in meta:
            clips.add(meta["clip"])
    assert clips and (clips <= set(TEST_CLIPS)) == (split == "test")
