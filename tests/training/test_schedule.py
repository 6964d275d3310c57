"""Tests for the 1-cycle schedule: the reference's milestones, linearity and the optimiser hook."""

import numpy as np
import pytest
import torch

from training.schedule import OneCycle, one_cycle


@pytest.mark.parametrize("lr_max", [1.0, 2.5])
def test_reference_run_hits_the_milestones(lr_max: float) -> None:
    total = 150 * 1000  # the reference: 150 epochs of 1000 batches
    assert one_cycle(1, total, lr_max) == pytest.approx((0.1 * lr_max, 0.9))
    assert one_cycle(67_500, total, lr_max) == pytest.approx((lr_max, 0.85))  # 0.45 T
    assert one_cycle(135_000, total, lr_max) == pytest.approx((0.1 * lr_max, 0.9))  # 0.9 T
    assert one_cycle(150_000, total, lr_max) == pytest.approx((1e-4 * lr_max, 0.9))  # T


def test_values_are_linear_between_real_valued_milestones() -> None:
    total = 1001  # 0.45 T = 450.45 and 0.9 T = 900.9 fall between batches
    ts = [1.0, 450.45, 900.9, 1001.0]
    steps = np.arange(1, total + 1)
    lrs, moms = zip(*(one_cycle(int(s), total, 1.0) for s in steps), strict=True)
    np.testing.assert_allclose(lrs, np.interp(steps, ts, [0.1, 1.0, 0.1, 1e-4]), rtol=1e-12)
    np.testing.assert_allclose(moms, np.interp(steps, ts, [0.9, 0.85, 0.9, 0.9]), rtol=1e-12)


def test_counts_past_the_end_keep_the_final_values() -> None:
    assert one_cycle(500, 100, 1.0) == one_cycle(100, 100, 1.0)


@pytest.mark.parametrize(
    ("step", "total", "lr_max", "message"),
    [(0, 100, 1.0, "start at 1"), (1, 2, 1.0, "at least 3"), (1, 100, 0.0, "positive")],
)
def test_bad_arguments_are_refused(step: int, total: int, lr_max: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        one_cycle(step, total, lr_max)


def test_apply_sets_every_param_group() -> None:
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=123.0, momentum=0.5)
    schedule = OneCycle(total_steps=100, lr_max=1.0)
    assert schedule.apply(opt, 45) == pytest.approx((1.0, 0.85))
    for group in opt.param_groups:
        assert (group["lr"], group["momentum"]) == pytest.approx((1.0, 0.85))


def test_apply_scales_a_groups_rate_by_its_lr_scale() -> None:
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr_scale": 1e-3}], lr=1.0,
                          momentum=0.9)
    # The returned rate is the schedule's own; the scaled group trains at 1/1000 of it.
    assert OneCycle(total_steps=100, lr_max=2.0).apply(opt, 45) == pytest.approx((2.0, 0.85))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2.0, 2e-3])
    assert [g["momentum"] for g in opt.param_groups] == pytest.approx([0.85, 0.85])


def test_apply_refuses_optimisers_without_momentum() -> None:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="Adam has no momentum"):
        OneCycle(100, 1.0).apply(opt, 1)
