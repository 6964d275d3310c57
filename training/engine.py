"""Training and evaluation loops; every dependency comes in as a parameter.

Batches are the dicts of `training.data.mixed.collate` (uint8 images, normalised on the device
with the model's `cfg.input_mean`/`input_std`). The loss is `training.losses.margipose_loss` on
every stage (intermediate supervision), a masked mean over the valid (sample, joint) pairs of the
WHOLE global batch: with gradient accumulation (`accum_steps`) and with DistributedDataParallel
each chunk's loss is weighted by its share of the valid pairs, so the gradient equals that of
one pass over the global batch (up to BatchNorm, which normalises over what one forward sees).

Samples with a teacher's depth (`teacher_depth` in the batch) weigh their depth loss by
`teacher_depth_weight` (`training.losses.depth_weights`); 0 trains them as 2D-only samples.

Mixed precision: `amp` is None (float32) or a torch dtype for `torch.autocast`. bfloat16 needs
no loss scaling; float16 needs a `torch.amp.GradScaler`. The model's softmax and the whole loss
(JSD with its 1e-24 eps) run in float32 whatever autocast does.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, ImageDraw
from torch import Tensor, nn
from torch.optim import Optimizer
from tqdm import tqdm

from training.camera import ndc_to_camera
from training.losses import (
    DEFAULT_TEACHER_DEPTH_WEIGHT,
    DEFAULT_VISIBILITY_WEIGHT,
    depth_weights,
    margipose_loss,
    visibility_loss,
)
from training.metrics import mpjpe, root_relative
from training.model import MargiPose
from training.schedule import OneCycle
from training.skeleton import JOINT_NAMES

Batch = dict[str, Any]


class MetricLogger(Protocol):
    """Where scalars go (TensorBoard, CSV, or nowhere on ranks other than 0)."""

    def log(self, step: int, scalars: dict[str, float]) -> None: ...


def unwrap(model: nn.Module) -> MargiPose:
    """The MargiPose inside a (possibly DistributedDataParallel-wrapped) model."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if not isinstance(inner, MargiPose):
        raise TypeError(f"Expected a MargiPose model, got {type(inner).__name__}")
    return inner


def normalise_images(images: Tensor, model: MargiPose) -> Tensor:
    """uint8 (B, 3, H, W) -> normalised with the model's input mean/std (0..1 units), in the
    model's floating dtype (float32, or float64 for a model cast with .double())."""
    cfg = model.cfg
    dtype = next(model.parameters()).dtype
    mean = torch.tensor(cfg.input_mean, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg.input_std, device=images.device).view(1, 3, 1, 1) * 255
    return (images.to(dtype) - mean) / std  # the same arithmetic as the exported model


