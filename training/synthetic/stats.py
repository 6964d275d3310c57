"""Print variety statistics of the synthetic samples: poses, viewpoints, bodies, occlusion.

    python -m training.synthetic.stats --split train --count 300

Joint angles come from the 3D joints (knee: thigh-shin angle, elbow: upper arm-forearm; 0 is
straight). Pose spread is the per-joint standard deviation, averaged over joints, of the
joints expressed in a body frame (origin the pelvis; x towards the left hip, z towards the
neck), so it measures articulation, not viewpoint. Viewpoints are the camera's azimuth around
the body's rest facing and its elevation above the horizontal.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from training.skeleton import JOINT_NAMES
from training.synthetic.body import default_bodies
from training.synthetic.source import SyntheticHumans

J = {name: i for i, name in enumerate(JOINT_NAMES)}


def hinge_angles(joints: np.ndarray, a: str, b: str, c: str) -> np.ndarray:
    """Bend (degrees) at joint b of the chain a-b-c for joints (N, 17, 3); 0 = straight."""
    u = joints[:, J[a]] - joints[:, J[b]]
    v = joints[:, J[c]] - joints[:, J[b]]
    cos = np.sum(u * v, axis=1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
    return 180 - np.degrees(np.arccos(np.clip(cos, -1, 1)))


def body_frame(joints: np.ndarray) -> np.ndarray:
    """Joints (N, 17, 3) in each skeleton's own pelvis frame (see the module docstring)."""
    rel = joints - joints[:, J["pelvis"]][:, None]
    x = rel[:, J["left_hip"]]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    z = rel[:, J["neck"]] - np.sum(rel[:, J["neck"]] * x, axis=1, keepdims=True) * x
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    y = np.cross(z, x)
    frame = np.stack([x, y, z], axis=1)  # (N, 3, 3) rows
    return np.einsum("nij,nkj->nki", frame, rel)


def summary(values: np.ndarray) -> str:
    """Percentiles 5/25/50/75/95 of values, one decimal."""
    p = np.percentile(values, [5, 25, 50, 75, 95])
    return " / ".join(f"{x:.1f}" for x in p)


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(description="Variety statistics of synthetic samples")
    p.add_argument("--split", default="train", choices=("train", "test"))
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(args: argparse.Namespace) -> None:
    """Render `count` samples and print their statistics."""
    source = SyntheticHumans(args.split, size=args.count, seed=args.seed)
    samples = [source[i] for i in range(args.count)]
    joints = np.stack([s.joints for s in samples])
    meta = [s.meta for s in samples]
    asset = default_bodies()
    print(f"{args.count} {args.split} samples, seed {args.seed} (percentiles 5/25/50/75/95)")
    print("pose sources:", dict(Counter(m["pose_source"] for m in meta)))
    print("clips:", dict(Counter(m.get("clip", "-") for m in meta).most_common()))
    for name, chain in (("knee", ("hip", "knee", "ankle")), ("elbow", ("shoulder", "elbow",
                                                                       "wrist"))):
        angles = np.concatenate([hinge_angles(joints, *(f"{s}_{c}" for c in chain))
                                 for s in ("left", "right")])
        print(f"{name} bend (deg): {summary(angles)}")
    local = body_frame(joints)
    print(f"pose spread (mm, mean per-joint std in the body frame): "
          f"{local.std(axis=0).mean(axis=1).mean():.0f}")
    print(f"azimuth (deg): {summary(np.array([m['azimuth'] for m in meta]))}")
    print(f"elevation (deg): {summary(np.array([m['elevation'] for m in meta]))}")
    print(f"distance to pelvis (m): {summary(joints[:, J['pelvis'], 2] / 1000)}")
    heights = np.array([np.ptp(asset.rest_vertices(m["body"])[:, 2]) for m in meta])
    print(f"body height (m, standing): {summary(heights)}; distinct bodies "
          f"{len({m['body'] for m in meta})}")
    fill = np.array([s.box.side / 1.5 / s.image.height for s in samples])
    print(f"person extent / image height: {summary(fill)}")
    occ = np.array([m["occlusion"] for m in meta])
    print(f"occluded samples: {np.mean(occ > 0):.0%}; hidden body fraction when occluded: "
          f"{summary(occ[occ > 0]) if np.any(occ > 0) else '-'}")
    behind = np.stack([s.self_occluded for s in samples if s.self_occluded is not None])
    if len(behind):
        print(f"joints behind the body itself: {behind.mean():.1%} (per joint: "
              + ", ".join(f"{JOINT_NAMES[j]} {behind[:, j].mean():.0%}"
                          for j in np.flatnonzero(behind.any(axis=0))) + ")")
    print("backgrounds:", dict(Counter(m["background"] for m in meta)))
    print("blur:", dict(Counter(m.get("blur", "none").split()[0] for m in meta)),
          f"jpeg: {np.mean(['jpeg' in m for m in meta]):.0%}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
