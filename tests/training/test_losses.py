"""Tests for training.losses.margipose_loss."""

import math

import pytest
import torch
from torch import Tensor

from training.heatmaps import (
    coords_from_marginals,
    flat_softmax,
    gaussian_heatmaps,
    js_divergence,
    soft_argmax,
)
from training.losses import depth_weights, margipose_loss, visibility_loss

B, J, N = 3, 5, 32


def _targets(seed: int = 0, b: int = B, j: int = J) -> Tensor:
    """Return normalised (x, y, z) targets well inside the grid. (b, j, 3)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, j, 3, generator=g) * 2 - 1) * 0.7


def _perfect_stage(target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Return the Gaussian JSD targets themselves as a stage's (xy, zy, xz) maps."""
    x, y, z = target.unbind(-1)
    return (
        gaussian_heatmaps(torch.stack([x, y], -1), N),
        gaussian_heatmaps(torch.stack([z, y], -1), N),
        gaussian_heatmaps(torch.stack([x, z], -1), N),
    )


def _logit_stage(seed: int, b: int = B, j: int = J) -> tuple[list[Tensor], tuple[Tensor, ...]]:
    """Return leaf logits (xy, zy, xz) and the softmaxed stage built from them."""
    g = torch.Generator().manual_seed(seed)
    logits = [torch.randn(b, j, N, N, generator=g).requires_grad_() for _ in range(3)]
    return logits, tuple(flat_softmax(lg) for lg in logits)


def _ones(b: int = B, j: int = J) -> tuple[Tensor, Tensor]:
    """Return an all-3D has_depth and an all-ones mask."""
    return torch.ones(b), torch.ones(b, j)


def test_perfect_heatmaps_give_near_zero_loss() -> None:
    target = _targets()
    has_depth, mask = _ones()
    loss, parts = margipose_loss([_perfect_stage(target)], target, has_depth, mask)
    assert parts["jsd"].item() == pytest.approx(0.0, abs=1e-6)
    # The Gaussian's soft-argmax recovers the target to within 1e-3 per axis inside the grid.
    assert parts["euclidean"].item() < 2e-3
    assert loss.item() == pytest.approx(parts["jsd"].item() + parts["euclidean"].item())


def test_loss_is_a_scalar_with_detached_components() -> None:
    _, stage = _logit_stage(0)
    loss, parts = margipose_loss([stage, stage], _targets(), *_ones())
    assert loss.ndim == 0 and loss.requires_grad
    assert set(parts) == {"jsd", "euclidean", "stage0", "stage1"}
    assert all(v.ndim == 0 and not v.requires_grad for v in parts.values())
    assert (parts["stage0"] + parts["stage1"]).item() == pytest.approx(loss.item(), rel=1e-5)


