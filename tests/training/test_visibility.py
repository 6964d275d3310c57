"""The partial-view measurements: reliability and ECE, temperature fitting, the held-out guard
and one evaluation pass over stick figures."""

import numpy as np
import pytest

from tests.training.stick_figures import sample_3d
from tests.training.test_model import tiny
from training.data.sample import ListSource
from training.export import calibrate_batchnorm
from training.model import build_model
from training.visibility import (
    VIEWS,
    calibration_set,
    checkpoint_runner,
    evaluate_views,
    fit_calibration,
    fit_temperature,
    reliability,
    view_example,
)


def test_reliability_by_hand() -> None:
    prob = np.array([0.05, 0.15, 0.95, 0.95, 0.85, 0.55])
    label = np.array([False, True, True, True, False, True])
    r = reliability(prob, label)
    assert r["joints"] == 6 and r["accuracy"] == pytest.approx(4 / 6)
    assert r["brier"] == pytest.approx(np.mean((prob - label) ** 2))
    # bins: [0,.1) {0.05: 0 of 1}, [.1,.2) {0.15: 1 of 1}, [.5,.6) {0.55: 1}, [.8,.9) {0.85: 0},
    # [.9,1] {0.95, 0.95: 2 of 2}
    want = (abs(0.05 - 0) + abs(0.15 - 1) + abs(0.55 - 1) + abs(0.85 - 0) + 2 * abs(0.95 - 1)) / 6
    assert r["ece"] == pytest.approx(want)
    assert sum(b["count"] for b in r["reliability"]) == 6
    with pytest.raises(ValueError, match="No labelled"):
        reliability(np.zeros(0), np.zeros(0, bool))


def test_fit_temperature_finds_the_temperature_that_made_the_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, 20000)
    labels = rng.random(20000) < 1 / (1 + np.exp(-logits / 2.0))  # over-confident by 2x
    t, fitted, before = fit_temperature(logits, labels)
    assert t == pytest.approx(2.0, rel=0.06) and fitted < before


def test_fit_calibration_recovers_temperature_and_offsets() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (6000, 4))
    offsets = np.array([0.0, 1.0, -0.8, 0.3])
    labels = rng.random(logits.shape) < 1 / (1 + np.exp(-(logits / 1.5 + offsets)))
    labelled = rng.random(logits.shape) < 0.9
    t, o, fitted, before = fit_calibration(logits, labels, labelled)
    assert t == pytest.approx(1.5, rel=0.05)
    assert np.allclose(o, offsets, atol=0.1)
    assert fitted < before
    # nothing to fit on
    with pytest.raises(ValueError, match="No labelled"):
        fit_calibration(logits, labels, np.zeros_like(labelled))


def test_calibration_refuses_held_out_sets() -> None:
    held_out = ListSource("real2d-val", [sample_3d(0)])
    with pytest.raises(ValueError, match="held out"):
        calibration_set([(held_out, 1)])
    assert len(calibration_set([(ListSource("stick-train", [sample_3d(0)]), 1)])) == len(VIEWS)


def test_evaluate_views_scores_every_view() -> None:
    model = build_model(tiny(visibility=True), pretrained=False)
    calibrate_batchnorm(model, batches=1, batch_size=2)
    source = ListSource("stick-test", [sample_3d(i) for i in range(3)])
    result = evaluate_views(source, checkpoint_runner(model), seed=1)
    assert set(result["views"]) == set(VIEWS) and result["samples"] == 3
    for view in VIEWS:
        row = result["views"][view]
        assert row["seen_joints"] > 0 and row["error_px_mean"] > 0
        assert row["seen_mpjpe_mm"] > 0 and 0 <= row["visibility"]["accuracy"] <= 1
    assert result["views"]["full"]["unseen_joints"] == 0
    assert result["views"]["cut"]["unseen_joints"] > 0
    # the same seed gives the same crops
    a, b = view_example(sample_3d(1), "cut", 5, 1), view_example(sample_3d(1), "cut", 5, 1)
    assert (a.image == b.image).all()
    # the tight view is the cut view's box without the blacked-out border
    tight = view_example(sample_3d(1), "tight", 5, 1)
    assert np.allclose(tight.crop.pixel_matrix, a.crop.pixel_matrix)
    assert not (tight.image == a.image).all()


def test_reliability_figure_has_a_panel_per_result(tmp_path) -> None:
    import json

    from training.visibility import main

    rel = reliability(np.array([0.1, 0.9, 0.8, 0.3]), np.array([False, True, True, True]))
    for name in ("a", "b"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"dataset": name, "visibility": rel}))
    out = tmp_path / "fig.png"
    main(["figure", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(out)])
    from PIL import Image

    with Image.open(out) as image:
        assert image.size == (720, 360)
        pixels = np.asarray(image.convert("RGB"))
    assert (pixels == (70, 130, 200)).all(axis=-1).sum() > 100  # the bars are drawn
    (tmp_path / "c.json").write_text(json.dumps({"dataset": "c"}))
    with pytest.raises(SystemExit, match="no visibility"):
        main(["figure", str(tmp_path / "c.json"), "--out", str(out)])
