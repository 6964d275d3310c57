"""Dataset names -> readers: `open_dataset("mpi3d-trainval", root)`.

The caller passes the data root (nothing is read from the environment). Expected tree::

    <root>/h36m/processed/S{n}/{Action}-{subaction}/annot.h5            (h36m-fetch output)
    <root>/h36m/processed/S{n}/{Action}-{subaction}/imageSequence/{camera}/img_{frame:06d}.jpg
    <root>/mpi3d/{train,val}/S{s}/Seq{q}/metadata.h5, camera.calibration,
                 imageSequence/video_{c}/img_{frame+1:06d}.jpg          (MargiPose preprocessing)
    <root>/mpi3d/test/S{t}/Seq1/metadata.h5, annot_data.mat, camera.calibration,
                 imageSequence/video_0/img_{frame+1:06d}.jpg
    <root>/mpii/images/*.jpg, annot.h5, valid.h5                        (pose-hg-train files)
    <root>/synthetic/{train,test}/**/shard-*.npz     (optional: pre-rendered synthetic humans)
    <root>/real2d/images/{source}/{frame:04d}.jpg, labels.jsonl    (teacher-labelled real people,
                                                      `python -m training.data.real2d build`)

`real2d-*` reads those people as 2D-only samples; `real2d3d-*` reads the same files with the
teacher's depth (`training/data/real2d.py`; labels.jsonl built with joints3d).

`synthetic-train` and `synthetic-test` read pre-rendered shards when the data root has them
(`training/synthetic/shards.py`), else render on the fly (`training/synthetic/source.py`:
SYNTHETIC_SIZES samples, seed 0).

Each reader's module docstring gives the fields it reads and the protocol it follows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from training.data.h36m import Human36M
from training.data.mpi3dhp import MpiInf3dhp
from training.data.mpii import Mpii
from training.data.real2d import Real2D, Real2D3D
from training.data.sample import SampleSource

# Family -> (subdirectory of the data root, reader taking (directory, split)).
_READERS: dict[str, tuple[str, Callable[[Path, str], SampleSource]]] = {
    "h36m": ("h36m", Human36M),
    "mpi3d": ("mpi3d", MpiInf3dhp),
    "mpii": ("mpii", Mpii),
    "real2d": ("real2d", Real2D),
    "real2d3d": ("real2d", Real2D3D),
}

# Valid dataset names, e.g. for argparse `choices`.
DATASETS: tuple[str, ...] = (
    "h36m-trainval",
    "h36m-test",
    "mpi3d-train",
    "mpi3d-val",
    "mpi3d-trainval",
    "mpi3d-test",
    "mpii-train",
    "mpii-val",
    "mpii-trainval",
    "real2d-train",
    "real2d-val",
    "real2d-trainval",
    "real2d3d-train",
    "real2d3d-val",
    "real2d3d-trainval",
    "synthetic-train",
    "synthetic-test",
)

# Samples of the on-the-fly synthetic sets (their index space; rendering is deterministic).
SYNTHETIC_SIZES = {"train": 100_000, "test": 2_000}


def open_dataset(spec: str, root: Path) -> SampleSource:
    """Open the dataset named `spec` (one of `DATASETS`) under the data root `root`."""
    if spec not in DATASETS:
        raise ValueError(f"Unknown dataset {spec!r}; choose one of {', '.join(DATASETS)}")
    family, split = spec.split("-", 1)
    if family == "synthetic":
        return _synthetic(Path(root) / "synthetic" / split, split)
    subdirectory, reader = _READERS[family]
    return reader(Path(root) / subdirectory, split)


def _synthetic(directory: Path, split: str) -> SampleSource:
    """Pre-rendered shards under `directory` if any, else the on-the-fly renderer."""
    from training.synthetic.shards import ShardSource
    from training.synthetic.source import SyntheticHumans

    if any(directory.rglob("shard-*.npz")):
        return ShardSource(directory, name=f"synthetic-{split}")
    return SyntheticHumans(split, size=SYNTHETIC_SIZES[split], seed=0)
