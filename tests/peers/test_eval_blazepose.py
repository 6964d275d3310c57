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
