"""Partial views beside BlazePose (peers/partial_views.py): the scoring, and one real run."""

import json

import numpy as np
import pytest

from peers import partial_views
from tests.training.stick_figures import sample_3d
from tests.training.test_data_real2d import write_fixture
from training.visibility import view_example


def _examples():
    return [view_example(sample_3d(i), "cut", 3, i) for i in range(3)]


def test_an_oracle_scores_zero_error_and_full_marks() -> None:
    examples = _examples()
    truth = np.stack([(e.target[:, :2].double().numpy() + 1) * 128 for e in examples])
    visible = np.stack([e.visible.numpy() for e in examples]).astype(float)
    row = partial_views.score(examples, truth, np.ones((3, 17), bool), visible)
    assert row["error_px_mean"] == pytest.approx(0.0, abs=1e-9)
    assert row["pck_5"] == 1.0 and row["seen_returned"] == 1.0
    assert row["visibility"]["accuracy"] == 1.0 and row["visibility"]["ece"] == 0.0


def test_joints_not_returned_count_as_misses_and_shift_is_in_crop_pixels() -> None:
    examples = _examples()
    truth = np.stack([(e.target[:, :2].double().numpy() + 1) * 128 for e in examples])
    returned = np.ones((3, 17), bool)
    returned[0] = False  # a detector miss on the first person
    row = partial_views.score(examples, truth + [6.0, 8.0], returned, None)
    assert row["error_px_mean"] == pytest.approx(10.0)
    seen = sum(int((e.visible & e.labelled).sum()) for e in examples)
    first = int((examples[0].visible & examples[0].labelled).sum())
    assert row["seen_returned"] == pytest.approx((seen - first) / seen)
    assert row["pck_5"] == row["seen_returned"]  # 10 px < 12.8 px: every returned joint
    assert row["pck_5"] < 1 and "visibility" not in row


def test_cli_runs_ours_and_blazepose_on_the_same_crops(blazepose_venv, model_repository,
                                                       tmp_path):
    from tests.conftest import MODEL_NAME

    write_fixture(tmp_path / "data" / "real2d")
    out = tmp_path / "partial.json"
    args = partial_views.get_args_parser().parse_args(
        ["--torchscript", str(model_repository / MODEL_NAME / "1" / "model.onnx"),
         "--data-root", str(tmp_path / "data"), "--dataset", "real2d-trainval",
         "--complexity", "1", "--json", str(out)])
    result = partial_views.main(args)
    assert set(result["views"]) == {"full", "cut", "occluder", "tight"}
    for rows in result["views"].values():
        ours, blaze = rows
        assert ours["model"] == f"{MODEL_NAME} (ours)" and "visibility" in ours
        assert blaze["model"] == "BlazePose full" and 0 <= blaze["missed"] <= 1
        assert blaze["people"] == ours["people"] == result["people"] > 0
    assert json.loads(out.read_text())["views"]["cut"][0]["seen_joints"] > 0
