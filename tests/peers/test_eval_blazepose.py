"""BlazePose scored on our samples the way margipose-eval scores our models."""

import json
import math

from peers import eval_blazepose
from training.data.sample import ListSource
from training.synthetic.source import SyntheticHumans


def test_blazepose_scores_synthetic_samples(blazepose_venv, tmp_path, monkeypatch):
    source = ListSource("synthetic-test", [SyntheticHumans("test", size=2, seed=0)[i]
                                           for i in range(2)])
    monkeypatch.setattr("training.data.registry.open_dataset", lambda spec, root: source)
    out = tmp_path / "bp.json"
    args = eval_blazepose.get_args_parser().parse_args(
        ["--complexity", "1", "--json", str(out)])
    (row,) = eval_blazepose.main(args)
    assert row["model"] == "blazepose-full" and row["samples"] == 2
    assert 0 <= row["found"] <= 2 and row["detection_rate"] == row["found"] / 2
    if row["found"]:
        # Errors of a real estimate on a real skeleton: finite, and the fit only helps.
        assert 0 < row["pa_mpjpe"] <= row["mpjpe"] < 1000
        assert 0 <= row["pck"] <= row["pa_pck"] <= 1 and math.isfinite(row["auc"])
    assert json.loads(out.read_text())["rows"] == [row]


def test_compare_scores_both_models_on_the_same_samples(blazepose_venv, model_repository,
                                                        tmp_path, monkeypatch):
    from peers import compare_synthetic
    from tests.conftest import MODEL_NAME

    source = ListSource("synthetic-test", [SyntheticHumans("test", size=3, seed=0)[i]
                                           for i in range(3)])
    monkeypatch.setattr("training.data.registry.open_dataset", lambda spec, root: source)
    out = tmp_path / "cmp.json"
    args = compare_synthetic.get_args_parser().parse_args(
        ["--torchscript", str(model_repository / MODEL_NAME / "1" / "model.pt"),
         "--complexity", "1", "--json", str(out)])
    rows = compare_synthetic.main(args)
    ours = rows[0]
    assert (ours["model"], ours["subset"], ours["samples"]) == (f"{MODEL_NAME} (ours)", "all", 3)
    assert 0 < ours["pa_mpjpe"] <= ours["mpjpe"]  # an untrained model: large, finite errors
    bp = [r for r in rows if r["model"] == "blazepose-full"]
    assert len(bp) == 1
    if bp[0]["samples"]:
        twin = rows[rows.index(bp[0]) + 1]
        # Our model is scored again on exactly the samples BlazePose answered.
        assert twin["model"] == f"{MODEL_NAME} (ours)"
        assert twin["samples"] == bp[0]["samples"] == round(3 * bp[0]["detection_rate"])
    assert json.loads(out.read_text())["rows"] == rows
    assert compare_synthetic.markdown(rows).count("\n") == len(rows) + 1
