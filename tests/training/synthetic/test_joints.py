import numpy as np
import pytest

from training.skeleton import FLIP_PERMUTATION, JOINT_NAMES
from training.synthetic import joints, poses, skinning
from training.synthetic.body import default_bodies

J = {name: i for i, name in enumerate(JOINT_NAMES)}


def _pose_joints(asset, body, pose):
    rest = asset.rest_vertices(body)
    rots = poses.bone_rotations(asset, poses.retarget(asset, body), pose)
    transforms = skinning.bone_transforms(asset.bone_heads[body], asset.bone_parents, rots)
    verts = skinning.skin(rest, asset.skin_bones, asset.skin_weights, transforms)
    return joints.posed_joints(joints.joint_rig(asset, body, rest), transforms, verts), verts


@pytest.fixture(scope="module")
def asset():
    return default_bodies()


@pytest.mark.parametrize("body", [0, 17, 42])
def test_rest_joints_are_left_right_symmetric(asset, body):
    rest = asset.rest_vertices(body)
    identity = np.tile(np.eye(3), (len(asset.bone_names), 1, 1))
    transforms = skinning.bone_transforms(asset.bone_heads[body], asset.bone_parents, identity)
    pts = joints.posed_joints(joints.joint_rig(asset, body, rest), transforms, rest)
    mirrored = pts[list(FLIP_PERMUTATION)] * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(mirrored, pts, atol=0.01)  # metres


@pytest.mark.parametrize("body", [3, 29, 60])
def test_bone_lengths_match_human_norms(asset, body):
    pts, verts = _pose_joints(asset, body, poses.rest_pose())
    stature = np.ptp(verts[:, 2])

    def length(a, b):
        return np.linalg.norm(pts[J[a]] - pts[J[b]]) / stature

    # Segment lengths as fractions of standing height (anthropometric tables, +-25%).
    for (a, b), norm in {("right_hip", "right_knee"): 0.245, ("left_knee", "left_ankle"): 0.246,
                         ("right_shoulder", "right_elbow"): 0.186,
                         ("left_elbow", "left_wrist"): 0.146,
                         ("left_shoulder", "right_shoulder"): 0.2,
                         ("left_hip", "right_hip"): 0.11,
                         ("pelvis", "neck"): 0.28, ("neck", "head_top"): 0.18}.items():
        assert 0.75 * norm < length(a, b) < 1.25 * norm, (a, b, length(a, b))
    # Vertical order of the standing body.
    z = pts[:, 2]
    assert z[J["right_ankle"]] < z[J["right_knee"]] < z[J["pelvis"]] < z[J["spine"]]
    assert z[J["spine"]] < z[J["neck"]] < z[J["head"]] < z[J["head_top"]]
    assert z[J["left_wrist"]] < z[J["left_elbow"]] < z[J["left_shoulder"]]
    assert abs(z[J["head_top"]] - verts[:, 2].max()) < 1e-9


def test_joints_move_with_their_bones(asset):
    pose = poses.rest_pose()
    bent = pose.rotations.copy()
    bent[poses.POSE_JOINTS.index("left_elbow")] = poses.hinge("elbow", np.pi / 2)
    straight, _ = _pose_joints(asset, 5, pose)
    flexed, _ = _pose_joints(asset, 5, poses.Pose(bent))
    moved = np.linalg.norm(flexed - straight, axis=1) > 1e-6
    assert list(np.flatnonzero(moved)) == [J["left_wrist"]]
    # The forearm keeps its length and now points forward (-y), horizontal.
    fore = flexed[J["left_wrist"]] - flexed[J["left_elbow"]]
    rest_fore = straight[J["left_wrist"]] - straight[J["left_elbow"]]
    assert np.linalg.norm(fore) == pytest.approx(np.linalg.norm(rest_fore))
    assert fore[1] < -0.9 * np.linalg.norm(fore)
