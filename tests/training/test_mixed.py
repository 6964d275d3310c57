"""Tests for mixed batches: round-robin sampling, sharding, keyed draws, workers and collation."""

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tests.training.stick_figures import source_2d, source_3d
from training.data.mixed import (
    MixedDataset,
    RoundRobinBatchSampler,
    collate,
    evaluation_keys,
    split_batch,
)
from training.data.transforms import make_example


def _batches(sampler: RoundRobinBatchSampler, start: int, length: int) -> list[list[tuple]]:
    sampler.set_window(start, length)
    return list(sampler)


def test_split_batch_is_even_with_remainder_first() -> None:
    assert split_batch(32, 2) == (16, 16)
    assert split_batch(5, 2) == (3, 2)
    assert split_batch(7, 1) == (7,)
    with pytest.raises(ValueError, match="cannot hold"):
        split_batch(1, 2)


def test_batches_alternate_3d_and_2d_strictly() -> None:
    sampler = RoundRobinBatchSampler([10, 7], [16, 16], seed=0)
    for batch in _batches(sampler, 0, 4):
        assert len(batch) == 32
        assert [key[0] for key in batch] == [0, 1] * 16


def test_unequal_counts_interleave_until_one_source_runs_out() -> None:
    sampler = RoundRobinBatchSampler([10, 7], [3, 1], seed=0)
    (batch,) = _batches(sampler, 0, 1)
    assert [key[0] for key in batch] == [0, 1, 0, 0]


def test_each_source_is_sampled_without_replacement_and_reshuffled_per_pass() -> None:
    sizes = [10, 7]
    sampler = RoundRobinBatchSampler(sizes, [5, 5], seed=3)
    keys = [key for batch in _batches(sampler, 0, 14) for key in batch]  # 70 draws per source
    for s, n in enumerate(sizes):
        drawn = [(index, q) for source, index, q in keys if source == s]
        assert [q for _, q in drawn] == list(range(70))  # draw numbers count up
        indices = [index for index, _ in drawn]
        passes = [indices[i : i + n] for i in range(0, 70 - 70 % n, n)]
        for visit in passes:
            assert sorted(visit) == list(range(n))  # every pass visits each sample once
        assert len({tuple(p) for p in passes}) == len(passes)  # in a new order each time


def test_a_single_source_is_sampled_uniformly() -> None:
    sampler = RoundRobinBatchSampler([9], [4], seed=1)
    keys = [key for batch in _batches(sampler, 0, 27) for key in batch]  # 108 = 12 passes
    assert Counter(index for _, index, _ in keys) == {i: 12 for i in range(9)}


def test_the_stream_is_a_function_of_seed_and_batch_number() -> None:
    a = RoundRobinBatchSampler([10, 7], [2, 2], seed=0)
    b = RoundRobinBatchSampler([10, 7], [2, 2], seed=0)
    c = RoundRobinBatchSampler([10, 7], [2, 2], seed=1)
    whole = _batches(a, 0, 8)
    # Two windows (an epoch boundary, or a resume) give the same batches as one.
    assert _batches(b, 0, 3) + _batches(b, 3, 5) == whole
    assert _batches(c, 0, 8) != whole
    assert a.state_dict()["start"] == 8


def test_ranks_take_disjoint_slices_of_the_global_batch() -> None:
    world = 4
    single = RoundRobinBatchSampler([10, 7], [4, 4], seed=2)
    ranks = [RoundRobinBatchSampler([10, 7], [4, 4], seed=2, rank=r, world_size=world)
             for r in range(world)]
    global_batches = _batches(single, 5, 3)
    shards = [_batches(r, 5, 3) for r in ranks]
    for b, batch in enumerate(global_batches):
        assert sum((shard[b] for shard in shards), []) == batch
        assert all(len(shard[b]) == 2 for shard in shards)
        # Each rank keeps the 3D / 2D balance of the global batch.
        assert all([k[0] for k in shard[b]] == [0, 1] for shard in shards)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sizes": [3], "counts": [2, 2]}, "one count per source"),
        ({"sizes": [0, 3], "counts": [2, 2]}, "at least one sample"),
        ({"sizes": [3, 3], "counts": [0, 2]}, "at least one example"),
        ({"sizes": [3, 3], "counts": [2, 1], "world_size": 2}, "split evenly"),
        ({"sizes": [3, 3], "counts": [2, 2], "rank": 2, "world_size": 2}, "rank 2"),
    ],
)
def test_bad_sampler_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RoundRobinBatchSampler(seed=0, **kwargs)


@pytest.fixture(scope="module")
def dataset() -> MixedDataset:
    return MixedDataset([source_3d(4), source_2d(3)], seed=11)


def test_keys_give_reproducible_augmented_examples(dataset: MixedDataset) -> None:
    a, b, c = dataset[(1, 2, 5)], dataset[(1, 2, 5)], dataset[(1, 2, 6)]
    assert torch.equal(a.image, b.image) and torch.equal(a.target, b.target)
    assert not torch.equal(a.image, c.image)  # another draw of the same sample
    assert a.has_depth is False and dataset[(0, 0, 0)].has_depth is True
    assert len(dataset) == 7


def test_unaugmented_dataset_gives_the_plain_crop() -> None:
    source = source_3d(2)
    plain = MixedDataset([source], seed=0, augment=False)[(0, 1, 99)]
    assert torch.equal(plain.image, make_example(source[1]).image)


def test_collate_stacks_examples(dataset: MixedDataset) -> None:
    batch = collate([dataset[(0, 1, 0)], dataset[(1, 0, 0)]])
    assert batch["image"].shape == (2, 3, 256, 256) and batch["image"].dtype == torch.uint8
    assert batch["target"].shape == (2, 17, 3) and batch["target"].dtype == torch.float32
    assert batch["mask"].shape == (2, 17) and batch["mask"].dtype == torch.bool
    assert batch["has_depth"].tolist() == [True, False]
    assert batch["z_ref"].dtype == torch.float64 and batch["joints"].shape == (2, 17, 3)
    assert len(batch["crops"]) == 2
    np.testing.assert_array_equal(batch["joints"][0].numpy(), dataset.sources[0][1].joints)
    with pytest.raises(ValueError, match="empty"):
        collate([])


def test_loader_workers_give_the_same_batches(dataset: MixedDataset) -> None:
    def load(workers: int) -> list[dict]:
        sampler = RoundRobinBatchSampler([4, 3], [2, 2], seed=11)
        sampler.set_window(2, 3)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                            collate_fn=collate)
        return list(loader)

    serial, parallel = load(0), load(2)
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        for key in ("image", "target", "mask", "has_depth", "z_ref", "joints"):
            assert torch.equal(a[key], b[key]), key


def test_evaluation_keys_cover_every_sample_once_over_ranks() -> None:
    shards = [evaluation_keys(10, r, 3) for r in range(3)]
    assert sorted(k[1] for shard in shards for k in shard) == list(range(10))
    assert evaluation_keys(4) == [(0, 0, 0), (0, 1, 0), (0, 2, 0), (0, 3, 0)]
