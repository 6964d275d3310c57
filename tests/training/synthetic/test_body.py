import numpy as np
import pytest

from training.synthetic.body import ASSET, PART_IDS, default_bodies, load_bodies


@pytest.fixture(scope="module")
def asset():
    return default_bodies()


def test_asset_is_small_and_consistent(asset):
    assert ASSET.stat().st_size < 4e6
    v = len(asset.shape_mean)
    assert asset.faces.shape[1] == 3 and asset.faces.max() < v
    assert asset.skin_bones.shape == asset.skin_weights.shape == (v, asset.skin_bones.shape[1])
    np.testing.assert_allclose(asset.skin_weights.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(asset.skin_weights >= 0)
    assert set(np.unique(asset.vertex_part)) <= set(PART_IDS.values())


def test_bone_tree_is_valid(asset):
    parents = asset.bone_parents
    assert parents[0] == -1
    assert np.all((parents[1:] >= 0) & (parents[1:] < np.arange(1, len(parents))))
    for name in ("upperleg01.L", "lowerarm01.R", "wrist.L", "clavicle.R", "head", "neck01"):
        asset.bone(name)
    with pytest.raises(KeyError, match="No bone"):
        asset.bone("tail")


def test_bodies_are_people_sized_and_split(asset):
    train, test = asset.bodies("train"), asset.bodies("test")
    assert len(train) >= 40 and len(test) >= 10
    assert not set(train) & set(test)
    assert len(train) + len(test) == asset.num_bodies
    heights = [np.ptp(asset.rest_vertices(b)[:, 2]) for b in range(asset.num_bodies)]
    assert 1.4 < min(heights) and max(heights) < 2.05  # metres, standing in the A-pose
    assert np.std(heights) > 0.08
    with pytest.raises(ValueError, match="Unknown split"):
        asset.bodies("val")


def test_missing_asset_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="export_anny_asset"):
        load_bodies(tmp_path / "nope.npz")
