"""MPII Human Pose with Newell's pose-hg-train annotations: one 2D-only `Sample` per person.

Expected tree under the dataset directory (`<data root>/mpii`)::

    images/{imgname}   the dataset's JPEGs (24,984)
    annot.h5           index, person, istrain, imgname, center (N, 2), scale (N,),
                       part (N, 16, 2), visible (N, 16), normalize (N,)
    valid.h5           index, person: the people of the validation subset

Splits (as torchdata's MpiiData, used by MargiPose): val = the people listed in valid.h5;
train = the other people with istrain = 1; trainval = train, then val. (istrain = 0 is the
unlabelled test set, not read here.) Keypoints are 1-based MATLAB pixels, used without a shift,
as the reference did; a joint at (0, 0) is unlabelled. `visible` marks occlusion, not labelling,
so it does not change the mask. The box is centred on (cx, cy + 15 scale) with side 250 scale;
the camera is a stand-in (focal 1.2 x image width, principal point at the image centre) and the
keypoints are lifted onto its focal plane. Joints outside the crop are masked later, after
cropping, by the training transforms.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from training.camera import AUG_MPII, lift_to_focal_plane, mpii_box, mpii_camera
from training.data.sample import Sample, open_rgb
from training.skeleton import mpii_to_canonical

SPLITS = ("train", "val", "trainval")
_ANNOT_FIELDS = (
    "index", "person", "istrain", "imgname", "center", "scale", "part", "normalize",
)
_VALID_FIELDS = ("index", "person")


def decode_names(raw: np.ndarray) -> list[str]:
    """Image names stored as strings or as rows of zero-padded character codes (N, L)."""
    raw = np.asarray(raw)
    if raw.dtype.kind in "SUO":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in raw.reshape(-1)]
    codes = raw.astype(np.uint8).reshape(len(raw), -1)
    return [bytes(row).split(b"\0")[0].decode() for row in codes]


def _read_h5(path: Path, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read `fields` from an HDF5 file, naming the file and the fields it lacks."""
    if not path.is_file():
        raise FileNotFoundError(
            f"MPII annotation file {path} is missing; it comes from Newell's pose-hg-train "
            f"(data/mpii/annot.h5 and annot/valid.h5)"
        )
    with h5py.File(path, "r") as f:
        missing = [key for key in fields if key not in f]
        if missing:
            raise ValueError(
                f"{path}: missing dataset(s) {', '.join(missing)}; expected {', '.join(fields)}"
            )
        return {key: f[key][()] for key in fields}


def _people(fields: dict[str, np.ndarray], path: Path) -> np.ndarray:
    """(N, 2) int64 (image index, person) pairs identifying the people of an annotation file."""
    index, person = fields["index"].reshape(-1), fields["person"].reshape(-1)
    if len(index) != len(person):
        raise ValueError(f"{path}: index has {len(index)} entries but person has {len(person)}")
    return np.stack([index, person], axis=-1).astype(np.int64)


class Mpii:
    """MPII people of one split ("train", "val" or "trainval"), as a 2D-only `SampleSource`.

    `root` is the directory holding ``images/``, ``annot.h5`` and ``valid.h5``. Annotations are
    indexed at construction; images are read in `__getitem__`.
    """

    has_depth = False

    def __init__(self, root: Path, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"Unknown MPII split {split!r}; choose one of {list(SPLITS)}")
        root = Path(root)
        if not (root / "images").is_dir():
            raise FileNotFoundError(
                f"MPII image directory {root / 'images'} not found; expected {root} to hold "
                f"images/, annot.h5 and valid.h5"
            )
        annot = _read_h5(root / "annot.h5", _ANNOT_FIELDS)
        valid = _read_h5(root / "valid.h5", _VALID_FIELDS)
        people = _people(annot, root / "annot.h5")
        n = len(people)
        part = np.asarray(annot["part"], dtype=np.float64)
        if part.shape != (n, 16, 2):
            raise ValueError(f"{root / 'annot.h5'}: part must have shape ({n}, 16, 2), got "
                             f"{part.shape}")
        pairs = [tuple(p) for p in people.tolist()]
        val_pairs = {tuple(p) for p in _people(valid, root / "valid.h5").tolist()}
        is_val = np.array([p in val_pairs for p in pairs], dtype=bool)
        unknown = val_pairs.difference(pairs)
        if unknown:
            raise ValueError(
                f"{root / 'valid.h5'} lists {len(unknown)} (index, person) pairs absent from "
                f"{root / 'annot.h5'}, e.g. {sorted(unknown)[0]}"
            )
        is_train = (annot["istrain"].reshape(-1) == 1) & ~is_val
        rows = {
            "train": np.flatnonzero(is_train),
            "val": np.flatnonzero(is_val),
            "trainval": np.concatenate([np.flatnonzero(is_train), np.flatnonzero(is_val)]),
        }[split]
        uv, mask = mpii_to_canonical(part[rows])
        names = decode_names(annot["imgname"])
        self.name = f"mpii-{split}"
        self._root = root
        self._rows = {
            "uv": uv,
            "mask": mask,
            "centre": np.asarray(annot["center"], dtype=np.float64).reshape(n, 2)[rows],
            "scale": np.asarray(annot["scale"], dtype=np.float64).reshape(n)[rows],
            "index": people[rows, 0],
            "person": people[rows, 1],
            "normalize": np.asarray(annot["normalize"], dtype=np.float64).reshape(n)[rows],
            "name": np.array([names[i] for i in rows], dtype=object),
        }
        if len(self) == 0:
            raise ValueError(f"No MPII {split} people in {root / 'annot.h5'}")

    def __len__(self) -> int:
        return len(self._rows["uv"])

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"Index {index} out of range for {self.name} of length {len(self)}")
        row = {key: values[index] for key, values in self._rows.items()}
        path = self._root / "images" / row["name"]
        image = open_rgb(path)
        camera = mpii_camera(image.width, image.height)
        centre = (float(row["centre"][0]), float(row["centre"][1]))
        return Sample(
            image=image,
            camera=camera,
            joints=lift_to_focal_plane(row["uv"], camera),
            mask=row["mask"].copy(),
            has_depth=False,
            box=mpii_box(centre, float(row["scale"])),
            augmentation=AUG_MPII,
            meta={
                "dataset": "mpii",
                "image": row["name"],
                "index": int(row["index"]),
                "person": int(row["person"]),
                "normalize": float(row["normalize"]),
            },
        )

