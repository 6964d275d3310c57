"""Body poses: mocap clip frames, random poses within joint limits, their mixtures, and the
retargeting of a pose onto the Anny bones.

A `Pose` holds one rotation per joint of `POSE_JOINTS` in the canonical frame of
`training.synthetic.motions` (Anny's axes: x the person's left, y backwards, z up; rest = upright,
legs straight, arms hanging down). The root rotation is global; every other rotation is local,
relative to its parent segment (root -> chest -> neck; root -> hips -> knees -> ankles;
chest -> shoulders -> elbows -> wrists), as in DeepMimic. Hinges turn about x: knee flexion is
positive (the foot goes back), elbow flexion negative (the hand comes forward).

Retargeting (`bone_rotations`): each segment's world rotation W is composed down the chain; a
bone's world delta is D = W A, where A first turns the bone from Anny's rest pose (an A-pose:
arms out and down, elbows a little bent, feet apart) into the canonical rest. A is the smallest
rotation taking the upper arm (thigh) onto the downward vertical, followed for the forearm
(shin) by the hinge rotation straightening it. Bones between mapped segments share the motion:

    root, pelvis.L/R             W_root
    spine05 .. spine01           W_root Q_chest^f, f = 0.15, 0.35, 0.6, 0.85, 1 (bottom to top)
    neck01 .. neck03, head, eyes W_chest Q_neck^f, f = 0.4, 0.7, 1, 1, 1
    clavicle, shoulder01         W_chest S^0.2, S the upper arm's swing from Anny's rest
                                 (shoulders shrug a little when the arm rises)
    upperleg01/02                W_hip A_thigh
    lowerleg01/02                W_knee A_shin
    foot, toes                   W_ankle A_shin
    upperarm01/02                W_shoulder A_upper
    lowerarm01/02                W_elbow A_fore
    wrist, metacarpals, fingers  W_wrist A_fore
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from training.synthetic import rotations
from training.synthetic.body import BodyAsset
from training.synthetic.motions import CLIP_JOINTS, MotionLibrary

POSE_JOINTS: tuple[str, ...] = CLIP_JOINTS + ("right_wrist", "left_wrist")
_J = {name: i for i, name in enumerate(POSE_JOINTS)}
DOWN = np.array([0.0, 0.0, -1.0])
X_AXIS, Y_AXIS, Z_AXIS = np.eye(3)
# Hinge flexion ranges, radians, and the sign of flexion about +x.
KNEE_RANGE, ELBOW_RANGE = (0.0, math.radians(150)), (0.0, math.radians(150))
_HINGE_SIGN = {"knee": 1.0, "elbow": -1.0}
_SPINE_SHARE = (("spine05", 0.15), ("spine04", 0.35), ("spine03", 0.6), ("spine02", 0.85),
                ("spine01", 1.0))
_NECK_SHARE = (("neck01", 0.4), ("neck02", 0.7), ("neck03", 1.0))
SHRUG = 0.2
# Pose sources of a draw and their probabilities in training (test: no mixing).
SOURCES = ("clip", "mix", "random")
_TRAIN_PROBS = (0.45, 0.2, 0.35)
_TEST_PROBS = (0.6, 0.0, 0.4)


@dataclass(frozen=True, eq=False)
class Pose:
    """Rotations (len(POSE_JOINTS), 3, 3) in the canonical frame (see the module docstring)."""

    rotations: np.ndarray


def rest_pose() -> Pose:
    """Upright, legs straight, arms hanging down."""
    return Pose(np.tile(np.eye(3), (len(POSE_JOINTS), 1, 1)))


def clip_pose(library: MotionLibrary, frame: int) -> Pose:
    """Frame `frame` of the clip library, wrists straight."""
    rots = np.concatenate([library.rotations[frame], np.tile(np.eye(3), (2, 1, 1))])
    return Pose(rots)


def mirror(pose: Pose) -> Pose:
    """The left-right mirror image of a pose."""
    flip = np.diag([-1.0, 1.0, 1.0])
    order = [_J[_swap(name)] for name in POSE_JOINTS]
    return Pose(flip @ pose.rotations[order] @ flip)


def _swap(name: str) -> str:
    """The joint on the other side ("left_knee" <-> "right_knee")."""
    if name.startswith("left_"):
        return "right_" + name.removeprefix("left_")
    if name.startswith("right_"):
        return "left_" + name.removeprefix("right_")
    return name


def hinge_angle(rotation: np.ndarray, joint: str) -> float:
    """Flexion angle of a knee or elbow rotation (about x), in radians."""
    vec = rotations.log(rotation)
    return float(_HINGE_SIGN[joint] * vec[0])


def hinge(joint: str, angle: float) -> np.ndarray:
    """The rotation of a knee or elbow flexed by `angle` radians."""
    return rotations.about(X_AXIS, _HINGE_SIGN[joint] * angle)


def perturb(pose: Pose, rng: np.random.Generator, degrees: float = 8.0) -> Pose:
    """Add per-joint noise: a random rotation of ~N(0, degrees) per ball joint, a flexion change
    of ~N(0, 1.5 degrees) per hinge, kept within the hinge's range."""
    rots = pose.rotations.copy()
    for name, j in _J.items():
        kind = name.split("_")[-1]
        if kind in _HINGE_SIGN:
            lo, hi = KNEE_RANGE if kind == "knee" else ELBOW_RANGE
            angle = hinge_angle(rots[j], kind) + rng.normal(0, math.radians(1.5 * degrees))
            rots[j] = hinge(kind, float(np.clip(angle, lo, hi)))
        elif name != "root":
            rots[j] = rots[j] @ rotations.axis_angle(rng.normal(0, math.radians(degrees), 3))
    return Pose(rots)


