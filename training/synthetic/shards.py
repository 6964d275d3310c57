"""Pre-rendered synthetic samples on disk: a shard writer and a `SampleSource` reading them.

A shard is one uncompressed `.npz` (`shard-00000.npz`, ...) holding `count` samples:

    jpeg      (total,) uint8     the JPEG files of the images, concatenated
    offsets   (count + 1,) int64 sample i's JPEG is jpeg[offsets[i]:offsets[i + 1]]
    joints    (count, 17, 3) float64 camera-space joints, mm
    mask      (count, 17) bool
    camera    (count, 4) float64 fx, fy, cx, cy
    box       (count, 3) float64 reference box centre u, v and side
    meta      (bytes,) uint8     UTF-8 JSON list of the samples' meta dicts

Every sample is 3D with MargiPose's 3D augmentation (`AUG_3D`), as `SyntheticHumans` makes
them. Rendering once and reading many times trades disk (about 40-60 kB per 480x360 sample at
JPEG quality 95) for the renderer's CPU time.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from posecontract.geometry import Intrinsics
from training.camera import AUG_3D, Box
from training.data.sample import Sample, SampleSource


def write_shards(source: SampleSource, directory: Path, shard_size: int = 256,
                 quality: int = 95, indices: Iterable[int] | None = None) -> list[Path]:
    """Render `source` (or its `indices`) into shards of `shard_size` samples under
    `directory`; return the shard paths."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    order = list(range(len(source))) if indices is None else list(indices)
    paths = []
    for start in range(0, len(order), shard_size):
        samples = [source[i] for i in order[start:start + shard_size]]
        path = directory / f"shard-{start // shard_size:05d}.npz"
        _write(path, samples, quality)
        paths.append(path)
    return paths


def _write(path: Path, samples: list[Sample], quality: int) -> None:
    """Write one shard."""
    blobs = []
    for sample in samples:
        buffer = io.BytesIO()
        sample.image.save(buffer, format="JPEG", quality=quality)
        blobs.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    meta = json.dumps([s.meta for s in samples]).encode()
    np.savez(
        path,
        jpeg=np.concatenate(blobs),
        offsets=offsets,
        joints=np.stack([s.joints for s in samples]),
        mask=np.stack([s.mask for s in samples]),
        occluded=np.stack([np.zeros(len(s.mask), bool) if s.occluded is None else s.occluded
                           for s in samples]),
        self_occluded=np.stack([np.zeros(len(s.mask), bool) if s.self_occluded is None
                                else s.self_occluded for s in samples]),
        camera=np.array([[s.camera.fx, s.camera.fy, s.camera.cx, s.camera.cy] for s in samples]),
        box=np.array([[*s.box.centre, s.box.side] for s in samples]),
        meta=np.frombuffer(meta, dtype=np.uint8),
    )


class ShardSource:
    """A `SampleSource` over the shards written by `write_shards` under `directory` (searched
    recursively). Shards stay in memory once read (about their size on disk): training draws
    samples in random order, and re-reading a shard per sample would dominate its time."""

    has_depth = True

    def __init__(self, directory: Path, name: str = "synthetic-shards") -> None:
        self.name = name
        self._paths = sorted(Path(directory).rglob("shard-*.npz"))
        if not self._paths:
            raise FileNotFoundError(f"No shard-*.npz files in {directory}; write them with "
                                    "training.synthetic.shards.write_shards")
        counts = []
        for path in self._paths:
            with np.load(path) as z:
                counts.append(len(z["offsets"]) - 1)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self._cache: dict[int, tuple[dict[str, np.ndarray], list[dict]]] = {}

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _shard(self, k: int) -> tuple[dict[str, np.ndarray], list[dict]]:
        """Arrays and meta of shard k (read once, then kept)."""
        if k not in self._cache:
            with np.load(self._paths[k]) as z:
                arrays = {key: z[key] for key in z.files}
            self._cache[k] = (arrays, json.loads(arrays["meta"].tobytes().decode()))
        return self._cache[k]

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"Index {index} out of range for {len(self)} samples")
        index %= len(self)
        k = int(np.searchsorted(self._starts, index, side="right") - 1)
        arrays, metas = self._shard(k)
        i = index - int(self._starts[k])
        lo, hi = arrays["offsets"][i], arrays["offsets"][i + 1]
        image = Image.open(io.BytesIO(arrays["jpeg"][lo:hi].tobytes())).convert("RGB")
        fx, fy, cx, cy = (float(v) for v in arrays["camera"][i])
        u, v, side = (float(x) for x in arrays["box"][i])
        # shards written before the occluder labels have no "occluded": not known
        occluded = arrays["occluded"][i] if "occluded" in arrays else None
        # and those written before the self-occlusion labels have no "self_occluded"
        behind = arrays["self_occluded"][i] if "self_occluded" in arrays else None
        return Sample(image=image, camera=Intrinsics(fx, fy, cx, cy), joints=arrays["joints"][i],
                      mask=arrays["mask"][i], has_depth=True, box=Box((u, v), side),
                      augmentation=AUG_3D, meta=metas[i], occluded=occluded,
                      self_occluded=behind)


def main(argv: list[str] | None = None) -> int:
    """Render `SyntheticHumans(split, size, seed)` into shards; `--part k --parts n` renders
    every n-th shard from the k-th into `<out>/part-k/`, so n processes share the work."""
    import argparse

    from training.synthetic.source import SyntheticHumans

    p = argparse.ArgumentParser(description="Pre-render synthetic humans into shards.")
    p.add_argument("--split", choices=("train", "test"), required=True)
    p.add_argument("--size", type=int, required=True, help="samples in the set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="e.g. build/synthetic/train")
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--part", type=int, default=0)
    p.add_argument("--parts", type=int, default=1)
    args = p.parse_args(argv)
    if not 0 <= args.part < args.parts:
        p.error(f"--part must be in 0..{args.parts - 1}, got {args.part}")
    source = SyntheticHumans(args.split, args.size, args.seed)
    starts = range(args.part * args.shard_size, args.size, args.parts * args.shard_size)
    indices = [i for s in starts for i in range(s, min(s + args.shard_size, args.size))]
    paths = write_shards(source, args.out / f"part-{args.part}", args.shard_size,
                         indices=indices)
    print(f"{len(paths)} shards, {len(indices)} samples in {args.out / f'part-{args.part}'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