def test_euclidean_term_is_unsquared_distance_of_the_stage_coordinates() -> None:
    _, stage = _logit_stage(1)
    target = _targets(1)
    _, parts = margipose_loss([stage], target, *_ones(), use_jsd=False)
    expected = (coords_from_marginals(*stage) - target).norm(dim=-1).mean()
    assert parts["euclidean"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_two_d_samples_send_no_gradient_to_zy_and_xz() -> None:
    logits, stage = _logit_stage(2)
    has_depth = torch.tensor([1.0, 0.0, 1.0])
    loss, _ = margipose_loss([stage], _targets(2), has_depth, torch.ones(B, J))
    loss.backward()
    xy, zy, xz = (lg.grad for lg in logits)
    assert (zy[1] == 0).all() and (xz[1] == 0).all()
    assert (xy[1] != 0).any()
    assert (zy[0] != 0).any() and (xz[2] != 0).any()


def test_two_d_samples_ignore_target_z_even_if_nan() -> None:
    logits, stage = _logit_stage(3)
    target = _targets(3)
    has_depth = torch.tensor([True, False, True])
    loss_a, _ = margipose_loss([stage], target, has_depth, torch.ones(B, J))
    target[1, :, 2] = float("nan")
    loss_b, _ = margipose_loss([stage], target, has_depth, torch.ones(B, J))
    loss_b.backward()
    assert loss_b.item() == pytest.approx(loss_a.item())
    assert all(torch.isfinite(lg.grad).all() for lg in logits)


def test_two_d_loss_is_xy_jsd_plus_xy_distance() -> None:
    _, stage = _logit_stage(4)
    target = _targets(4)
    loss, _ = margipose_loss([stage], target, torch.zeros(B), torch.ones(B, J))
    xy = stage[0]
    jsd = js_divergence(xy, gaussian_heatmaps(target[..., :2], N))
    dist = (soft_argmax(xy) - target[..., :2]).norm(dim=-1)
    assert loss.item() == pytest.approx((jsd + dist).mean().item(), rel=1e-5)


def test_masked_joints_do_not_contribute() -> None:
    logits, stage = _logit_stage(5)
    target = _targets(5)
    mask = torch.ones(B, J)
    mask[0, 2] = 0
    mask[2, 4] = 0
    loss, _ = margipose_loss([stage], target, torch.ones(B), mask)
    # Junk (even NaN) at masked joints changes neither the loss nor the gradients' finiteness.
    target[0, 2] = float("nan")
    target[2, 4] = 100.0
    loss_junk, _ = margipose_loss([stage], target, torch.ones(B), mask)
    loss_junk.backward()
    assert loss_junk.item() == pytest.approx(loss.item())
    for lg in logits:
        assert torch.isfinite(lg.grad).all()
        assert (lg.grad[0, 2] == 0).all() and (lg.grad[2, 4] == 0).all()


def test_masked_mean_divides_by_valid_pairs() -> None:
    _, stage = _logit_stage(6)
    target = _targets(6)
    full, _ = margipose_loss([stage], target, *_ones())
    mask = torch.zeros(B, J)
    mask[1] = 1
    one_sample = [tuple(m[1:2] for m in stage)]
    sub, _ = margipose_loss(one_sample, target[1:2], torch.ones(1), torch.ones(1, J))
    masked, _ = margipose_loss([stage], target, torch.ones(B), mask)
    assert masked.item() == pytest.approx(sub.item(), rel=1e-5)
    assert masked.item() != pytest.approx(full.item())


def test_all_masked_gives_zero_not_nan() -> None:
    logits, stage = _logit_stage(7)
    loss, parts = margipose_loss([stage], _targets(7), torch.ones(B), torch.zeros(B, J))
    loss.backward()
    assert loss.item() == 0.0
    assert all(v.item() == 0.0 for v in parts.values())
    assert all((lg.grad == 0).all() for lg in logits)


def test_use_jsd_false_drops_the_term() -> None:
    _, stage = _logit_stage(8)
    target = _targets(8)
    with_jsd, parts = margipose_loss([stage], target, *_ones())
    without, parts_off = margipose_loss([stage], target, *_ones(), use_jsd=False)
    assert parts_off["jsd"].item() == 0.0
    assert without.item() == pytest.approx(parts["euclidean"].item())
    assert with_jsd.item() == pytest.approx(without.item() + parts["jsd"].item())


def test_loss_is_summed_over_stages() -> None:
    _, stage = _logit_stage(9)
    target = _targets(9)
    one, _ = margipose_loss([stage], target, *_ones())
    two, _ = margipose_loss([stage, stage], target, *_ones())
    assert two.item() == pytest.approx(2 * one.item(), rel=1e-6)


def test_each_stage_is_scored_on_its_own_coordinates() -> None:
    # A perfect final stage must not hide a bad first stage (the pre-2020 reference bug).
    target = _targets(10)
    _, bad = _logit_stage(10)
    perfect = _perfect_stage(target)
    _, parts = margipose_loss([bad, perfect], target, *_ones(), use_jsd=False)
    _, bad_only = margipose_loss([bad], target, *_ones(), use_jsd=False)
    assert parts["stage0"].item() == pytest.approx(bad_only["euclidean"].item())
    assert parts["stage1"].item() < 2e-3


def test_targets_outside_the_grid_stay_finite() -> None:
    logits, stage = _logit_stage(11)
    target = _targets(11)
    target[0, 0] = torch.tensor([3.0, -4.0, 10.0])
    target[1, 1, 2] = -1e6
    loss, parts = margipose_loss([stage], target, *_ones())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(v) for v in parts.values())
    assert all(torch.isfinite(lg.grad).all() for lg in logits)
    # An off-grid Gaussian underflows to zero: its JSD is the constant ln(2) / 2.
    assert parts["jsd"].item() > 0.5 * math.log(2) / (B * J)