def mix(upper: Pose, lower: Pose) -> Pose:
    """Upper body (root, chest, neck, arms) of `upper` on the legs of `lower`."""
    rots = upper.rotations.copy()
    for name in ("hip", "knee", "ankle"):
        for side in ("right", "left"):
            rots[_J[f"{side}_{name}"]] = lower.rotations[_J[f"{side}_{name}"]]
    return Pose(rots)


def _direction(flex: float, abduct: float, lateral_sign: float) -> np.ndarray:
    """Limb direction flexed forward by `flex` and abducted sideways by `abduct` (radians)."""
    return np.array([
        lateral_sign * math.sin(abduct),
        -math.sin(flex) * math.cos(abduct),
        -math.cos(flex) * math.cos(abduct),
    ])


def _euler(rng: np.random.Generator, limits_deg: tuple[float, float, float],
           spread: float = 0.5) -> np.ndarray:
    """Rotation about x, then y, then z, each ~N(0, spread x limit) clipped to +-limit."""
    angles = [math.radians(float(np.clip(rng.normal(0, spread * lim), -lim, lim)))
              for lim in limits_deg]
    return (rotations.about(Z_AXIS, angles[2]) @ rotations.about(Y_AXIS, angles[1])
            @ rotations.about(X_AXIS, angles[0]))


def random_pose(rng: np.random.Generator) -> Pose:
    """A pose drawn joint by joint within anatomical limits, biased towards relaxed angles."""
    rots = np.tile(np.eye(3), (len(POSE_JOINTS), 1, 1))
    tilt = rng.normal(0, math.radians(6), 2) if rng.random() < 0.9 else rng.normal(0, 1.2, 2)
    rots[_J["root"]] = rotations.axis_angle(np.array([tilt[0], tilt[1], 0.0]))
    chest_flex = math.radians(float(np.clip(rng.normal(10, 25), -25, 70)))
    rots[_J["chest"]] = _euler(rng, (0, 25, 35)) @ rotations.about(X_AXIS, chest_flex)
    rots[_J["neck"]] = _euler(rng, (40, 25, 60))
    for side, lateral in (("left", 1.0), ("right", -1.0)):
        flex = math.radians(float(np.clip(
            rng.normal(10, 25) if rng.random() < 0.6 else rng.uniform(-25, 115), -25, 120)))
        abduct = math.radians(float(np.clip(rng.normal(5, 14), -20, 50)))
        twist = rotations.about(Z_AXIS, math.radians(rng.uniform(-30, 30)))
        swing = rotations.between(DOWN, _direction(flex, abduct, lateral))
        rots[_J[f"{side}_hip"]] = swing @ twist
        knee = rng.uniform(0, 40) if rng.random() < 0.5 else rng.uniform(0, 145)
        rots[_J[f"{side}_knee"]] = hinge("knee", math.radians(knee))
        rots[_J[f"{side}_ankle"]] = _euler(rng, (25, 10, 10))
        rots[_J[f"{side}_shoulder"]] = _shoulder(rng, lateral)
        elbow = rng.uniform(0, 150) if rng.random() < 0.6 else rng.uniform(0, 40)
        rots[_J[f"{side}_elbow"]] = hinge("elbow", math.radians(elbow))
        rots[_J[f"{side}_wrist"]] = _euler(rng, (60, 25, 40))
    return Pose(rots)


