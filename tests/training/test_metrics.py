"""Known-value tests for training.metrics."""

import numpy as np
import pytest
from scipy.spatial import procrustes
from scipy.spatial.transform import Rotation

from posecontract.skeleton import EVAL_14, NUM_JOINTS, ROOT
from training.metrics import (
    AUC_THRESHOLDS_MM,
    auc,
    joint_errors,
    mpjpe,
    pa_mpjpe,
    pck,
    procrustes_align,
    root_relative,
    score_poses,
)


def _poses(n: int = 4, seed: int = 0) -> np.ndarray:
    """Return random root-relative skeletons in whole mm (so offsets are exact). (n, 17, 3)."""
    rng = np.random.default_rng(seed)
    return root_relative(np.round(rng.normal(scale=300.0, size=(n, NUM_JOINTS, 3))))


def test_auc_thresholds_are_0_to_150_in_5mm_steps() -> None:
    assert len(AUC_THRESHOLDS_MM) == 31
    assert AUC_THRESHOLDS_MM[0] == 0.0 and AUC_THRESHOLDS_MM[-1] == 150.0
    assert np.allclose(np.diff(AUC_THRESHOLDS_MM), 5.0)


def test_root_relative_puts_the_pelvis_at_the_origin() -> None:
    rng = np.random.default_rng(1)
    joints = rng.normal(size=(2, NUM_JOINTS, 3))
    rel = root_relative(joints)
    assert ROOT == 14
    assert np.allclose(rel[:, ROOT], 0.0)
    assert np.allclose(rel - joints, -joints[:, ROOT : ROOT + 1])


def test_root_relative_rejects_a_bad_root() -> None:
    with pytest.raises(ValueError, match="root 17"):
        root_relative(np.zeros((NUM_JOINTS, 3)), root=17)


def test_identical_poses_score_perfectly() -> None:
    gt = _poses()
    assert np.allclose(mpjpe(gt, gt), 0.0)
    assert np.allclose(pck(gt, gt), 1.0)
    # The 0 mm threshold never counts (strict <), so a perfect AUC is 30/31.
    assert np.allclose(auc(gt, gt), 30 / 31)
    assert np.allclose(pa_mpjpe(gt, gt), 0.0, atol=1e-9)


def test_uniform_100mm_offset() -> None:
    gt = _poses()
    pred = gt + np.array([60.0, 0.0, 80.0])  # |offset| = 100 mm for every joint
    assert np.allclose(mpjpe(pred, gt), 100.0)
    assert np.allclose(pck(pred, gt), 1.0)
    # Only thresholds 105, 110, ..., 150 (10 of 31) strictly exceed 100.
    assert np.allclose(auc(pred, gt), 10 / 31)
    # A pure translation is removed by Procrustes.
    assert np.allclose(pa_mpjpe(pred, gt), 0.0, atol=1e-9)


def test_pck_is_strict_at_the_threshold() -> None:
    gt = _poses()
    pred = gt + np.array([0.0, 150.0, 0.0])
    assert np.allclose(mpjpe(pred, gt), 150.0)
    assert np.allclose(pck(pred, gt), 0.0)
    assert np.allclose(pck(pred, gt, threshold=150.0 + 1e-6), 1.0)


def test_shapes_are_per_example() -> None:
    gt = _poses(6).reshape(2, 3, NUM_JOINTS, 3)
    pred = gt + 1.0
    assert joint_errors(pred, gt).shape == (2, 3, NUM_JOINTS)
    for metric in (mpjpe, pck, auc, pa_mpjpe):
        assert metric(pred, gt).shape == (2, 3)
    assert mpjpe(pred[0, 0], gt[0, 0]).shape == ()


def test_joint_subset_selection() -> None:
    gt = _poses(1)
    pred = gt.copy()
    pred[0, 3] += [0.0, 0.0, 200.0]  # one joint 200 mm off
    assert mpjpe(pred, gt)[0] == pytest.approx(200.0 / NUM_JOINTS)
    assert mpjpe(pred, gt, joints=[3, 5])[0] == pytest.approx(100.0)
    assert mpjpe(pred, gt, joints=[14, 15, 16])[0] == pytest.approx(0.0)
    assert pck(pred, gt, joints=EVAL_14)[0] == pytest.approx(13 / 14)
    assert pck(pred, gt, joints=(3,))[0] == 0.0