def _autocast(device: torch.device, amp: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `amp` on `device`, or nothing for float32."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp)


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce_sum(t: Tensor) -> Tensor:
    """Sum `t` over ranks (in place) when running distributed; returns it."""
    if _world() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _to_device(batch: Batch, device: torch.device, teacher_depth_weight: float
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Images, targets, per-sample depth weights (the loss's has_depth) and mask on `device`."""
    depth = batch["has_depth"]
    if "teacher_depth" in batch:
        depth = depth_weights(depth, batch["teacher_depth"], teacher_depth_weight)
    return (
        batch["image"].to(device, non_blocking=True),
        batch["target"].to(device, non_blocking=True),
        depth.to(device, non_blocking=True),
        batch["mask"].to(device, non_blocking=True),
    )


def batch_mpjpe(coords: Tensor, batch: Batch) -> np.ndarray:
    """Root-relative MPJPE (mm, all 17 joints) of each 3D sample, after mapping the prediction
    back to the source camera at the ground-truth root depth. (N_3d,)."""
    pred = coords.detach().float().cpu().numpy().astype(np.float64)
    errors = []
    for i in np.flatnonzero(batch["has_depth"].numpy()):
        camera = ndc_to_camera(pred[i], batch["crops"][i], float(batch["z_ref"][i]))
        truth = batch["joints"][i].numpy()
        errors.append(float(mpjpe(root_relative(camera), root_relative(truth))))
    return np.asarray(errors, dtype=np.float64)


@dataclass
class StepResult:
    """What one optimiser step reports (global-batch values, identical on every rank)."""

    loss: float
    jsd: float
    euclidean: float
    coords: Tensor  # (B_local, J, 3) this rank's last-chunk predictions, detached
    visibility: float = math.nan  # the in-view loss (unweighted); NaN without a visibility head


def _visibility_labels(batch: Batch, device: torch.device) -> tuple[Tensor, Tensor]:
    """The in-view labels and weights (B, J) of a batch; a batch without them (examples cut
    before partial views existed) labels no joint."""
    if "visible" in batch and "labelled" in batch:
        return (batch["visible"].to(device, non_blocking=True),
                batch["labelled"].to(device, non_blocking=True))
    shape = tuple(batch["mask"].shape)
    return (torch.zeros(shape, dtype=torch.bool, device=device),
            torch.zeros(shape, dtype=torch.bool, device=device))


def train_step(
    model: nn.Module,
    batch: Batch,
    optimiser: Optimizer,
    device: torch.device,
    amp: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    accum_steps: int = 1,
    teacher_depth_weight: float = DEFAULT_TEACHER_DEPTH_WEIGHT,
    visibility_weight: float = DEFAULT_VISIBILITY_WEIGHT,
) -> StepResult:
    """One optimiser step on this rank's share of a global batch, in `accum_steps` chunks.

    A model with a visibility head adds `visibility_weight` x the in-view loss (a mean over the
    labelled joints of the global batch) to the pose loss."""
    images, target, has_depth, mask = _to_device(batch, device, teacher_depth_weight)
    visible, labelled = _visibility_labels(batch, device)
    if images.shape[0] % accum_steps:
        raise ValueError(f"A batch of {images.shape[0]} does not split into {accum_steps} chunks")
    inner = unwrap(model)
    has_head = inner.visibility is not None
    world = _world()
    chunks = list(zip(*(t.chunk(accum_steps)
                        for t in (images, target, has_depth, mask, visible, labelled)),
                      strict=True))
    # Valid pairs per chunk and over the global batch: loss_k * max(c_k, 1) is chunk k's sum
    # (0 when c_k = 0), so summing loss_k * max(c_k, 1) / max(C, 1) over every chunk of every
    # rank gives the global masked mean. DDP averages gradients, hence the extra x world. The
    # in-view loss is weighted the same way by its own counts (labelled joints).
    counts = torch.stack([c[3].float().sum() for c in chunks])  # (accum_steps,)
    total = _all_reduce_sum(counts.sum().clone()).clamp(min=1)
    vis_counts = torch.stack([c[5].float().sum() for c in chunks])
    vis_total = _all_reduce_sum(vis_counts.sum().clone()).clamp(min=1)
    optimiser.zero_grad(set_to_none=True)
    # loss, jsd, euclidean, visibility (global means once reduced), in the loss's dtype:
    # float32, or float64 for a float64 model, whose loss is then reported unrounded
    dtype = torch.promote_types(next(inner.parameters()).dtype, torch.float32)
    sums = torch.zeros(4, device=device, dtype=dtype)
    coords = target
    for k, (x, t, d, m, v, lab) in enumerate(chunks):
        last = k == len(chunks) - 1
        sync = (contextlib.nullcontext() if last or world == 1 else model.no_sync())
        with sync:
            with _autocast(device, amp):
                coords, stages, logits = model(normalise_images(x, inner))
            loss, parts = margipose_loss(stages, t, d, m, use_jsd=inner.cfg.use_jsd)
            share = counts[k].clamp(min=1) / total
            scaled = loss * (share * world) if (world > 1 or accum_steps > 1) else loss
            vis = torch.zeros((), device=device, dtype=dtype)
            vis_share = vis_counts[k].clamp(min=1) / vis_total
            if logits is not None:
                vis = visibility_loss(logits, v, lab)
                split = world > 1 or accum_steps > 1
                scaled = scaled + visibility_weight * (vis * (vis_share * world) if split else vis)
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        sums += torch.stack([loss.detach() * share, parts["jsd"] * share,
                             parts["euclidean"] * share, vis.detach().to(dtype) * vis_share])
    if scaler is not None:
        scaler.step(optimiser)
        scaler.update()
    else:
        optimiser.step()
    loss_, jsd, euc, vis_ = _all_reduce_sum(sums).tolist()
    return StepResult(loss_, jsd, euc, coords.detach(), vis_ if has_head else math.nan)


def train_steps(
    model: nn.Module,
    batches: Iterable[Batch],
    optimiser: Optimizer,
    schedule: OneCycle,
    device: torch.device,
    first_step: int,
    amp: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    accum_steps: int = 1,
    logger: MetricLogger | None = None,
    log_every: int = 10,
    progress: bool = False,
    desc: str = "train",
    teacher_depth_weight: float = DEFAULT_TEACHER_DEPTH_WEIGHT,
    visibility_weight: float = DEFAULT_VISIBILITY_WEIGHT,
) -> list[float]:
    """Train on every batch of `batches`; the i-th uses the 1-based count first_step + i + 1.

    Returns the loss of each step. Every `log_every` steps, logs loss, components, lr, momentum,
    images/s and the batch's training MPJPE on 3D samples (mm, ground-truth root depth).
    """
    model.train()
    losses: list[float] = []
    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(batches, total=total, desc=desc, disable=True if not progress else None)
    tick = time.perf_counter()
    for i, batch in enumerate(bar):
        step = first_step + i + 1
        lr, momentum = schedule.apply(optimiser, step)
        result = train_step(model, batch, optimiser, device, amp, scaler, accum_steps,
                            teacher_depth_weight, visibility_weight)
        if not math.isfinite(result.loss):
            raise FloatingPointError(f"Loss became {result.loss} at step {step}")
        losses.append(result.loss)
        now = time.perf_counter()
        images_per_s = len(batch["image"]) * _world() / max(now - tick, 1e-9)
        tick = now
        bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{lr:.3g}", img_s=f"{images_per_s:.1f}")
        if logger is not None and step % log_every == 0:
            scalars = {"train/loss": result.loss, "train/jsd": result.jsd,
                       "train/euclidean": result.euclidean, "train/lr": lr,
                       "train/momentum": momentum, "train/images_per_s": images_per_s}
            if math.isfinite(result.visibility):
                scalars["train/visibility"] = result.visibility
            last_chunk = batch_slice(batch, len(batch["image"]) - len(result.coords))
            errors = batch_mpjpe(result.coords, last_chunk)
            if len(errors):
                scalars["train/mpjpe_mm"] = float(errors.mean())
            logger.log(step, scalars)
    return losses


def batch_slice(batch: Batch, start: int) -> Batch:
    """The examples start.. of a collated batch."""
    return {k: v[start:] for k, v in batch.items()}


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[Batch],
    optimiser: Optimizer,
    schedule: OneCycle,
    device: torch.device,
    epoch: int,
    steps_per_epoch: int,
    **kwargs: Any,
) -> list[float]:
    """Train epoch `epoch` (0-based): batch counts epoch * steps_per_epoch + 1 onwards."""
    return train_steps(model, loader, optimiser, schedule, device,
                       first_step=epoch * steps_per_epoch, desc=f"epoch {epoch + 1}", **kwargs)


@dataclass
class EvalTotals:
    """Sums over an evaluation pass (add them over ranks before taking means)."""

    loss_sum: float = 0.0  # sum of per-batch masked-mean losses x valid pairs
    pairs: float = 0.0  # valid (sample, joint) pairs
    mpjpe_sum: float = 0.0  # mm, over 3D samples
    samples_3d: int = 0

    def means(self) -> dict[str, float]:
        """val/loss (masked mean over all pairs) and val/mpjpe_mm (mean over 3D samples)."""
        out = {"val/loss": self.loss_sum / max(self.pairs, 1.0)}
        if self.samples_3d:
            out["val/mpjpe_mm"] = self.mpjpe_sum / self.samples_3d
        return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    device: torch.device,
    amp: torch.dtype | None = None,
    teacher_depth_weight: float = DEFAULT_TEACHER_DEPTH_WEIGHT,
) -> EvalTotals:
    """Loss and root-relative MPJPE (mm, ground-truth root depth, 3D samples) over `loader`.

    Teacher-depth samples weigh their depth loss by `teacher_depth_weight`, as in training.
    Runs the model in eval mode and restores its previous mode. With torch.distributed running,
    each rank's totals are summed over ranks (give each rank a disjoint shard).
    """
    inner = unwrap(model)
    if _world() > 1:
        # Each rank's BatchNorm running statistics last saw its own shard of the batch (unless
        # synchronised); score everywhere with rank 0's, the ones its checkpoint holds.
        for buffer in inner.buffers():
            dist.broadcast(buffer, src=0)
    was_training = inner.training
    inner.eval()
    totals = torch.zeros(4, dtype=torch.float64)
    try:
        for batch in loader:
            images, target, has_depth, mask = _to_device(batch, device, teacher_depth_weight)
            with _autocast(device, amp):
                coords, stages, _ = inner(normalise_images(images, inner))
            loss, _ = margipose_loss(stages, target, has_depth, mask, use_jsd=inner.cfg.use_jsd)
            pairs = float(mask.float().sum())
            errors = batch_mpjpe(coords, batch)
            totals += torch.tensor([float(loss) * max(pairs, 1.0), pairs, errors.sum(),
                                    len(errors)], dtype=torch.float64)
    finally:
        inner.train(was_training)
    if _world() > 1:
        # gloo and nccl both reduce float64; nccl needs the tensor on the device.
        on_device = totals.to(device)
        _all_reduce_sum(on_device)
        totals = on_device.cpu()
    loss_sum, pairs, mpjpe_sum, n3d = totals.tolist()
    return EvalTotals(loss_sum, pairs, mpjpe_sum, int(n3d))


# ----------------------------------------------------------------------------- pictures

FIGURE_JOINTS = ("head_top", "right_wrist", "left_ankle", "pelvis")
_PANEL = 256


def _heat_colours(values: np.ndarray) -> np.ndarray:
    """Map a (H, W) map to (H, W, 3) uint8 with a black-red-yellow-white ramp (max = white)."""
    t = values / max(float(values.max()), 1e-12)
    rgb = np.clip(np.stack([3 * t, 3 * t - 1, 3 * t - 2], axis=-1), 0, 1)
    return np.round(rgb * 255).astype(np.uint8)


def heatmap_figure(
    image: Tensor,
    maps: Sequence[Tensor],
    coords: Tensor,
    joints: Sequence[str] = FIGURE_JOINTS,
) -> Image.Image:
    """A picture of what the model sees and predicts: one row per joint with the crop (joint
    marked) and its xy, zy (columns z) and xz (rows z) marginal maps.

    image: (3, 256, 256) uint8; maps: the last stage's (xy, zy, xz), each (J, n, n); coords:
    (J, 3) normalised prediction.
    """
    crop = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    size = crop.size[0]
    figure = Image.new("RGB", (4 * _PANEL, len(joints) * _PANEL))
    draw = ImageDraw.Draw(figure)
    for row, name in enumerate(joints):
        j = JOINT_NAMES.index(name)
        top = row * _PANEL
        panel = crop.resize((_PANEL, _PANEL))
        u, v = ((coords[j, :2].float().cpu().numpy() + 1) / 2 * _PANEL).tolist()
        ImageDraw.Draw(panel).ellipse((u - 4, v - 4, u + 4, v + 4), outline=(0, 255, 0), width=2)
        figure.paste(panel, (0, top))
        for col, (plane, hm) in enumerate(zip(("xy", "zy", "xz"), maps, strict=True), start=1):
            heat = _heat_colours(hm[j].float().cpu().numpy())
            tile = Image.fromarray(heat).resize((_PANEL, _PANEL), Image.Resampling.NEAREST)
            figure.paste(tile, (col * _PANEL, top))
            draw.text((col * _PANEL + 4, top + 4), f"{name} {plane}", fill=(0, 255, 255))
        draw.text((4, top + 4), f"{name} ({size}px crop)", fill=(0, 255, 255))
    return figure


@torch.no_grad()
def predict_figure(model: nn.Module, batch: Batch, device: torch.device) -> Image.Image:
    """Run the model (eval mode) on the first example of `batch` and draw `heatmap_figure`."""
    inner = unwrap(model)
    was_training = inner.training
    inner.eval()
    try:
        image = batch["image"][:1].to(device)
        coords, stages, _ = inner(normalise_images(image, inner))
    finally:
        inner.train(was_training)
    return heatmap_figure(batch["image"][0], [m[0] for m in stages[-1]], coords[0])
