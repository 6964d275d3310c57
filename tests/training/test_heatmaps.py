"""Known-value and property tests for training.heatmaps."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.heatmaps import (
    cell_centres,
    coords_from_marginals,
    flat_softmax,
    gaussian_heatmaps,
    js_divergence,
    soft_argmax,
    spread,
)

N = 32
CELL = 2.0 / N  # one heatmap cell in normalised units
# A sigma = 1 cell Gaussian is truncated by the grid edge; 3 cells in, its soft-argmax bias is
# below 1e-4, comfortably inside the 1e-3 tolerance.
INSIDE = 1.0 - 3 * CELL

inside = st.floats(-INSIDE, INSIDE, allow_nan=False)


def _one_hot(row: int, col: int, n: int = N) -> torch.Tensor:
    """Return a (1, 1, n, n) map with all mass on one cell."""
    hm = torch.zeros(1, 1, n, n)
    hm[0, 0, row, col] = 1.0
    return hm


def _random_maps(*shape: int, seed: int = 0) -> torch.Tensor:
    """Return flat-softmaxed random maps of the given (B, J, H, W) shape."""
    return flat_softmax(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3)


def test_cell_centres_span_minus_one_to_one_as_edges() -> None:
    c = cell_centres(N)
    assert c[0].item() == pytest.approx(-1 + 1 / N)
    assert c[-1].item() == pytest.approx(1 - 1 / N)
    assert torch.allclose(c[1:] - c[:-1], torch.full((N - 1,), CELL))


@settings(max_examples=50, deadline=None)
@given(x=inside, y=inside)
def test_gaussian_target_gives_back_its_mean(x: float, y: float) -> None:
    mu = torch.tensor([[[x, y]]])
    hm = gaussian_heatmaps(mu, N, sigma=1.0)
    assert hm.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(soft_argmax(hm), mu, atol=1e-3)


def test_gaussian_target_is_row_y_column_x() -> None:
    hm = gaussian_heatmaps(torch.tensor([[[0.5, -0.5]]]), N)[0, 0]
    row, col = divmod(int(hm.argmax()), N)
    assert cell_centres(N)[col].item() == pytest.approx(0.5, abs=CELL)
    assert cell_centres(N)[row].item() == pytest.approx(-0.5, abs=CELL)


def test_flat_softmax_sums_to_one_per_map() -> None:
    hm = flat_softmax(torch.randn(2, 3, N, N) * 10)
    assert hm.shape == (2, 3, N, N)
    assert torch.allclose(hm.sum(dim=(-2, -1)), torch.ones(2, 3), atol=1e-5)
    assert (hm >= 0).all()


def test_flat_softmax_is_float32_for_half_logits() -> None:
    hm = flat_softmax(torch.randn(1, 2, N, N).to(torch.bfloat16))
    assert hm.dtype == torch.float32
    assert torch.isfinite(hm).all()


def test_float64_maps_stay_float64() -> None:
    # The exact-arithmetic checks of the training step run a float64 model end to end.
    logits = torch.randn(1, 2, N, N, dtype=torch.float64)
    hm = flat_softmax(logits)
    assert hm.dtype == torch.float64
    assert js_divergence(hm, hm.flip(-1)).dtype == torch.float64
    mu = torch.zeros(1, 2, 2, dtype=torch.float64)
    assert gaussian_heatmaps(mu, N).dtype == torch.float64
    assert float((hm.sum(dim=(-2, -1)) - 1).abs().max()) < 1e-12


@pytest.mark.parametrize(("row", "col"), [(0, 0), (5, 20), (31, 7), (31, 31)])
def test_soft_argmax_of_one_hot_is_cell_centre(row: int, col: int) -> None:
    xy = soft_argmax(_one_hot(row, col))[0, 0]
    assert xy[0].item() == pytest.approx((2 * col + 1) / N - 1)
    assert xy[1].item() == pytest.approx((2 * row + 1) / N - 1)


def test_coords_from_marginals_reads_each_axis_from_the_right_place() -> None:
    # Distinct cells everywhere so that any swapped axis or map gives a different answer:
    # xy: x at column 3, y at row 20; zy: z at column 10 (its row 28 is an unused y);
    # xz: z at row 16 (its column 25 is an unused x).
    centre = cell_centres(N)
    xy, zy, xz = _one_hot(20, 3), _one_hot(28, 10), _one_hot(16, 25)
    x, y, z = coords_from_marginals(xy, zy, xz)[0, 0].tolist()
    assert x == pytest.approx(centre[3].item())
    assert y == pytest.approx(centre[20].item())
    assert z == pytest.approx(0.5 * (centre[10].item() + centre[16].item()))


def test_coords_from_marginals_matches_soft_argmax_on_random_maps() -> None:
    xy, zy, xz = (_random_maps(2, 4, N, N, seed=s) for s in (1, 2, 3))
    coords = coords_from_marginals(xy, zy, xz)
    assert coords.shape == (2, 4, 3)
    assert torch.allclose(coords[..., :2], soft_argmax(xy))
    z = 0.5 * (soft_argmax(zy)[..., 0] + soft_argmax(xz)[..., 1])
    assert torch.allclose(coords[..., 2], z)


def test_spread_of_one_hot_is_zero() -> None:
    assert torch.allclose(spread(_one_hot(4, 17)), torch.zeros(1, 1, 2), atol=1e-6)


def test_spread_of_centred_gaussian_is_its_sigma() -> None:
    hm = gaussian_heatmaps(torch.tensor([[[0.1, -0.2]]]), N, sigma=1.0)
    # A unit-cell Gaussian sampled at cell centres has a discrete variance within ~1e-3 of 1.
    assert torch.allclose(spread(hm), torch.full((1, 1, 2), CELL), rtol=1e-2)


def test_spread_scales_with_sigma() -> None:
    hm = gaussian_heatmaps(torch.zeros(1, 1, 2), N, sigma=2.5)
    assert torch.allclose(spread(hm), torch.full((1, 1, 2), 2.5 * CELL), rtol=1e-2)


def test_jsd_of_identical_maps_is_zero() -> None:
    p = _random_maps(2, 3, N, N)
    assert torch.allclose(js_divergence(p, p), torch.zeros(2, 3), atol=1e-6)


def test_jsd_is_symmetric_and_bounded_by_ln2() -> None:
    p, q = _random_maps(4, 5, N, N, seed=7), _random_maps(4, 5, N, N, seed=8)
    d = js_divergence(p, q)
    assert d.shape == (4, 5)
    assert torch.allclose(d, js_divergence(q, p))
    assert (d >= -1e-6).all() and (d <= math.log(2) + 1e-6).all()


def test_jsd_of_disjoint_supports_is_ln2() -> None:
    d = js_divergence(_one_hot(0, 0), _one_hot(31, 31))
    assert d.item() == pytest.approx(math.log(2), abs=1e-6)


def test_jsd_against_off_grid_target_is_half_ln2_and_finite() -> None:
    # Far outside the grid the Gaussian underflows to all zeros (as in the reference).
    target = gaussian_heatmaps(torch.tensor([[[5.0, 0.0]]]), N)
    assert target.sum().item() == 0.0
    logits = torch.randn(1, 1, N, N, requires_grad=True)
    d = js_divergence(flat_softmax(logits), target)
    d.sum().backward()
    assert d.item() == pytest.approx(0.5 * math.log(2), abs=1e-6)
    assert torch.isfinite(logits.grad).all()


def test_jsd_is_float32_for_half_inputs() -> None:
    p = _random_maps(1, 2, N, N).to(torch.bfloat16)
    q = gaussian_heatmaps(torch.zeros(1, 2, 2), N).to(torch.bfloat16)
    d = js_divergence(p, q)
    assert d.dtype == torch.float32
    assert torch.isfinite(d).all()