@pytest.mark.parametrize("joints", [[], [0, 17], [-1]])
def test_bad_joint_subsets_are_rejected(joints: list[int]) -> None:
    gt = _poses(1)
    with pytest.raises(ValueError, match="joints"):
        mpjpe(gt, gt, joints=joints)


def test_mismatched_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"same shape \(\.\.\., J, 3\)"):
        mpjpe(np.zeros((2, 17, 3)), np.zeros((2, 16, 3)))


@pytest.mark.parametrize("seed", range(5))
def test_procrustes_recovers_a_similarity_transform(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gt = _poses(1, seed)[0]
    rot = Rotation.random(random_state=seed).as_matrix()
    scale = rng.uniform(0.3, 3.0)
    shift = rng.normal(scale=1000.0, size=3)
    pred = scale * gt @ rot.T + shift
    assert mpjpe(pred, gt) > 10.0
    assert np.allclose(procrustes_align(pred, gt), gt, atol=1e-6)
    assert pa_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-6)


def test_procrustes_allows_reflections() -> None:
    gt = _poses(1, 3)[0]
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    assert pa_mpjpe(mirrored, gt) == pytest.approx(0.0, abs=1e-6)


def test_procrustes_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    gt = rng.normal(scale=300.0, size=(NUM_JOINTS, 3))
    pred = gt @ Rotation.random(random_state=4).as_matrix() + rng.normal(scale=80.0, size=gt.shape)
    std_gt, std_pred, disparity = procrustes(gt, pred)
    aligned = procrustes_align(pred, gt)
    # scipy works on centred, unit-Frobenius-norm data; map ours into that frame.
    centre, norm = gt.mean(axis=0), np.linalg.norm(gt - gt.mean(axis=0))
    assert np.allclose((aligned - centre) / norm, std_pred, atol=1e-10)
    assert np.sum(((gt - aligned) / norm) ** 2) == pytest.approx(disparity, rel=1e-9)


def test_procrustes_is_batched() -> None:
    gt = _poses(3, 5)
    pred = _poses(3, 6)
    batched = procrustes_align(pred, gt)
    for i in range(3):
        assert np.allclose(batched[i], procrustes_align(pred[i], gt[i]))


def test_procrustes_fits_on_all_joints_then_scores_the_subset() -> None:
    gt = _poses(1, 7)[0]
    pred = gt.copy()
    pred[16] += 300.0  # an outlier outside EVAL_14 still pulls the all-joint fit
    aligned_all = procrustes_align(pred, gt)
    assert pa_mpjpe(pred, gt, joints=EVAL_14) == pytest.approx(
        mpjpe(aligned_all, gt, joints=EVAL_14)
    )
    assert pa_mpjpe(pred, gt, joints=EVAL_14) > 1.0


def test_procrustes_of_a_degenerate_prediction_is_finite() -> None:
    gt = _poses(1, 8)[0]
    aligned = procrustes_align(np.zeros_like(gt), gt)
    assert np.allclose(aligned, gt.mean(axis=0))


def test_score_poses_reports_per_example_values_and_means() -> None:
    gt = _poses(4, 9)
    pred = gt.copy()
    pred[1] += [0.0, 100.0, 0.0]
    pred[3] += [0.0, 0.0, 200.0]
    scores = score_poses(pred, gt, joints=EVAL_14)
    assert np.allclose(scores.mpjpe, [0.0, 100.0, 0.0, 200.0])
    assert np.allclose(scores.pck, [1.0, 1.0, 1.0, 0.0])
    assert np.allclose(scores.pa_mpjpe, 0.0, atol=1e-6)
    means = scores.means()
    assert set(means) == {"mpjpe", "pck", "auc", "pa_mpjpe", "pa_pck", "pa_auc"}
    assert means["mpjpe"] == pytest.approx(75.0)
    assert means["pck"] == pytest.approx(0.75)
    assert means["pa_auc"] == pytest.approx(30 / 31)
    assert all(isinstance(v, float) for v in means.values())