def _shoulder(rng: np.random.Generator, lateral: float) -> np.ndarray:
    """A shoulder rotation: a reachable upper-arm direction, then a twist about the arm."""
    while True:
        if rng.random() < 0.4:
            d = DOWN + rng.normal(0, 0.6, 3)
        else:
            d = rng.normal(0, 1, 3)
        d /= np.linalg.norm(d)
        # Not far across the chest, not far behind the back (more so when raised).
        if lateral * d[0] > -0.4 and d[1] < 0.45 - 0.35 * max(d[2], 0.0):
            break
    twist = rotations.about(Z_AXIS, math.radians(rng.uniform(-50, 50)))
    return rotations.between(DOWN, d) @ twist


def sample_pose(rng: np.random.Generator, library: MotionLibrary, split: str
                ) -> tuple[Pose, dict[str, object]]:
    """Draw a pose for `split` ("train" or "test"): a clip frame with noise, a mix of two clip
    frames, or a random pose; clips are equally likely whatever their length. Clip poses are
    mirrored half the time and get a random heading. Returns the pose and its provenance
    (source, clip, frame)."""
    frames = library.frames(split)
    probs = _TRAIN_PROBS if split == "train" else _TEST_PROBS
    source = SOURCES[int(rng.choice(len(SOURCES), p=probs))]
    if source == "random":
        return random_pose(rng), {"pose_source": "random"}
    frame = _clip_frame(rng, library, frames)
    pose = clip_pose(library, frame)
    meta: dict[str, object] = {"pose_source": source,
                               "clip": library.clip_names[library.clip[frame]], "frame": frame}
    if source == "mix":
        other = _clip_frame(rng, library, frames)
        pose = mix(pose, clip_pose(library, other))
        meta["frame_lower"] = other
    if rng.random() < 0.5:
        pose = mirror(pose)
    wrists = [_euler(rng, (50, 20, 30)) for _ in range(2)]
    pose = perturb(pose, rng, degrees=float(rng.uniform(3, 12)))
    rots = pose.rotations.copy()
    rots[_J["right_wrist"]], rots[_J["left_wrist"]] = wrists
    # Random heading and a little tilt: the clip's own heading only says where it walked.
    yaw = rotations.about(Z_AXIS, rng.uniform(-math.pi, math.pi))
    rots[_J["root"]] = yaw @ rots[_J["root"]]
    return Pose(rots), meta


def _clip_frame(rng: np.random.Generator, library: MotionLibrary, frames: np.ndarray) -> int:
    """A frame among `frames`: a clip uniformly (long clips do not dominate), then a frame."""
    clips = np.unique(library.clip[frames])
    clip = clips[rng.integers(len(clips))]
    own = frames[library.clip[frames] == clip]
    return int(own[rng.integers(len(own))])


@cache
def _bone_groups(names: tuple[str, ...]) -> dict[tuple[str, str | None], list[int]]:
    """Bone indices by (name stem without digits, side): ("finger", "L") -> [...]; side None
    collects both sides and unsided bones."""
    groups: dict[tuple[str, str | None], list[int]] = {}
    for b, name in enumerate(names):
        stem, _, suffix = name.partition(".")
        base = stem.split("-")[0].rstrip("0123456789")
        groups.setdefault((base, suffix or None), []).append(b)
        if suffix:
            groups.setdefault((base, None), []).append(b)
    return groups


