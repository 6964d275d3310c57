"""The paired bootstrap of two exported models (peers/paired.py)."""

import json
from pathlib import Path

import numpy as np
import pytest

from peers import compare_real2d, paired
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
    parts = paired.per_person(pixels, rel3d, labels, labels3d, masks, sizes)
    got = paired.measures(parts)
    want = {**compare_real2d.scores(pixels, labels, masks, sizes),
            **compare_real2d.scores_3d(rel3d, labels3d, masks)}
    for m in paired.MEASURES:
        assert got[m] == pytest.approx(want[m], rel=1e-12), m


def test_a_model_against_itself_differs_by_nothing():
    a = _parts(np.random.default_rng(1), 50)
    for row in paired.paired_bootstrap(a, a, resamples=200):
        assert row["difference"] == 0 and row["ci95_low"] == row["ci95_high"] == 0
        assert not row["beyond_noise"]


def test_a_real_difference_is_beyond_noise_and_a_tiny_one_is_not():
    rng = np.random.default_rng(2)
    a = _parts(rng, 150)
    worse = {**a, "pa_mpjpe": a["pa_mpjpe"] + 15.0}  # every person 15 mm worse
    jitter = {**a, "pa_mpjpe": a["pa_mpjpe"] + rng.normal(0, 20, 150)}  # zero-mean noise
    rows = {r["measure"]: r for r in paired.paired_bootstrap(a, worse, 500)}
    assert rows["pa_mpjpe"]["difference"] == pytest.approx(15.0)
    assert rows["pa_mpjpe"]["ci95_low"] == pytest.approx(15.0) and rows["pa_mpjpe"]["beyond_noise"]
    assert not rows["pck@0.05"]["beyond_noise"]  # unchanged measures stay at 0
    rows = {r["measure"]: r for r in paired.paired_bootstrap(a, jitter, 500)}
    pa = rows["pa_mpjpe"]
    assert pa["ci95_low"] < pa["difference"] < pa["ci95_high"]
    # The interval's half-width is about 1.96 standard errors of the mean of the noise.
    assert (pa["ci95_high"] - pa["ci95_low"]) / 2 == pytest.approx(1.96 * 20 / 150**0.5, rel=0.3)


def test_models_scored_on_different_people_are_refused():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="different people"):
        paired.paired_bootstrap(_parts(rng, 5), _parts(rng, 6))


def test_cli_compares_two_committed_versions(tmp_path, capsys):
    """Versions 1 and 2 of the committed default on a real2d fixture with teacher 3D, and
    version 2 against itself as ONNX: the same model in two runtimes is not told apart."""
    write_fixture_3d(tmp_path / "data" / "real2d")
    common = ["--data-root", str(tmp_path / "data"), "--dataset", "real2d-trainval",
              "--resamples", "100"]
    out = tmp_path / "paired.json"
    rows = paired.main(paired.get_args_parser().parse_args(
        ["--a", str(VERSIONS / "1" / "model.pt"), "--b", str(VERSIONS / "2" / "model.pt"),
         *common, "--json", str(out)]))
    assert [r["measure"] for r in rows] == list(paired.MEASURES)
    assert all(r["people"] == 4 and r["ci95_low"] <= r["ci95_high"] for r in rows)
    assert json.loads(out.read_text())["rows"] == rows
    assert "95 % interval" in capsys.readouterr().out
    same = paired.main(paired.get_args_parser().parse_args(
        ["--a", str(VERSIONS / "2" / "model.pt"), "--b", str(VERSIONS / "2" / "model.onnx"),
         *common]))
    # The runtimes agree within 1e-4 of the crop (test_runtimes): at most one of the ~60
    # labelled joints could cross a PCK threshold, and 1e-4 of a ~2 m skeleton is 0.2 mm.
    for r in same:
        assert abs(r["difference"]) <= (0.02 if r["measure"].startswith("pck") else 0.5), r


def test_per_example_metrics_bootstrap_as_their_means():
    rng = np.random.default_rng(4)
    a = {"mpjpe": rng.normal(250, 60, 80), "pck": rng.uniform(0, 1, 80)}
    b = {"mpjpe": a["mpjpe"] + 5.0, "pck": a["pck"]}
    rows = {r["measure"]: r for r in paired.paired_bootstrap(a, b, 300)}
    assert rows["mpjpe"]["a"] == pytest.approx(a["mpjpe"].mean())
    assert rows["mpjpe"]["difference"] == pytest.approx(5.0) and rows["mpjpe"]["beyond_noise"]
    assert rows["pck"]["difference"] == 0 and not rows["pck"]["beyond_noise"]
    assert "| pck | " in paired.markdown(list(rows.values()))


def test_cli_on_a_3d_dataset_scores_as_margipose_eval(tmp_path):
    """With --protocol, each model's measures are margipose-eval's on the same samples."""
    from training.evaluate import get_args_parser as evaluate_args
    from training.evaluate import main as evaluate_main
    from training.synthetic.shards import write_shards
    from training.synthetic.source import SyntheticHumans

    root = tmp_path / "data"
    write_shards(SyntheticHumans("test", size=6, seed=0), root / "synthetic" / "test" / "a")
    model = VERSIONS / "2" / "model.pt"
    rows = paired.main(paired.get_args_parser().parse_args(
        ["--a", str(VERSIONS / "1" / "model.pt"), "--b", str(model), "--data-root", str(root),
         "--dataset", "synthetic-test", "--protocol", "mpi3d", "--resamples", "50"]))
    want = evaluate_main(evaluate_args().parse_args(
        ["--torchscript", str(model), "--dataset", "synthetic-test", "--data-root", str(root),
         "--protocol", "mpi3d"]))["overall"]
    got = {r["measure"]: r["b"] for r in rows}
    assert set(got) == {"pck", "auc", "mpjpe", "pa_pck", "pa_auc", "pa_mpjpe"}
    for measure, value in got.items():
        assert value == pytest.approx(want[measure], rel=1e-6), measure
