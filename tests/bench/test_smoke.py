"""Seconds-long runs of the benchmark scripts with tiny settings, so that they cannot rot."""

import dataclasses
import json
import math
import os

import pytest

from bench import (
    detector_cost,
    marginal_vs_volumetric,
    model_cpu,
    reframe_cost,
    video_tracking,
    vs_blazepose,
)
from posecontract.skeleton import NUM_JOINTS


def _positive_finite(value: float) -> bool:
    return math.isfinite(value) and value > 0


def test_model_cpu_runs_and_reports_every_row(tmp_path, capsys):
    out = tmp_path / "model_cpu.json"
    args = model_cpu.get_args_parser().parse_args([
        "--variant", "margipose-lite", "--batch-sizes", "1", "2", "--warmup", "2",
        "--iters", "2", "--json", str(out),
    ])
    model_cpu.main(args)

    result = json.loads(out.read_text())
    assert result["machine"]["torch_threads"] == 2
    rows = result["rows"]
    assert [(r["variant"], r["mode"], r["batch"]) for r in rows] == [
        ("margipose-lite", mode, batch) for batch in (1, 2) for mode in ("eager", "torchscript")
    ]
    for r in rows:
        for key in ("median_ms", "p90_ms", "images_per_s", "speedup_vs_eager"):
            assert _positive_finite(r[key]), (r, key)
        assert r["p90_ms"] >= r["median_ms"]
        assert math.isclose(r["images_per_s"], r["batch"] * 1000 / r["median_ms"])
    table = capsys.readouterr().out
    assert table.count("| margipose-lite | eager |") == 2
    assert table.count("| margipose-lite | torchscript |") == 2


def test_marginal_vs_volumetric_runs_and_reports_every_row(tmp_path, capsys):
    out = tmp_path / "mvv.json"
    args = marginal_vs_volumetric.get_args_parser().parse_args([
        "--head", "marginal-stage", "--head", "volumetric-32", "--batch-sizes", "1",
        "--warmup", "0", "--iters", "1", "--json", str(out),
    ])
    marginal_vs_volumetric.main(args)

    result = json.loads(out.read_text())
    heads = {r["head"]: r for r in result["heads"]}
    assert list(heads) == ["marginal-stage", "volumetric-32"]
    assert heads["marginal-stage"]["output_floats_per_image"] == 3 * NUM_JOINTS * 32 * 32
    assert heads["volumetric-32"]["output_floats_per_image"] == NUM_JOINTS * 32**3
    for r in heads.values():
        assert r["output_bytes_per_image"] == 4 * r["output_floats_per_image"]
        for key in ("parameters", "gmac_per_image", "forward_ms_batch1"):
            assert _positive_finite(r[key]), (r, key)
    memory = result["memory"]
    assert [(r["head"], r["batch"]) for r in memory] == [
        ("marginal-stage", 1), ("volumetric-32", 1)
    ]
    for r in memory:
        # At least the softmaxed maps are saved for backward and alive at the inference peak.
        floats = heads[r["head"]]["output_floats_per_image"]
        assert r["train_saved_bytes"] >= 4 * floats
        assert r["inference_peak_bytes"] >= 4 * floats
        assert _positive_finite(r["train_saved_bytes"])
    table = capsys.readouterr().out
    assert "| marginal-stage | 1 |" in table and "| volumetric-32 | 1 |" in table
    assert "| 1.0x |" in table  # the reference's ratio to itself


def test_vs_blazepose_runs_and_reports_every_row(tmp_path, capsys, model_repository):
    from tests.conftest import MODEL_NAME
    from training import blazepose

    try:
        for name in ("full", "heavy"):
            blazepose.model_path(name)
    except blazepose.ModelsMissing as exc:
        if os.environ.get("MARGIPOSE_REQUIRE_BLAZEPOSE") == "1":
            pytest.fail(f"MARGIPOSE_REQUIRE_BLAZEPOSE=1 but {exc}")
        pytest.skip(str(exc))
    out = tmp_path / "vs.json"
    args = vs_blazepose.get_args_parser().parse_args([
        "--torchscript", "default=model_repository/margipose-lite/1/model.pt", "--converted",
        "--onnx", f"tiny={model_repository / MODEL_NAME / '1' / 'model.onnx'}",
        "--batch-sizes", "1", "2", "--warmup", "1", "--iters", "2", "--json", str(out),
    ])
    vs_blazepose.main(args)
    rows = json.loads(out.read_text())["rows"]
    models = ["default", "tiny (onnxruntime)", "tiny (openvino)", "blazepose-full (tflite)",
              "blazepose-heavy (tflite)", "blazepose-full (converted, torchscript)"]
    assert [(r["model"], r["batch"]) for r in rows] == [(m, b) for b in (1, 2) for m in models]
    for r in rows:
        assert _positive_finite(r["images_per_s"]) and r["p90_ms"] >= r["median_ms"]
    assert all(r["vs_blazepose_full"] == 1.0 for r in rows if r["model"] == models[3])
    assert capsys.readouterr().out.count("| blazepose-heavy (tflite) |") == 2


def test_reframe_cost_runs_both_settings_on_both_cases(tmp_path, capsys):
    out = tmp_path / "reframe_cost.json"
    reframe_cost.main(reframe_cost.get_args_parser().parse_args(
        ["--iters", "1", "--warmup", "0", "--json", str(out)]))
    results = json.loads(out.read_text())["results"]
    assert set(results) == {f"{c}/{s}" for c in reframe_cost.CASES for s in ("on", "off")}
    for row in results.values():
        assert _positive_finite(row["total_ms_median"]) and _positive_finite(row["model_ms_median"])
    # the portrait is re-framed only with the rule on, the whole bodies never
    assert results["portrait/on"]["reframed"] and not results["portrait/off"]["reframed"]
    assert not results["whole/on"]["reframed"]
    assert capsys.readouterr().out.count("| portrait |") == 2


def test_detector_cost_runs_every_setting_on_every_picture(tmp_path, capsys):
    out = tmp_path / "detector_cost.json"
    detector_cost.main(detector_cost.get_args_parser().parse_args(
        ["--iters", "1", "--warmup", "0", "--json", str(out)]))
    results = json.loads(out.read_text())["results"]
    assert set(results) == {f"{c}/{s}" for c in detector_cost.PICTURES
                            for s in detector_cost.SETTINGS}
    for key, row in results.items():
        assert _positive_finite(row["total_ms_median"])
        # Only the detector's settings detect; the old way answers one person at most.
        assert (row["detect_ms_median"] > 0) == (not key.endswith("/no-detector"))
        if key.endswith("/no-detector"):
            assert row["persons"] == [1]
    assert results["sports2d 1768x994/tiles"]["persons"] == [2]
    assert capsys.readouterr().out.count("| sports2d 640x360 |") == 3


def test_video_jitter_is_the_mean_joint_acceleration():
    from tests.service.test_tracking import frame, person

    # One track moving 0, 1, 3, 6 px to the right: accelerations 1 and 1 px; a second person
    # seen in one frame only adds no triple.
    xs = [0, 1, 3, 6]
    tracked = []
    for t, x in enumerate(xs):
        people = [person(100 + x, 200)] + ([person(500, 200)] if t == 2 else [])
        result = frame(*people)
        result.persons[:] = [dataclasses.replace(p, track_id=i + 1)
                             for i, p in enumerate(result.persons)]
        tracked.append(result)
    px, mm = video_tracking.jitter(tracked)
    assert px == pytest.approx(1.0)
    assert mm == pytest.approx(3.0)  # the test person's camera space is 3 mm per pixel