@dataclass(frozen=True, eq=False)
class Retarget:
    """Per-body rest corrections A (3, 3) from Anny's A-pose to the canonical rest."""

    upper: dict[str, np.ndarray]  # side "L"/"R" -> A_upper
    fore: dict[str, np.ndarray]
    thigh: dict[str, np.ndarray]
    shin: dict[str, np.ndarray]
    arm_rest: dict[str, np.ndarray]  # side -> unit rest direction of the upper arm


def retarget(asset: BodyAsset, body: int) -> Retarget:
    """Compute the rest corrections of body `body` from its rest bone heads."""
    heads = asset.bone_heads[body]

    def head(name: str) -> np.ndarray:
        return heads[asset.bone(name)]

    out: dict[str, dict[str, np.ndarray]] = {k: {} for k in ("upper", "fore", "thigh", "shin",
                                                             "arm_rest")}
    for s in ("L", "R"):
        for first, second, a, b, c in (("upper", "fore", "upperarm01", "lowerarm01", "wrist"),
                                       ("thigh", "shin", "upperleg01", "lowerleg01", "foot")):
            d1 = head(f"{b}.{s}") - head(f"{a}.{s}")
            d2 = head(f"{c}.{s}") - head(f"{b}.{s}")
            a1 = rotations.between(d1, DOWN)
            out[first][s] = a1
            out[second][s] = rotations.between(a1 @ d2, DOWN) @ a1
        arm = head(f"lowerarm01.{s}") - head(f"upperarm01.{s}")
        out["arm_rest"][s] = arm / np.linalg.norm(arm)
    return Retarget(**out)


def bone_rotations(asset: BodyAsset, corrections: Retarget, pose: Pose) -> np.ndarray:
    """World delta rotations (B, 3, 3) of every bone for `pose` (see the module docstring)."""
    q = pose.rotations
    w_root = q[_J["root"]]
    w_chest = w_root @ q[_J["chest"]]
    w_neck = w_chest @ q[_J["neck"]]
    out = np.tile(w_root, (len(asset.bone_names), 1, 1))

    groups = _bone_groups(asset.bone_names)

    def put(prefixes: tuple[str, ...], rotation: np.ndarray, side: str | None = None) -> None:
        for prefix in prefixes:
            out[groups.get((prefix, side), [])] = rotation

    for bone, share in _SPINE_SHARE:
        out[asset.bone(bone)] = w_root @ rotations.power(q[_J["chest"]], share)
    for bone, share in _NECK_SHARE:
        out[asset.bone(bone)] = w_chest @ rotations.power(q[_J["neck"]], share)
    put(("head", "eye"), w_neck)
    for s, side in (("L", "left"), ("R", "right")):
        w_hip = w_root @ q[_J[f"{side}_hip"]]
        w_knee = w_hip @ q[_J[f"{side}_knee"]]
        w_ankle = w_knee @ q[_J[f"{side}_ankle"]]
        put(("upperleg",), w_hip @ corrections.thigh[s], s)
        put(("lowerleg",), w_knee @ corrections.shin[s], s)
        put(("foot", "toe"), w_ankle @ corrections.shin[s], s)
        w_shoulder = w_chest @ q[_J[f"{side}_shoulder"]]
        w_elbow = w_shoulder @ q[_J[f"{side}_elbow"]]
        w_wrist = w_elbow @ q[_J[f"{side}_wrist"]]
        upper = w_shoulder @ corrections.upper[s]
        rest_dir = corrections.arm_rest[s]
        swing = rotations.between(rest_dir, w_chest.T @ upper @ rest_dir)
        put(("clavicle", "shoulder"), w_chest @ rotations.power(swing, SHRUG), s)
        put(("upperarm",), upper, s)
        put(("lowerarm",), w_elbow @ corrections.fore[s], s)
        put(("wrist", "finger", "metacarpal"), w_wrist @ corrections.fore[s], s)
    return out