def test_half_precision_maps_are_scored_in_float32() -> None:
    target = _targets(12)
    stage = tuple(m.to(torch.bfloat16) for m in _perfect_stage(target))
    loss, parts = margipose_loss([stage], target, *_ones())
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    assert parts["jsd"].item() < 1e-2


def test_float64_maps_are_scored_in_float64_with_exact_gradients() -> None:
    # In float64 the analytic gradient can be checked against finite differences: the loss
    # (soft-argmax distances and JSD, masked mean over a 3D and a 2D sample) is smooth in the
    # logits. Small maps keep the check quick.
    g = torch.Generator().manual_seed(13)
    b, j, n = 2, 3, 8
    target = (torch.rand(b, j, 3, generator=g, dtype=torch.float64) * 2 - 1) * 0.7
    has_depth, mask = torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    logits = [torch.randn(b, j, n, n, generator=g, dtype=torch.float64).requires_grad_()
              for _ in range(3)]

    def loss_of(*lg: Tensor) -> Tensor:
        return margipose_loss([tuple(flat_softmax(x) for x in lg)], target, has_depth, mask)[0]

    assert loss_of(*logits).dtype == torch.float64
    assert torch.autograd.gradcheck(loss_of, tuple(logits), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stages": []}, "stages is empty"),
        ({"target": torch.zeros(B, J, 2)}, "target has shape"),
        ({"has_depth": torch.ones(B, 1)}, "has_depth has shape"),
        ({"mask": torch.ones(B, J + 1)}, "mask has shape"),
        ({"stages": [(torch.zeros(B, J, N, N),) * 2]}, "expected 3"),
        ({"stages": [(torch.zeros(B, J, N, N - 1),) * 3]}, "square maps"),
    ],
)
def test_bad_inputs_name_the_problem(kwargs: dict, match: str) -> None:
    args = {
        "stages": [_perfect_stage(_targets())],
        "target": _targets(),
        "has_depth": torch.ones(B),
        "mask": torch.ones(B, J),
    } | kwargs
    with pytest.raises(ValueError, match=match):
        margipose_loss(**args)


def _loss_and_grads(weights: Tensor, seed: int = 3) -> tuple[Tensor, list[Tensor]]:
    """float64 loss over two stages of leaf logits, and its gradients wrt the logits."""
    g = torch.Generator().manual_seed(seed)
    logits = [torch.randn(B, J, N, N, generator=g, dtype=torch.float64).requires_grad_()
              for _ in range(6)]
    stages = [tuple(flat_softmax(lg) for lg in logits[:3]),
              tuple(flat_softmax(lg) for lg in logits[3:])]
    mask = torch.ones(B, J, dtype=torch.float64)
    mask[1, 2] = 0
    loss, _ = margipose_loss(stages, _targets(5).double(), weights, mask)
    return loss.detach(), list(torch.autograd.grad(loss, logits))


def test_depth_weights_zero_and_one_are_the_2d_and_3d_losses_bit_for_bit() -> None:
    has_depth = torch.tensor([True, False, True])
    loss_bool, grads_bool = _loss_and_grads(has_depth)
    loss_weight, grads_weight = _loss_and_grads(has_depth.float())
    assert torch.equal(loss_bool, loss_weight)
    assert all(torch.equal(a, b) for a, b in zip(grads_bool, grads_weight, strict=True))


