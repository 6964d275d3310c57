"""2D agreement with the teacher on held-out real frames (peers/compare_real2d.py)."""

import json

import numpy as np
import pytest

from peers import compare_real2d
from tests.training.test_data_real2d import write_fixture
from training.camera import crop_targets
from training.data.real2d import Real2D


def _oracle(shift_px: float = 0.0):
    """Each crop's labelled joints as the model would predict them, moved right in the crop."""

    def predict(jobs):
        out = []
        for job in jobs:
            ndc = crop_targets(job.sample.joints, job.crop)[1]
            ndc[:, 0] += 2 * shift_px / job.crop.size  # NDC spans 2 over the crop's width
            out.append(ndc)
        return np.stack(out)

    return predict


@pytest.fixture
def source(tmp_path):
    write_fixture(tmp_path / "real2d")
    return Real2D(tmp_path / "real2d", "trainval")


def test_the_oracle_lands_on_the_labels(source):
    pred = compare_real2d.ours_2d(source, _oracle(), None)
    labels = np.asarray([source[i].camera.project(source[i].joints) for i in range(len(source))])
    np.testing.assert_allclose(pred, labels, atol=1e-6)


def test_scores_are_errors_over_the_person_size():
    label = np.zeros((2, 17, 2))
    pred = label.copy()
    pred[:, :, 0] = 8.0  # 8 px off everywhere
    mask = np.ones((2, 17), dtype=bool)
    mask[1, 5:] = False
    got = compare_real2d.scores(pred, label, mask, np.array([100.0, 200.0]))
    # 17 joints at 0.08 of the size, 5 at 0.04.
    assert got["mean_error"] == pytest.approx((17 * 0.08 + 5 * 0.04) / 22)
    assert got["pck@0.05"] == pytest.approx(5 / 22)
    assert got["pck@0.1"] == 1.0


def test_a_shifted_prediction_is_counted_in_full_image_pixels(source):
    pred = compare_real2d.ours_2d(source, _oracle(shift_px=10.0), None)
    labels = np.asarray([source[i].camera.project(source[i].joints) for i in range(len(source))])
    # 10 crop pixels are side / 256 * 10 source pixels (no rotation, no flip in evaluation).
    sides = np.asarray([source[i].box.side for i in range(len(source))])
    dist = np.linalg.norm(pred - labels, axis=-1)
    np.testing.assert_allclose(dist, np.repeat((10 * sides / 256)[:, None], 17, axis=1),
                               rtol=1e-6)


def test_cli_scores_an_exported_model_and_blazepose(blazepose_venv, model_repository, tmp_path,
                                                    monkeypatch):
    from tests.conftest import MODEL_NAME

    write_fixture(tmp_path / "data" / "real2d")
    out = tmp_path / "cmp.json"
    args = compare_real2d.get_args_parser().parse_args(
        ["--torchscript", str(model_repository / MODEL_NAME / "1" / "model.pt"),
         "--data-root", str(tmp_path / "data"), "--complexity", "1", "--json", str(out)])
    rows = compare_real2d.main(args)
    assert rows[0]["model"] == "margipose-lite (ours)" and rows[0]["samples"] == 5
    assert 0 <= rows[0]["pck@0.05"] <= rows[0]["pck@0.1"] <= 1
    assert json.loads(out.read_text())["rows"] == rows
