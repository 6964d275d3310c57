"""Marginal heatmaps: flat softmax, soft-argmax (DSNT), spread, Gaussian targets and JSD.

Grid convention: a heatmap of n cells spans [-1, 1] along each axis; cell j has its centre at
(2j + 1) / n - 1, so -1 and +1 are the outer edges of the first and last cells. Coordinates are
returned as (column, row) pairs, i.e. (x, y) for the xy map, (z, y) for zy and (x, z) for xz.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

_EPS = 1e-24


def full_precision(t: Tensor) -> Tensor:
    """`t` in float32, or float64 if it already is: half precisions are raised, doubles kept.

    Softmax, soft-argmax and the JSD run in at least float32 (1e-24 underflows in half
    precision); a float64 model (the tests' exact-arithmetic checks) stays in float64.
    """
    return t if t.dtype == torch.float64 else t.float()


def cell_centres(n: int, device: torch.device | None = None) -> Tensor:
    """Centres of n cells spanning [-1, 1]: (2j + 1) / n - 1."""
    return (torch.arange(n, device=device, dtype=torch.float32) * 2 + 1) / n - 1


def flat_softmax(logits: Tensor) -> Tensor:
    """Softmax jointly over all H x W cells of each (batch, joint) map. (B, J, H, W)."""
    b, j, h, w = logits.shape
    return F.softmax(full_precision(logits).reshape(b, j, h * w), dim=-1).reshape(b, j, h, w)


def _marginals(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    # (B, J, W) distribution over columns, (B, J, H) over rows
    return heatmaps.sum(dim=-2), heatmaps.sum(dim=-1)


def soft_argmax(heatmaps: Tensor) -> Tensor:
    """Expected (column, row) coordinate of each normalised map. (B, J, H, W) -> (B, J, 2)."""
    cols, rows = _marginals(heatmaps)
    gx = cell_centres(heatmaps.shape[-1], heatmaps.device)
    gy = cell_centres(heatmaps.shape[-2], heatmaps.device)
    return torch.stack([(cols * gx).sum(-1), (rows * gy).sum(-1)], dim=-1)


def spread(heatmaps: Tensor) -> Tensor:
    """Standard deviation of the (column, row) coordinate under each map. (B, J, 2)."""
    cols, rows = _marginals(heatmaps)
    gx = cell_centres(heatmaps.shape[-1], heatmaps.device)
    gy = cell_centres(heatmaps.shape[-2], heatmaps.device)
    mx = (cols * gx).sum(-1, keepdim=True)
    my = (rows * gy).sum(-1, keepdim=True)
    var_x = (cols * (gx - mx) ** 2).sum(-1)
    var_y = (rows * (gy - my) ** 2).sum(-1)
    return torch.stack([var_x, var_y], dim=-1).clamp_min(0).sqrt()


def coords_from_marginals(xy: Tensor, zy: Tensor, xz: Tensor) -> Tensor:
    """Combine the three marginals into (x, y, z) per joint (the paper's Eq. 3). (B, J, 3).

    x and y come from the xy map only; z is the mean of the zy and xz estimates.
    """
    x, y = soft_argmax(xy).unbind(-1)
    z_zy = soft_argmax(zy)[..., 0]  # zy: columns are z
    z_xz = soft_argmax(xz)[..., 1]  # xz: rows are z
    return torch.stack([x, y, 0.5 * (z_zy + z_xz)], dim=-1)


def coord_spread(xy: Tensor, zy: Tensor, xz: Tensor) -> Tensor:
    """Per-coordinate standard deviation matching `coords_from_marginals`. (B, J, 3).

    For z (an average of two estimates that are far from independent) we take the mean of the
    two standard deviations, the bound for fully correlated estimates, rather than pretend
    independence and claim a spread smaller than either map shows.
    """
    sx, sy = spread(xy).unbind(-1)
    sz = 0.5 * (spread(zy)[..., 0] + spread(xz)[..., 1])
    return torch.stack([sx, sy, sz], dim=-1)


def gaussian_heatmaps(mu: Tensor, size: int, sigma: float = 1.0) -> Tensor:
    """Grid-normalised Gaussians with mean `mu` (B, J, 2) as (column, row), sigma in cells.

    Returns (B, J, size, size) summing to 1 over each map (up to underflow for means far
    outside the grid, where the map becomes all zeros, as in the reference).
    """
    grid = cell_centres(size, mu.device)
    std = 2.0 * sigma / size  # one cell in normalised units
    gx = torch.exp(-0.5 * ((grid - full_precision(mu[..., 0:1])) / std) ** 2)  # (B, J, W)
    gy = torch.exp(-0.5 * ((grid - full_precision(mu[..., 1:2])) / std) ** 2)  # (B, J, H)
    g = gy.unsqueeze(-1) * gx.unsqueeze(-2)
    return g / (g.sum(dim=(-2, -1), keepdim=True) + _EPS)


def _kl(p: Tensor, q: Tensor) -> Tensor:
    return (p * ((p + _EPS).log() - (q + _EPS).log())).sum(dim=(-2, -1))


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Jensen-Shannon divergence (natural log) between maps (B, J, H, W) -> (B, J), in float32
    (float64 for float64 maps)."""
    p, q = full_precision(p), full_precision(q)
    m = 0.5 * (p + q)
    return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)
