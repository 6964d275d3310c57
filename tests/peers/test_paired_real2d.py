"""The paired bootstrap of two models on real2d-val (peers/paired_real2d.py)."""

import json
from pathlib import Path

import numpy as np
import pytest

from peers import compare_real2d, paired_real2d
from tests.training.test_data_real2d import write_fixture_3d

REPO = Path(__file__).resolve().parents[2]
VERSIONS = REPO / "model_repository" / "margipose-lite"


def _parts(rng: np.random.Generator, n: int, pa_shift: float = 0.0, hit_rate: float = 0.8):
    joints = rng.integers(10, 18, n).astype(float)
    hits = rng.binomial(joints.astype(int), hit_rate).astype(float)
    return {"joints": joints, "hits@0.05": hits, "hits@0.1": np.minimum(joints, hits + 2),
            "pa_mpjpe": rng.normal(80, 20, n) + pa_shift, "mpjpe": rng.normal(120, 30, n)}


def test_per_person_parts_give_back_compare_real2ds_scores():
    rng = np.random.default_rng(0)
    n = 6
    labels = rng.uniform(0, 500, (n, 17, 2))
    pixels = labels + rng.normal(0, 12, labels.shape)
    labels3d = rng.normal(0, 300, (n, 17, 3))
    rel3d = labels3d + rng.normal(0, 40, labels3d.shape)
    masks = rng.random((n, 17)) > 0.2
    masks[:, 0] = True  # the root
    sizes = rng.uniform(150, 400, n)
    parts = paired_real2d.per_person(pixels, rel3d, labels, labels3d, masks, sizes)
    got = paired_real2d.measures(parts)
    want = {**compare_real2d.scores(pixels, labels, masks, sizes),
            **compare_real2d.scores_3d(rel3d, labels3d, masks)}
    for m in paired_real2d.MEASURES:
        assert got[m] == pytest.approx(want[m], rel=1e-12), m


def test_a_model_against_itself_differs_by_nothing():
    a = _parts(np.random.default_rng(1), 50)
    for row in paired_real2d.paired_bootstrap(a, a, resamples=200):
        assert row["difference"] == 0 and row["ci95_low"] == row["ci95_high"] == 0
        assert not row["beyond_noise"]


def test_a_real_difference_is_beyond_noise_and_a_tiny_one_is_not():
    rng = np.random.default_rng(2)
    a = _parts(rng, 150)
    worse = {**a, "pa_mpjpe": a["pa_mpjpe"] + 15.0}  # every person 15 mm worse
    jitter = {**a, "pa_mpjpe": a["pa_mpjpe"] + rng.normal(0, 20, 150)}  # zero-mean noise
    rows = {r["measure"]: r for r in paired_real2d.paired_bootstrap(a, worse, 500)}
    assert rows["pa_mpjpe"]["difference"] == pytest.approx(15.0)
    assert rows["pa_mpjpe"]["ci95_low"] == pytest.approx(15.0) and rows["pa_mpjpe"]["beyond_noise"]
    assert not rows["pck@0.05"]["beyond_noise"]  # unchanged measures stay at 0
    rows = {r["measure"]: r for r in paired_real2d.paired_bootstrap(a, jitter, 500)}
    pa = rows["pa_mpjpe"]
    assert pa["ci95_low"] < pa["difference"] < pa["ci95_high"]
    # The interval's half-width is about 1.96 standard errors of the mean of the noise.
    assert (pa["ci95_high"] - pa["ci95_low"]) / 2 == pytest.approx(1.96 * 20 / 150**0.5, rel=0.3)


def test_models_scored_on_different_people_are_refused():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="different people"):
        paired_real2d.paired_bootstrap(_parts(rng, 5), _parts(rng, 6))


def test_cli_compares_two_committed_versions(tmp_path, capsys):
    """Versions 1 and 2 of the committed default on a real2d fixture with teacher 3D, and
    version 2 against itself as ONNX: the same model in two runtimes is not told apart."""
    write_fixture_3d(tmp_path / "data" / "real2d")
    common = ["--data-root", str(tmp_path / "data"), "--dataset", "real2d-trainval",
              "--resamples", "100"]
    out = tmp_path / "paired.json"
    rows = paired_real2d.main(paired_real2d.get_args_parser().parse_args(
        ["--a", str(VERSIONS / "1" / "model.pt"), "--b", str(VERSIONS / "2" / "model.pt"),
         *common, "--json", str(out)]))
    assert [r["measure"] for r in rows] == list(paired_real2d.MEASURES)
    assert all(r["people"] == 4 and r["ci95_low"] <= r["ci95_high"] for r in rows)
    assert json.loads(out.read_text())["rows"] == rows
    assert "95 % interval" in capsys.readouterr().out
    same = paired_real2d.main(paired_real2d.get_args_parser().parse_args(
        ["--a", str(VERSIONS / "2" / "model.pt"), "--b", str(VERSIONS / "2" / "model.onnx"),
         *common]))
    # The runtimes agree within 1e-4 of the crop (test_runtimes): at most one of the ~60
    # labelled joints could cross a PCK threshold, and 1e-4 of a ~2 m skeleton is 0.2 mm.
    for r in same:
        assert abs(r["difference"]) <= (0.02 if r["measure"].startswith("pck") else 0.5), r
