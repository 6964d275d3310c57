"""training.framing: the body template's measurement and the re-framing rule's evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posecontract.crop_image import render_crop
from posecontract.framing import BODY_TEMPLATE
from posecontract.skeleton import FLIP_PERMUTATION, NUM_JOINTS, joint_index
from tests.training.stick_figures import sample_3d
from training.data.partial import apply_cut
from training.data.sample import ListSource
from training.framing import _view_cut, body_template, evaluate_reframing, upright
from training.visibility import view_example

UPPER = [joint_index(n) for n in ("head_top", "head", "neck", "right_shoulder",
                                  "left_shoulder", "spine")]


def test_the_template_is_the_symmetric_median_of_the_upright_people():
    rng = np.random.default_rng(0)
    standing = BODY_TEMPLATE + rng.normal(0, 0.02, (40, NUM_JOINTS, 2))
    lying = standing[:10, :, ::-1]  # turned a quarter: wider than tall
    joints = np.concatenate([standing, lying])
    assert upright(joints).tolist() == [True] * 40 + [False] * 10
    template = body_template(joints)
    mirrored = standing[:, list(FLIP_PERMUTATION)] * [-1, 1]
    np.testing.assert_allclose(template, np.median(np.concatenate([standing, mirrored]), axis=0))
    np.testing.assert_allclose(template, BODY_TEMPLATE, atol=0.02)
    with pytest.raises(ValueError, match="No upright people"):
        body_template(lying)


def test_the_cut_is_the_one_the_view_drew():
    sample = sample_3d(1)
    example = view_example(sample, "cut", 5, 1)
    cut = _view_cut(sample, "cut", 5, 1)
    pixels = render_crop(sample.image, example.crop)
    apply_cut(pixels, example.crop, cut)
    assert (torch.from_numpy(pixels).permute(2, 0, 1) == example.image).all()
    assert _view_cut(sample, "tight", 5, 1).tight and _view_cut(sample, "full", 5, 1) is None


class Constant(torch.nn.Module):
    """Says the same pose of every crop: `coords` (17, 3) with `visibility` (17,)."""

    def __init__(self, coords: np.ndarray, visibility: np.ndarray | None):
        super().__init__()
        self.coords = torch.as_tensor(coords, dtype=torch.float32)
        self.visibility = None if visibility is None else torch.as_tensor(visibility,
                                                                          dtype=torch.float32)

    def forward(self, images: torch.Tensor):
        n = len(images)
        coords = self.coords.expand(n, -1, -1)
        maps = torch.full((n, NUM_JOINTS, 32, 32), 1 / 1024)
        out = (coords, torch.full_like(coords, 0.05), maps, maps, maps)
        return out if self.visibility is None else (*out, self.visibility.expand(n, -1))


def _coords(scale: float, shift: tuple[float, float]) -> np.ndarray:
    coords = np.zeros((NUM_JOINTS, 3))
    coords[:, :2] = scale * BODY_TEMPLATE + shift
    return coords


SOURCE = ListSource("stick-test", [sample_3d(i) for i in range(4)])


def test_a_whole_body_pose_is_never_re_framed():
    result = evaluate_reframing(SOURCE, Constant(_coords(1, (0, 0)), np.ones(NUM_JOINTS)),
                                seed=1, rounds=50)
    for row in result["views"].values():
        assert row["reframed"] == 0 and row["change_px"] == 0
        assert row["error_px_reframed"] == row["error_px_first_pass"] > 0
        assert row["seen_mpjpe_mm_reframed"] == row["seen_mpjpe_mm_first_pass"]


def test_a_half_seen_pose_is_run_again_and_mapped_back_into_the_first_crop():
    visibility = np.zeros(NUM_JOINTS)
    visibility[UPPER] = 1
    first = _coords(2, (0, 0.5))  # the upper body twice the template's size: frame 2x, lower
    result = evaluate_reframing(SOURCE, Constant(first, visibility), seed=1, views=("tight",),
                                rounds=50)
    row = result["views"]["tight"]
    assert row["reframed"] == 4 and row["reframed_fraction"] == 1
    # The second crop is twice the first, centred at (0, 0.5) of it: the same pose said there
    # lands at (0, 0.5) + 2 x pose in the first crop (up to the crop camera's pan).
    second = first.copy()
    second[:, :2] = (0, 0.5) + 2 * first[:, :2]
    want_first, want_second, joints = 0.0, 0.0, 0
    agree, shown_agree, labelled = 0, 0, 0
    for i in range(len(SOURCE)):
        example = view_example(SOURCE[i], "tight", 1, i)
        said, known = visibility >= 0.5, example.labelled.numpy()
        agree += int((said == example.visible.numpy())[known].sum())
        shown = view_example(SOURCE[i], "full", 1, i).visible.numpy()
        shown_agree += int((said == shown)[known].sum())
        labelled += int(known.sum())
        seen = (example.visible & example.labelled).numpy()
        target = example.target.double().numpy()[seen, :2]
        want_first += np.linalg.norm(first[seen, :2] - target, axis=1).sum() * 128
        want_second += np.linalg.norm(second[seen, :2] - target, axis=1).sum() * 128
        joints += int(seen.sum())
    assert row["seen_joints"] == joints
    assert row["error_px_first_pass"] == pytest.approx(want_first / joints, rel=1e-6)
    assert row["error_px_reframed"] == pytest.approx(want_second / joints, rel=0.02)
    assert row["change_px_95"][0] <= row["change_px"] <= row["change_px_95"][1]
    # the stand-in says the same visibility in both passes, scored against the view's labels
    # and, for a tight box, against what the picture shows
    assert row["in_view_accuracy_first_pass"] == row["in_view_accuracy_reframed"] == \
        pytest.approx(agree / labelled)
    assert row["in_picture_accuracy_reframed"] == pytest.approx(shown_agree / labelled)


def test_a_model_without_the_head_cannot_be_framed():
    with pytest.raises(SystemExit, match="no visibility head"):
        evaluate_reframing(SOURCE, Constant(_coords(1, (0, 0)), None), seed=1, rounds=10)


def test_a_sweep_scores_each_threshold_on_the_same_second_passes():
    visibility = np.zeros(NUM_JOINTS)
    visibility[UPPER] = 1
    result = evaluate_reframing(SOURCE, Constant(_coords(2, (0, 0.5)), visibility), seed=1,
                                views=("cut",), rounds=50, min_scales=[1.5, 3.0])
    low, high = result["sweep"]["1.5"]["cut"], result["sweep"]["3.0"]["cut"]
    assert result["views"]["cut"] == low and result["reframe_min_scale"] == 1.5
    assert low["reframed"] == 4 and high["reframed"] == 0  # the fitted scale is 2
    assert high["error_px_reframed"] == high["error_px_first_pass"] == low["error_px_first_pass"]
