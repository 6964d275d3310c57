"""2D and 3D agreement with the teacher on held-out real frames (peers/compare_real2d.py)."""

import json
from pathlib import Path

import numpy as np
import pytest

from peers import compare_real2d
from posecontract.geometry import KNEE_NECK_MM, knee_neck_length
from tests.training.test_data_real2d import write_fixture, write_fixture_3d
from training.camera import crop_targets
from training.data.real2d import Real2D, Real2D3D
from training.metrics import root_relative
from training.skeleton import NUM_JOINTS, ROOT

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "model_repository" / "margipose-lite" / "1" / "model.pt"  # the committed default


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
    pred = compare_real2d.ours_on_boxes(source, _oracle(), None)[0]
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
    pred = compare_real2d.ours_on_boxes(source, _oracle(shift_px=10.0), None)[0]
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
    # Our rows carry the exported model's card name.
    assert rows[0]["model"] == f"{MODEL_NAME} (ours)" and rows[0]["samples"] == 5
    assert 0 <= rows[0]["pck@0.05"] <= rows[0]["pck@0.1"] <= 1
    assert json.loads(out.read_text())["rows"] == rows


def _rotation(seed: int) -> np.ndarray:
    """A random proper rotation (3, 3)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_3d_scores_are_zero_up_to_a_similarity_and_ignore_masked_joints():
    rng = np.random.default_rng(0)
    label = rng.normal(0.0, 300.0, (2, NUM_JOINTS, 3))
    label -= label[:, ROOT : ROOT + 1]
    mask = np.ones((2, NUM_JOINTS), dtype=bool)
    mask[0, [3, 9, 16]] = False
    mask[1, [0, 4, 7, 10, 13, 16]] = False  # the root stays: both are aligned on it
    mirror = np.diag([-1.0, 1.0, 1.0])  # reflections are allowed, as in training.metrics
    pred = np.stack([1.7 * label[0] @ _rotation(1) + (40.0, -900.0, 3000.0),
                     0.6 * label[1] @ _rotation(2) @ mirror + (5.0, 5.0, 5.0)])
    pred[~mask] = 1e4  # far off, but not labelled
    assert compare_real2d.scores_3d(pred, label, mask)["pa_mpjpe"] == pytest.approx(0.0, abs=1e-9)
    # Root alignment alone: a translated skeleton scores zero, the masked joints still ignored.
    moved = label + (100.0, -50.0, 2500.0)
    moved[~mask] = -1e4
    assert compare_real2d.scores_3d(moved, label, mask)["mpjpe"] == pytest.approx(0.0, abs=1e-9)


def test_pa_mpjpe_of_a_known_perturbation():
    # Four labelled joints on a square of radius r in the x-y plane; the prediction pushes them
    # alternately +d and -d along z (a saddle), then applies an arbitrary similarity. The
    # perturbation is orthogonal to every rotation and translation of the square, so the best
    # fit only shrinks the saddle by s = r^2 / (r^2 + d^2): every joint is then off by
    # sqrt(r^2 (1 - s)^2 + d^2 s^2) = r d / sqrt(r^2 + d^2) = 240 mm for r = 300, d = 400.
    r, d = 300.0, 400.0
    joints = [1, 5, 11, 14]
    corners = r / np.sqrt(2) * np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]])
    label = np.zeros((1, NUM_JOINTS, 3))
    label[0, joints, :2] = corners
    label[0, joints] += (20.0, -30.0, 10.0)
    mask = np.zeros((1, NUM_JOINTS), dtype=bool)
    mask[0, joints] = True
    pred = label.copy()
    pred[0, joints, 2] += d * np.sign(corners[:, 0] * corners[:, 1])
    pred[0] = 2.5 * pred[0] @ _rotation(3) + (0.0, 100.0, 4000.0)
    pred[0, ~mask[0]] = np.random.default_rng(4).normal(0.0, 1e4, (NUM_JOINTS - 4, 3))
    assert compare_real2d.scores_3d(pred, label, mask)["pa_mpjpe"] == pytest.approx(240.0)


def test_root_aligned_mpjpe_of_a_known_perturbation():
    label = np.random.default_rng(5).normal(0.0, 300.0, (1, NUM_JOINTS, 3))
    mask = np.zeros((1, NUM_JOINTS), dtype=bool)
    mask[0, [ROOT, 2, 6, 8, 15]] = True
    pred = label + 1000.0  # root-aligned away
    pred[0, 6, 1] += 30.0  # one of five labelled joints 30 mm off
    pred[0, 3] += 500.0  # not labelled
    assert compare_real2d.scores_3d(pred, label, mask)["mpjpe"] == pytest.approx(6.0)


def test_the_oracles_3d_is_the_sample_at_the_knee_neck_prior(tmp_path):
    write_fixture_3d(tmp_path / "real2d")
    source = Real2D3D(tmp_path / "real2d", "trainval")
    _, pred3d = compare_real2d.ours_on_boxes(source, _oracle(), None)
    for i in range(len(source)):
        truth = root_relative(source[i].joints, ROOT)
        expected = truth * KNEE_NECK_MM / knee_neck_length(truth)
        np.testing.assert_allclose(pred3d[i], expected, atol=1e-6)


def _run(tmp_path, write) -> tuple[list[dict], dict]:
    """compare_real2d's CLI on a fixture with the committed default model, no BlazePose."""
    write(tmp_path / "data" / "real2d")
    out = tmp_path / "cmp.json"
    args = compare_real2d.get_args_parser().parse_args(
        ["--torchscript", str(MODEL), "--data-root", str(tmp_path / "data"),
         "--dataset", "real2d-trainval", "--complexity", "--json", str(out)])
    return compare_real2d.main(args), json.loads(out.read_text())


def test_cli_scores_the_default_model_in_3d_against_the_teachers_joints3d(tmp_path, capsys):
    rows, saved = _run(tmp_path, write_fixture_3d)
    (row,) = rows
    assert row["model"] == "margipose-lite (ours)" and row["samples"] == row["samples_3d"] == 4
    assert 0 <= row["pck@0.05"] <= row["pck@0.1"] <= 1  # the 2D keys stay
    assert 0 < row["pa_mpjpe"] < 2000 and 0 < row["mpjpe"] < 2000
    assert saved["rows"] == rows and saved["teacher_3d"]["available"]
    assert "PA-MPJPE mm" in capsys.readouterr().out


def test_old_labels_without_joints3d_still_score_2d(tmp_path, capsys):
    rows, saved = _run(tmp_path, write_fixture)
    (row,) = rows
    assert row["samples"] == 10 and 0 <= row["pck@0.05"] <= row["pck@0.1"] <= 1
    assert row["samples_3d"] == 0 and row["pa_mpjpe"] is None and row["mpjpe"] is None
    assert not saved["teacher_3d"]["available"]
    assert "3D agreement with the teacher: unavailable" in capsys.readouterr().out
