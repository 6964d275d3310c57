"""The 17 canonical joints on the Anny body, exact for every pose.

Each joint is a point fixed in one bone's frame (so it moves rigidly with that bone), or the
mean of two such points. Bone heads are the rig's joint centres. The definitions:

    right/left hip        head of upperleg01.R/L (the hip joint centre)
    right/left knee       head of lowerleg01.R/L
    right/left ankle      head of foot.R/L
    right/left shoulder   head of upperarm01.R/L (the glenohumeral joint)
    right/left elbow      head of lowerarm01.R/L
    right/left wrist      head of wrist.R/L
    pelvis (root)         mean of the two hips, as in Human3.6M's hip-centred root
    neck (thorax)         mean of the heads of clavicle.R/L: the sternoclavicular joints, at the
                          top of the sternum (MPII's thorax, Human3.6M's "Thorax"/MPI's "neck")
    spine                 the rest-pose point 0.53 thorax + 0.47 pelvis (MargiPose's MPII spine),
                          fixed to the spine bone that spans its height, so it follows the spine
    head_top              the highest skull vertex of the rest mesh (no hair is modelled), skinned
    head                  midpoint of the head bone's head (the top of the neck, at the skull
                          base) and the head top, fixed to the head bone (MPII: mean of upper
                          neck and head top)

Coordinates are those of the skinned body (Anny's axes, metres) until the scene moves them into
the camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.skeleton import JOINT_NAMES, NUM_JOINTS
from training.synthetic import skinning
from training.synthetic.body import BodyAsset

# Joint -> bone whose head it is, for the 12 limb joints.
_LIMB_HEADS = {
    "hip": "upperleg01", "knee": "lowerleg01", "ankle": "foot",
    "shoulder": "upperarm01", "elbow": "lowerarm01", "wrist": "wrist",
}
SPINE_THORAX_WEIGHT = 0.53
_SPINE_BONES = ("spine05", "spine04", "spine03", "spine02", "spine01")


@dataclass(frozen=True, eq=False)
class JointRig:
    """Each canonical joint as points fixed to bones: joint j = mean over its entries of
    transform[bones[j, e]] applied to points[j, e] (two entries per joint; single-point joints
    repeat theirs). The head top is replaced by its skinned vertex."""

    bones: np.ndarray  # (17, 2) int bone indices
    points: np.ndarray  # (17, 2, 3) rest-pose points, metres
    head_top_vertex: int


def joint_rig(asset: BodyAsset, body: int, rest_vertices: np.ndarray) -> JointRig:
    """Attach the 17 canonical joints to the bones of body `body` (rest mesh (V, 3))."""
    heads = asset.bone_heads[body]
    bones = np.zeros((NUM_JOINTS, 2), dtype=np.int64)
    points = np.zeros((NUM_JOINTS, 2, 3))

    def fix(joint: str, *entries: tuple[str, np.ndarray]) -> None:
        j = JOINT_NAMES.index(joint)
        pairs = entries if len(entries) == 2 else entries * 2
        for e, (bone, point) in enumerate(pairs):
            bones[j, e], points[j, e] = asset.bone(bone), point

    def head(bone: str) -> np.ndarray:
        return heads[asset.bone(bone)]

    for side, suffix in (("right", "R"), ("left", "L")):
        for joint, bone in _LIMB_HEADS.items():
            name = f"{bone}.{suffix}"
            fix(f"{side}_{joint}", (name, head(name)))
    fix("pelvis", ("upperleg01.R", head("upperleg01.R")), ("upperleg01.L", head("upperleg01.L")))
    fix("neck", ("clavicle.R", head("clavicle.R")), ("clavicle.L", head("clavicle.L")))
    pelvis = 0.5 * (head("upperleg01.R") + head("upperleg01.L"))
    thorax = 0.5 * (head("clavicle.R") + head("clavicle.L"))
    spine = SPINE_THORAX_WEIGHT * thorax + (1 - SPINE_THORAX_WEIGHT) * pelvis
    below = [b for b in _SPINE_BONES if head(b)[2] <= spine[2]]
    fix("spine", (below[-1] if below else _SPINE_BONES[0], spine))
    top = rest_vertices[asset.head_top]
    fix("head_top", ("head", top))
    fix("head", ("head", 0.5 * (head("head") + top)))
    return JointRig(bones, points, asset.head_top)


def posed_joints(rig: JointRig, transforms: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Canonical joints (17, 3) under bone transforms (B, 3, 4), with posed vertices (V, 3)."""
    moved = skinning.apply(transforms[rig.bones], rig.points)  # (17, 2, 3)
    joints = moved.mean(axis=1)
    joints[JOINT_NAMES.index("head_top")] = vertices[rig.head_top_vertex]
    return joints
