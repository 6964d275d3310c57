"""The canonical 17-joint skeleton (MPI-INF-3DHP test-set order, as in MargiPose).

"neck" is the thorax and "head" the point between neck and head top. The root is the pelvis.
"""

JOINT_NAMES: tuple[str, ...] = (
    "head_top",        # 0
    "neck",            # 1  (thorax)
    "right_shoulder",  # 2
    "right_elbow",     # 3
    "right_wrist",     # 4
    "left_shoulder",   # 5
    "left_elbow",      # 6
    "left_wrist",      # 7
    "right_hip",       # 8
    "right_knee",      # 9
    "right_ankle",     # 10
    "left_hip",        # 11
    "left_knee",       # 12
    "left_ankle",      # 13
    "pelvis",          # 14 (root)
    "spine",           # 15
    "head",            # 16 (between neck and head top)
)
NUM_JOINTS = len(JOINT_NAMES)

# Parent of each joint; the root is its own parent.
PARENTS: tuple[int, ...] = (1, 15, 1, 2, 3, 1, 5, 6, 14, 8, 9, 14, 11, 12, 14, 14, 1)

# Index permutation that swaps left and right under a horizontal flip.
FLIP_PERMUTATION: tuple[int, ...] = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 14, 15, 16)

ROOT = JOINT_NAMES.index("pelvis")

# The 14 joints scored on MPI-INF-3DHP (VNect common skeleton): all but pelvis, spine and head.
EVAL_14: tuple[int, ...] = tuple(range(14))

# Bones as (child, parent) pairs, the root excluded: 16 bones.
BONES: tuple[tuple[int, int], ...] = tuple(
    (j, p) for j, p in enumerate(PARENTS) if j != p
)


def joint_index(name: str) -> int:
    """Return the canonical index of a joint name."""
    try:
        return JOINT_NAMES.index(name)
    except ValueError:
        raise KeyError(f"Unknown joint {name!r}; joints are {', '.join(JOINT_NAMES)}") from None
