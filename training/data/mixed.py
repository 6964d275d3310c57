"""Mixed batches over several sources: round-robin batch sampling, keyed draws and collation.

The reference trains on a 3D set and MPII at once, each batch of 32 holding 16 examples of each,
interleaved strictly 3D, 2D, 3D, 2D, ...; every source is shuffled and sampled without
replacement, reshuffled once it is used up. A single source is then just uniform sampling
without replacement.

Here the whole sample stream is a pure function of (seed, global batch number):

- source s is read in passes; pass p visits all its samples in the order of a permutation drawn
  from (seed, s, p), so the q-th draw from source s is sample perm_{q // n}[q % n];
- global batch b takes draws [b k_s, (b + 1) k_s) from each source s (k_s examples per batch)
  and interleaves them round-robin in source order;
- every draw carries its key (source, index, q), and its augmentation is drawn from a generator
  seeded by (seed, s, q), so an example does not depend on which worker or rank cuts it.

So the sampler's whole state is the next batch number (resuming is exact), and distributed
ranks each take a contiguous, disjoint slice of the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from training.data.partial import PartialView
from training.data.sample import SampleSource
from training.data.transforms import Example, example_rng, make_example, random_example

Key = tuple[int, int, int]  # (source, sample index, draw number q)

# First words of the seed sequences, keeping permutation and augmentation streams apart.
_PERMUTATION_STREAM, _AUGMENTATION_STREAM = 0, 1


def split_batch(batch_size: int, n_sources: int) -> tuple[int, ...]:
    """Per-source counts of an equal split (the first sources take any remainder)."""
    if n_sources < 1 or batch_size < n_sources:
        raise ValueError(
            f"A batch of {batch_size} cannot hold at least one example from each of "
            f"{n_sources} sources"
        )
    base, extra = divmod(batch_size, n_sources)
    return tuple(base + (1 if i < extra else 0) for i in range(n_sources))


class RoundRobinBatchSampler:
    """Yields this rank's keys of global batches start .. start + length - 1 (see module doc)."""

    def __init__(
        self,
        sizes: Sequence[int],
        counts: Sequence[int],
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(sizes) != len(counts) or not sizes:
            raise ValueError(f"Need one count per source: sizes {list(sizes)}, counts {counts}")
        if any(n < 1 for n in sizes):
            raise ValueError(f"Every source needs at least one sample, got sizes {list(sizes)}")
        if any(k < 1 for k in counts):
            raise ValueError(f"Every source needs at least one example per batch, got {counts}")
        batch_size = sum(counts)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in 0..world_size-1 (world_size {world_size})")
        if batch_size % world_size:
            raise ValueError(
                f"The global batch of {batch_size} must split evenly over {world_size} ranks"
            )
        self.sizes = tuple(int(n) for n in sizes)
        self.counts = tuple(int(k) for k in counts)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.local_batch_size = batch_size // world_size
        self.start = 0
        self.length = 0
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def set_window(self, start: int, length: int) -> None:
        """Make the next iteration yield global batches start .. start + length - 1."""
        if start < 0 or length < 0:
            raise ValueError(f"Batch window must be non-negative, got start {start}, "
                             f"length {length}")
        self.start, self.length = start, length

    def _permutation(self, source: int, pass_: int) -> np.ndarray:
        """The visiting order of `source` in pass `pass_` (cached: one pass per source)."""
        key = (source, pass_)
        if key not in self._perms:
            rng = np.random.default_rng([self.seed, _PERMUTATION_STREAM, source, pass_])
            self._perms = {k: v for k, v in self._perms.items() if k[0] != source}
            self._perms[key] = rng.permutation(self.sizes[source])
        return self._perms[key]

    def _draws(self, source: int, batch: int) -> list[Key]:
        """Keys of `source`'s examples in global batch `batch`."""
        n, k = self.sizes[source], self.counts[source]
        keys = []
        for q in range(batch * k, (batch + 1) * k):
            keys.append((source, int(self._permutation(source, q // n)[q % n]), q))
        return keys

    def global_batch(self, batch: int) -> list[Key]:
        """All keys of global batch `batch`, interleaved round-robin over the sources."""
        queues = [self._draws(s, batch) for s in range(len(self.sizes))]
        out: list[Key] = []
        for i in range(max(self.counts)):
            out.extend(queue[i] for queue in queues if i < len(queue))
        return out

    def __iter__(self) -> Iterator[list[Key]]:
        lo = self.rank * self.local_batch_size
        for b in range(self.start, self.start + self.length):
            yield self.global_batch(b)[lo : lo + self.local_batch_size]

    def __len__(self) -> int:
        return self.length

    def state_dict(self) -> dict[str, Any]:
        """What identifies the stream and where the next iteration starts."""
        return {"seed": self.seed, "sizes": list(self.sizes), "counts": list(self.counts),
                "start": self.start + self.length}


class MixedDataset(Dataset):
    """Examples of several sources addressed by draw keys (source, index, q)."""

    def __init__(self, sources: Sequence[SampleSource], seed: int, augment: bool = True,
                 partial: PartialView | None = None) -> None:
        if not sources:
            raise ValueError("MixedDataset needs at least one source")
        self.sources = list(sources)
        self.seed = seed
        self.augment = augment
        self.partial = partial

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def __getitem__(self, key: Key) -> Example:
        source, index, draw = key
        sample = self.sources[source][index]
        if not self.augment:
            return make_example(sample)
        return random_example(sample, example_rng(self.seed, _AUGMENTATION_STREAM, source, draw),
                              partial=self.partial)


def evaluation_keys(size: int, rank: int = 0, world_size: int = 1) -> list[Key]:
    """Keys of every sample of a source (source 0), strided over ranks without overlap."""
    return [(0, i, 0) for i in range(rank, size, world_size)]


def collate(examples: Sequence[Example]) -> dict[str, Any]:
    """Stack examples into a batch: tensors for training, crops and joints for evaluation.

    image (B, 3, 256, 256) uint8; target (B, 17, 3) float32; mask (B, 17) bool; has_depth (B,)
    bool; teacher_depth (B,) bool; z_ref (B,) float64; joints (B, 17, 3) float64 source camera
    mm; crops: list of Crop; labelled and visible (B, 17) bool where every example has them
    (the visibility head's weights and labels).
    """
    if not examples:
        raise ValueError("Cannot collate an empty batch")
    extra: dict[str, Any] = {}
    if all(e.visible is not None and e.labelled is not None for e in examples):
        extra = {"labelled": torch.stack([e.labelled for e in examples]),
                 "visible": torch.stack([e.visible for e in examples])}
    return {
        "image": torch.stack([e.image for e in examples]),
        "target": torch.stack([e.target for e in examples]),
        "mask": torch.stack([e.mask for e in examples]),
        "has_depth": torch.tensor([e.has_depth for e in examples]),
        "teacher_depth": torch.tensor([e.teacher_depth for e in examples]),
        "z_ref": torch.tensor([e.z_ref for e in examples], dtype=torch.float64),
        "joints": torch.from_numpy(np.stack([e.joints for e in examples])),
        "crops": [e.crop for e in examples],
        **extra,
    }