@pytest.mark.parametrize("w", [0.25, 0.5, 0.8])
def test_a_depth_weight_scales_the_depth_term(w: float) -> None:
    # The depth term is the 3D loss minus the 2D loss: the weight-w loss and its gradients are
    # 2D + w (3D - 2D). float64: the three sums round differently, ~1e-16 relative.
    loss_2d, grads_2d = _loss_and_grads(torch.zeros(B))
    loss_3d, grads_3d = _loss_and_grads(torch.ones(B))
    loss_w, grads_w = _loss_and_grads(torch.full((B,), w, dtype=torch.float64))
    assert loss_3d > loss_2d  # the depth term is there to scale
    assert float(loss_w) == pytest.approx(float(loss_2d + w * (loss_3d - loss_2d)), rel=1e-12)
    for a, b, c in zip(grads_w, grads_2d, grads_3d, strict=True):
        torch.testing.assert_close(a, b + w * (c - b), rtol=0, atol=1e-15)


def test_a_weighted_sample_leaves_the_others_alone() -> None:
    # Sample 2 at weight 0.5 beside a 3D and a 2D sample: the batch loss is the mean of the
    # per-sample losses (all joints valid), and only sample 2's moves. float64.
    target = _targets().double()
    stage = tuple(m.detach().double() for m in _logit_stage(4)[1])
    mask = torch.ones(B, J, dtype=torch.float64)

    def per_sample(weights: list[float]) -> list[float]:
        w = torch.tensor(weights, dtype=torch.float64)
        return [float(margipose_loss([tuple(m[i:i + 1] for m in stage)], target[i:i + 1],
                                     w[i:i + 1], mask[i:i + 1])[0]) for i in range(B)]

    mixed, plain, full = (per_sample([1.0, 0.0, w]) for w in (0.5, 0.0, 1.0))
    assert mixed[:2] == plain[:2] == full[:2]
    assert mixed[2] == pytest.approx(0.5 * (plain[2] + full[2]), rel=1e-12)
    whole, _ = margipose_loss([stage], target, torch.tensor([1.0, 0.0, 0.5]), mask)
    assert float(whole) == pytest.approx(sum(mixed) / B, rel=1e-12)


def test_depth_weights_pick_ground_truth_teacher_or_none() -> None:
    has_depth = torch.tensor([True, False, False])
    teacher = torch.tensor([False, True, False])
    assert depth_weights(has_depth, teacher, 0.3).tolist() == pytest.approx([1.0, 0.3, 0.0])
    assert depth_weights(has_depth, teacher, 0.0).tolist() == [1.0, 0.0, 0.0]
    assert depth_weights(has_depth, teacher, 0.0).dtype == torch.float32
    with pytest.raises(ValueError, match=r"must be in \[0, 1\] .* got 1.5"):
        depth_weights(has_depth, teacher, 1.5)
    with pytest.raises(ValueError, match="both ground-truth and teacher depth"):
        depth_weights(has_depth, torch.tensor([True, False, False]), 0.5)


def test_visibility_loss_is_the_mean_bce_over_labelled_joints() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 17, generator=g, dtype=torch.float64)
    visible = torch.rand(3, 17, generator=g) < 0.6
    labelled = torch.rand(3, 17, generator=g) < 0.8
    p = torch.sigmoid(logits)
    bce = -(visible * p.log() + (~visible) * (1 - p).log())
    want = bce[labelled].mean()
    got = visibility_loss(logits, visible, labelled)
    assert got.dtype == torch.float64 and torch.allclose(got, want, rtol=1e-12)
    # unlabelled joints get no gradient
    leaf = logits.clone().requires_grad_(True)
    visibility_loss(leaf, visible, labelled).backward()
    assert (leaf.grad[~labelled] == 0).all() and (leaf.grad[labelled] != 0).all()
    nothing = torch.zeros(3, 17, dtype=torch.bool)
    assert visibility_loss(logits, visible, nothing) == 0
    with pytest.raises(ValueError, match="must agree"):
        visibility_loss(logits, visible[:2], labelled)
