"""Tests for dataset names -> readers."""

import os
import re
from pathlib import Path

import numpy as np
import pytest

from tests.training.data_fixtures import write_h36m, write_mpi3dhp, write_mpii
from training.data.h36m import Human36M
from training.data.mpi3dhp import MpiInf3dhp
from training.data.mpii import Mpii
from training.data.registry import DATASETS, open_dataset
from training.data.sample import SampleSource


@pytest.fixture(scope="module")
def fixture(tmp_path_factory) -> tuple[Path, dict]:
    """A data root holding all three fixtures, and their ground truth."""
    root = tmp_path_factory.mktemp("data")
    return root, write_h36m(root) | write_mpi3dhp(root) | write_mpii(root)


def test_dataset_names():
    assert DATASETS == (
        "h36m-trainval", "h36m-test", "mpi3d-train", "mpi3d-val", "mpi3d-trainval",
        "mpi3d-test", "mpii-train", "mpii-val", "mpii-trainval", "real2d-train", "real2d-val",
        "real2d-trainval", "real2d3d-train", "real2d3d-val", "real2d3d-trainval",
        "synthetic-train", "synthetic-test",
    )


@pytest.mark.parametrize("spec", [d for d in DATASETS if not d.startswith(("synthetic",
                                                                             "real2d"))])
def test_every_name_opens_its_reader(fixture, spec):
    root, truth = fixture
    source = open_dataset(spec, root)
    family = spec.split("-")[0]
    assert isinstance(source, {"h36m": Human36M, "mpi3d": MpiInf3dhp, "mpii": Mpii}[family])
    assert isinstance(source, SampleSource)
    assert source.name == spec
    assert source.has_depth == (family != "mpii")
    assert len(source) == len(truth[spec])
    assert source[0].meta["dataset"] == family


def test_real2d_names_open_the_teacher_set(tmp_path):
    from tests.training.test_data_real2d import write_fixture
    from training.data.real2d import Real2D

    records = write_fixture(tmp_path / "real2d")
    for split in ("train", "val", "trainval"):
        source = open_dataset(f"real2d-{split}", tmp_path)
        assert isinstance(source, Real2D) and source.name == f"real2d-{split}"
        assert not source.has_depth
        assert len(source) == sum(split in ("trainval", r["split"]) for r in records)


def test_real2d3d_names_open_the_teacher_set_with_depth(tmp_path):
    from tests.training.test_data_real2d import write_fixture_3d
    from training.data.real2d import Real2D3D

    records = write_fixture_3d(tmp_path / "real2d")
    for split in ("train", "val", "trainval"):
        source = open_dataset(f"real2d3d-{split}", tmp_path)
        assert isinstance(source, Real2D3D) and source.name == f"real2d3d-{split}"
        assert not source.has_depth and source[0].teacher_depth
        assert len(source) == sum(split in ("trainval", r["split"]) for r in records)


def test_unknown_name_lists_the_choices(tmp_path):
    choices = r"'mpii-test'; choose one of h36m-trainval, .*, mpii-trainval, .*synthetic-test"
    with pytest.raises(ValueError, match=choices):
        open_dataset("mpii-test", tmp_path)


def test_missing_subdirectory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "h36m" / "processed"))):
        open_dataset("h36m-test", tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "mpii" / "images"))):
        open_dataset("mpii-val", tmp_path)


def test_real_data_root():
    root = os.environ.get("MARGIPOSE_DATA_ROOT")
    if not root:
        pytest.skip("no real data: set MARGIPOSE_DATA_ROOT to a root holding h36m/, mpi3d/, mpii/")
    present = [spec for spec in DATASETS if (Path(root) / spec.split("-")[0]).is_dir()]
    if not present:
        pytest.skip(f"MARGIPOSE_DATA_ROOT={root} holds none of h36m/, mpi3d/, mpii/")
    for spec in present:
        source = open_dataset(spec, Path(root))
        assert len(source) > 0 and source[0].meta["dataset"] == spec.split("-")[0]


def test_synthetic_specs_render_on_the_fly_or_read_shards(tmp_path):
    from training.data.registry import SYNTHETIC_SIZES
    from training.synthetic.shards import write_shards
    from training.synthetic.source import SyntheticHumans

    live = open_dataset("synthetic-test", tmp_path)
    assert isinstance(live, SyntheticHumans) and len(live) == SYNTHETIC_SIZES["test"]
    # Shards anywhere below <root>/synthetic/test are found and read instead.
    write_shards(SyntheticHumans("test", size=3, seed=0), tmp_path / "synthetic" / "test" / "a")
    stored = open_dataset("synthetic-test", tmp_path)
    assert stored.name == "synthetic-test" and len(stored) == 3
    for i in range(3):
        np.testing.assert_allclose(stored[i].joints, live[i].joints)
        assert stored[i].meta["index"] == i
