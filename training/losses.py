"""The MargiPose training loss: JSD heatmap regulariser plus Euclidean coordinate loss.

Per stage and per (sample, joint):

- 3D samples: JSD(xy, N(x, y)) + JSD(zy, N(z, y)) + JSD(xz, N(x, z)) + ||(x, y, z)_stage - t||
- 2D samples: JSD(xy, N(x, y)) + ||(x, y)_stage - t_xy||; zy and xz get no loss at all.
- samples of depth weight w in (0, 1) (a teacher's depth, `depth_weights`): the 2D loss plus w
  times the depth part, i.e. (1 - w) x 2D loss + w x 3D loss per joint, so the loss and its
  gradient are linear in w: JSD(xy) + w (JSD(zy) + JSD(xz)) + ||.||_xy + w (||.||_xyz - ||.||_xy).
  Weights 0 and 1 take the 2D and 3D branches themselves (bit-identical to a bool has_depth).

N(.) is a grid-normalised Gaussian with sigma = 1 heatmap cell and the Euclidean term is the
unsquared L2 norm in normalised units. Terms are summed over stages with weight 1, then reduced
by a masked mean over valid (sample, joint) pairs.

History: the code behind the released checkpoints (reference tree f0f11b2, 2018) took the
Euclidean term from each stage's OWN soft-argmax coordinates, as we do. A refactor (2406c2e)
used the final stage's coordinates for every stage, i.e. 4x weight on the final output and no
coordinate loss on earlier stages, until the fix in v6.0.1 (6044949, 2020; issue #21).
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from training.heatmaps import (
    coords_from_marginals,
    full_precision,
    gaussian_heatmaps,
    js_divergence,
)

# Standard deviation of the Gaussian JSD targets, in heatmap cells (the paper's choice).
TARGET_SIGMA = 1.0
# Depth weight of samples whose depth is a teacher's estimate (BlazePose heavy's world
# landmarks, ~80-110 mm MPJPE; ground truth weighs 1). `margipose-train --teacher-depth-weight`.
DEFAULT_TEACHER_DEPTH_WEIGHT = 0.5

Stage = tuple[Tensor, Tensor, Tensor]


def _check_inputs(stages: Sequence[Stage], target: Tensor, has_depth: Tensor, mask: Tensor) -> None:
    """Raise ValueError unless the shapes of the loss inputs agree."""
    if len(stages) == 0:
        raise ValueError("stages is empty; pass at least one (xy, zy, xz) heatmap triple")
    if target.ndim != 3 or target.shape[-1] != 3:
        raise ValueError(f"target has shape {tuple(target.shape)}; expected (B, J, 3)")
    b, j = target.shape[:2]
    if tuple(has_depth.shape) != (b,):
        raise ValueError(f"has_depth has shape {tuple(has_depth.shape)}; expected ({b},)")
    if tuple(mask.shape) != (b, j):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected ({b}, {j})")
    for i, stage in enumerate(stages):
        if len(stage) != 3:
            raise ValueError(f"stage {i} has {len(stage)} maps; expected 3 (xy, zy, xz)")
        for name, hm in zip(("xy", "zy", "xz"), stage, strict=True):
            if hm.ndim != 4 or tuple(hm.shape[:2]) != (b, j) or hm.shape[-1] != hm.shape[-2]:
                raise ValueError(
                    f"stage {i} {name} map has shape {tuple(hm.shape)}; "
                    f"expected square maps ({b}, {j}, n, n)"
                )


def depth_weights(has_depth: Tensor, teacher_depth: Tensor, teacher_weight: float) -> Tensor:
    """Per-sample depth weights (B,) float32: 1 for ground-truth depth, `teacher_weight` for a
    teacher's depth, 0 for 2D-only samples (the loss's `has_depth` argument)."""
    if not 0.0 <= teacher_weight <= 1.0:
        raise ValueError(f"The teacher depth weight must be in [0, 1] (ground truth weighs 1), "
                         f"got {teacher_weight}")
    if bool(((has_depth != 0) & teacher_depth).any()):
        raise ValueError("A sample has both ground-truth and teacher depth")
    weight = has_depth.to(torch.float32)
    return torch.where(teacher_depth, torch.full_like(weight, teacher_weight), weight)


def _masked_mean(per_joint: Tensor, mask: Tensor) -> Tensor:
    """Mean of a (B, J) tensor over valid pairs: sum(loss * mask) / max(sum(mask), 1)."""
    return (per_joint * mask).sum() / mask.sum().clamp(min=1)


def margipose_loss(
    stages: Sequence[Stage],
    target: Tensor,
    has_depth: Tensor,
    mask: Tensor,
    *,
    use_jsd: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Return the MargiPose loss (a scalar) and detached components for logging.

    stages: per-stage (xy, zy, xz) softmaxed maps, each (B, J, n, n), as the model returns them.
    target: normalised (x, y, z) per joint, (B, J, 3); z is ignored for 2D-only samples.
    has_depth: (B,) bool, or float depth weights in [0, 1] (`depth_weights`): 1 (True) a 3D
        sample, 0 (False) a 2D-only sample, w in between the 2D loss plus w x the depth part.
    mask: (B, J) weights of the (sample, joint) pairs; 0 excludes a pair.
    use_jsd: False drops the JSD regulariser (the reference's ablation).

    Everything is computed in float32 (JSD's 1e-24 eps underflows in half precision), or in
    float64 for float64 maps. The components are "jsd" and "euclidean" (summed over stages,
    masked means, so they add up to the loss) and "stage{i}" (each stage's total).
    """
    _check_inputs(stages, target, has_depth, mask)
    dtype = torch.promote_types(stages[0][0].dtype, torch.float32)  # float32 or float64
    mask = mask.to(dtype)
    depth = (has_depth != 0).unsqueeze(-1)  # (B, 1), broadcasts over joints
    weight = has_depth.to(dtype).unsqueeze(-1)  # (B, 1)
    partial = depth & (weight != 1)  # blended samples (teacher depth)
    # Zero the targets the loss never uses (excluded joints, z of 2D samples) so NaN or junk
    # placeholders there cannot leak NaN into the gradients through the unselected branches.
    target = torch.where(mask.unsqueeze(-1) != 0, target.detach().to(dtype), 0.0)  # (B, J, 3)
    x, y, z = target.unbind(-1)  # each (B, J)
    z = torch.where(depth, z, 0.0)
    target = torch.stack([x, y, z], dim=-1)

    gauss_xy = gauss_zy = gauss_xz = None
    if use_jsd:
        # The same targets serve every stage; the maps are square n x n (checked above).
        n = stages[0][0].shape[-1]
        gauss_xy = gaussian_heatmaps(torch.stack([x, y], -1), n, TARGET_SIGMA)  # (B, J, n, n)
        gauss_zy = gaussian_heatmaps(torch.stack([z, y], -1), n, TARGET_SIGMA)  # cols z, rows y
        gauss_xz = gaussian_heatmaps(torch.stack([x, z], -1), n, TARGET_SIGMA)  # cols x, rows z

    jsd_total = target.new_zeros(target.shape[:2])  # (B, J)
    euc_total = target.new_zeros(target.shape[:2])
    stage_totals: list[Tensor] = []
    for xy, zy, xz in stages:
        xy, zy, xz = full_precision(xy), full_precision(zy), full_precision(xz)
        # Each stage is scored on its own coordinates (see the module docstring's history).
        coords = coords_from_marginals(xy, zy, xz)  # (B, J, 3)
        diff = coords - target
        euc_xyz = torch.linalg.vector_norm(diff, dim=-1)
        euc_xy = torch.linalg.vector_norm(diff[..., :2], dim=-1)
        # (B, J); torch.where sends no gradient (so no z signal) down the unpicked branch
        euc = torch.where(depth, euc_xyz, euc_xy)
        euc = torch.where(partial, euc_xy + weight * (euc_xyz - euc_xy), euc)
        if use_jsd:
            jsd_xy = js_divergence(xy, gauss_xy)
            jsd_zy, jsd_xz = js_divergence(zy, gauss_zy), js_divergence(xz, gauss_xz)
            jsd = torch.where(depth, jsd_xy + jsd_zy + jsd_xz, jsd_xy)
            jsd = torch.where(partial, jsd_xy + weight * (jsd_zy + jsd_xz), jsd)
        else:
            jsd = torch.zeros_like(euc)
        jsd_total = jsd_total + jsd
        euc_total = euc_total + euc
        stage_totals.append(_masked_mean(jsd + euc, mask).detach())

    loss = _masked_mean(jsd_total + euc_total, mask)
    components = {
        "jsd": _masked_mean(jsd_total, mask).detach(),
        "euclidean": _masked_mean(euc_total, mask).detach(),
    }
    components.update({f"stage{i}": t for i, t in enumerate(stage_totals)})
    return loss, components


# Weight of the in-view loss beside the pose loss (both are per-joint means of order 0.1-1).
DEFAULT_VISIBILITY_WEIGHT = 1.0


def visibility_loss(logits: Tensor, visible: Tensor, labelled: Tensor) -> Tensor:
    """Binary cross-entropy of the in-view logits (B, J) against `visible` (B, J) bool, a mean
    over the `labelled` (B, J) joints (the only ones whose visibility is known); 0 when none.

    Computed in float32 or wider. The logits of unlabelled joints get no gradient."""
    if logits.shape != visible.shape or logits.shape != labelled.shape:
        raise ValueError(f"Visibility logits {tuple(logits.shape)}, labels "
                         f"{tuple(visible.shape)} and weights {tuple(labelled.shape)} must agree")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    weight = labelled.to(dtype)
    per_joint = torch.nn.functional.binary_cross_entropy_with_logits(
        logits.to(dtype), visible.to(dtype), reduction="none")
    return (per_joint * weight).sum() / weight.sum().clamp(min=1)
