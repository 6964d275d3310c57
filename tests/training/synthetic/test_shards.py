import numpy as np
import pytest

from training.data.sample import SampleSource
from training.synthetic.shards import ShardSource, write_shards
from training.synthetic.source import SyntheticHumans


def test_shards_round_trip(tmp_path):
    source = SyntheticHumans("test", size=3, seed=5)
    paths = write_shards(source, tmp_path, shard_size=2, quality=95)
    assert [p.name for p in paths] == ["shard-00000.npz", "shard-00001.npz"]
    shards = ShardSource(tmp_path)
    assert isinstance(shards, SampleSource) and len(shards) == 3
    for i in range(3):
        original, stored = source[i], shards[i]
        np.testing.assert_array_equal(stored.joints, original.joints)
        assert stored.camera == original.camera and stored.box == original.box
        assert stored.meta == original.meta
        np.testing.assert_array_equal(stored.occluded, original.occluded)
        np.testing.assert_array_equal(stored.self_occluded, original.self_occluded)
        diff = np.abs(np.asarray(stored.image, dtype=int) - np.asarray(original.image, dtype=int))
        assert diff.mean() < 8  # JPEG at quality 95 of a noisy image


def test_missing_shards_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="write_shards"):
        ShardSource(tmp_path)


def test_render_command_splits_the_shards_between_parts(tmp_path):
    from training.synthetic.shards import main

    for part in (0, 1):  # 5 samples in shards of 2: part 0 gets shards 0 and 2, part 1 shard 1
        main(["--split", "test", "--size", "5", "--seed", "5", "--out", str(tmp_path),
              "--shard-size", "2", "--part", str(part), "--parts", "2"])
    parts = [ShardSource(tmp_path / f"part-{k}") for k in (0, 1)]
    assert [len(p) for p in parts] == [3, 2]
    source = SyntheticHumans("test", size=5, seed=5)
    frames = [p[i].meta for p in parts for i in range(len(p))]
    assert sorted(map(str, frames)) == sorted(str(source[i].meta) for i in range(5))
    np.testing.assert_array_equal(parts[1][0].joints, source[2].joints)
    with pytest.raises(SystemExit):
        main(["--split", "test", "--size", "5", "--out", str(tmp_path), "--part", "2",
              "--parts", "2"])


def test_shards_written_before_the_occluder_labels_say_not_known(tmp_path):
    write_shards(SyntheticHumans("test", size=1, seed=5), tmp_path, shard_size=1, quality=90)
    path = tmp_path / "shard-00000.npz"
    with np.load(path) as z:
        old = {k: z[k] for k in z.files if k not in ("occluded", "self_occluded")}
    np.savez(path, **old)
    assert ShardSource(tmp_path)[0].occluded is None
    assert ShardSource(tmp_path)[0].self_occluded is None
