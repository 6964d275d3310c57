"""Marginal heatmaps against a volumetric heatmap head: output size, memory and time on CPU.

    python -m bench.marginal_vs_volumetric --threads 2 --batch-sizes 1 8 \
        --json bench/results/marginal_vs_volumetric.json

The paper's central claim is that three 2D marginal heatmaps per joint (J x 32 x 32 each) give
3D pose for a fraction of the memory of a volumetric heatmap (J x D x D x D). Every head below
takes the same input, random paper-width trunk features (B, 128, 32, 32) (the trunk is common
to all heads, so it is left out), has the paper's layer widths and J = 17 joints, and returns
normalised (x, y, z) by soft-argmax:

- marginal-column: one of our heatmap columns (xy, `training.model.HeatmapColumn`): J logit
  maps of 32 x 32, flat softmax, 2D soft-argmax. A third of a stage, for reference.
- marginal-stage: one stage of our model, three columns (xy, zy, xz, `training.model.Heads`),
  coordinates combined as the model does.
- volumetric-32: the baseline. The body of one column (all its residual blocks but the last:
  down to 16 x 16 and back up to 128 x 32 x 32), then a 1x1 conv to J * 32 channels, read as
  (J, 32 depth, 32, 32) logits; softmax over each joint's whole 32^3 volume; 3D soft-argmax.
- volumetric-64: the same body, one more up block of the column's own kind (128 channels,
  32 -> 64) and a 1x1 conv to J * 64 channels at 64 x 64: J x 64^3 logits.

The volumetric heads end in a 1x1 conv, like the integral-regression and coarse-to-fine
volumetric heads, and not in a residual block widened to J * D channels, whose 3x3 conv from
J * D to J * D channels would alone cost 3 (D = 32) to 44 (D = 64) GMAC per image. It is the
cheapest head that can emit the volume, so the comparison favours the baseline: the ratios are
lower bounds on what a volumetric head costs.

Measured (random weights; sizes, memory and time do not depend on them):

- output: floats and float32 bytes per image of the softmaxed heatmaps;
- training activations: bytes of the unique tensor storages autograd saves for backward during
  the forward pass and the loss, counted with `torch.autograd.graph.saved_tensors_hooks`,
  BatchNorm in training mode. Parameters, buffers and the input features are not counted. The
  loss is the paper's: JSD of the maps to Gaussian targets (sigma 1 cell) plus Euclidean error
  of the soft-argmax coordinates; for a stage `training.losses.margipose_loss`, for a column its
  2D (xy) branch, for a volume its 3D analogue (JSD over the whole volume);
- inference peak: each (head, batch) runs in a fresh spawned process, where glibc serves
  allocations of 64 KiB and more by mmap (mallopt) so that RSS follows the live tensors. After
  one warm-up forward, free heap memory goes back to the OS (malloc_trim) and the kernel's
  peak-RSS mark is reset (/proc/self/clear_refs); the figure is peak RSS (VmHWM) during one
  forward under torch.inference_mode minus RSS just before it, so it includes the outputs and
  allocator overhead. Linux with glibc only;
- forward time at batch 1 (eval mode, inference mode; median after warm-up) and GMAC per image
  (convolutions, counted by torch.utils.flop_counter).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from bench.report import (
    add_common_args,
    apply_common_args,
    describe_machine,
    markdown_table,
    median_and_p90,
    write_json,
)
from posecontract.layout import HEATMAP_SIZE
from training.heatmaps import (
    cell_centres,
    coords_from_marginals,
    flat_softmax,
    gaussian_heatmaps,
    js_divergence,
    soft_argmax,
)
from training.losses import TARGET_SIGMA, margipose_loss
from training.model import Heads, HeatmapColumn, ModelConfig, ResidualBlock, variant_config

Outputs = tuple[Tensor, tuple[Tensor, ...]]  # coordinates (B, J, 2 or 3), softmaxed maps
MIB = 2**20
REFERENCE = "marginal-stage"  # ratios in the memory table are relative to this head
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 64 * 1024


def _euclidean(coords: Tensor, target: Tensor) -> Tensor:
    """Per-joint L2 distance (B, J)."""
    return torch.linalg.vector_norm(coords - target, dim=-1)


class MarginalColumn(nn.Module):
    """One xy column: (B, F, 32, 32) -> J maps (B, J, 32, 32), (x, y) by 2D soft-argmax."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.column = HeatmapColumn(cfg.feat_channels, cfg.mid_channels, cfg.n_joints, "xy")

    def forward(self, features: Tensor) -> Outputs:
        xy = flat_softmax(self.column(features))  # (B, J, 32, 32)
        return soft_argmax(xy), (xy,)

    def loss(self, outputs: Outputs, target: Tensor) -> Tensor:
        """JSD to a Gaussian at the target (x, y) plus Euclidean (x, y) error."""
        coords, (xy,) = outputs
        target_xy = target[..., :2]
        jsd = js_divergence(xy, gaussian_heatmaps(target_xy, xy.shape[-1], TARGET_SIGMA))
        return (jsd + _euclidean(coords, target_xy)).mean()


class MarginalStage(nn.Module):
    """One stage of our model: three columns (xy, zy, xz), (x, y, z) as the model combines them."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = Heads(cfg)

    def forward(self, features: Tensor) -> Outputs:
        xy, zy, xz = self.heads(features)  # each (B, J, 32, 32)
        return coords_from_marginals(xy, zy, xz), (xy, zy, xz)

    def loss(self, outputs: Outputs, target: Tensor) -> Tensor:
        """Our training loss on one stage, every sample 3D and every joint valid."""
        _, (xy, zy, xz) = outputs
        b, j = target.shape[:2]
        loss, _ = margipose_loss([(xy, zy, xz)], target, torch.ones(b), torch.ones(b, j))
        return loss


def soft_argmax_3d(volume: Tensor) -> Tensor:
    """Expected (x, y, z) of normalised volumes (B, J, D, H, W) laid out (z, y, x). (B, J, 3)."""
    d, h, w = volume.shape[-3:]
    x = (volume.sum(dim=(2, 3)) * cell_centres(w, volume.device)).sum(-1)
    y = (volume.sum(dim=(2, 4)) * cell_centres(h, volume.device)).sum(-1)
    z = (volume.sum(dim=(3, 4)) * cell_centres(d, volume.device)).sum(-1)
    return torch.stack([x, y, z], dim=-1)


def gaussian_volumes(mu: Tensor, size: int, sigma: float) -> Tensor:
    """Normalised 3D Gaussians at (x, y, z) = mu (B, J, 3), sigma in cells. (B, J, n, n, n)."""
    std = 2.0 * sigma / size  # one cell in normalised units
    gz = torch.exp(-0.5 * ((cell_centres(size, mu.device) - mu[..., 2:3]) / std) ** 2)  # (B, J, n)
    gz = gz / gz.sum(-1, keepdim=True)
    gxy = gaussian_heatmaps(mu[..., :2], size, sigma)  # (B, J, n, n), rows y, columns x
    return gz[..., :, None, None] * gxy[..., None, :, :]


class VolumetricHead(nn.Module):
    """Column body, [up block to 64 x 64,] 1x1 conv to J * D logits; (x, y, z) by 3D soft-argmax.

    depth: D, the volume's side, HEATMAP_SIZE (32) or twice that (64).
    """

    def __init__(self, cfg: ModelConfig, depth: int):
        super().__init__()
        if depth not in (HEATMAP_SIZE, 2 * HEATMAP_SIZE):
            raise ValueError(f"Volume depth must be {HEATMAP_SIZE} or {2 * HEATMAP_SIZE}, "
                             f"got {depth}")
        feat = cfg.feat_channels
        column = HeatmapColumn(feat, cfg.mid_channels, cfg.n_joints, "xy")
        blocks = [*column.down, *column.up[:-1]]  # ends at (B, F, 32, 32), before the J-map block
        if depth == 2 * HEATMAP_SIZE:
            blocks.append(ResidualBlock(feat, feat, "up"))  # (B, F, 64, 64)
        self.body = nn.Sequential(*blocks)
        self.logits = nn.Conv2d(feat, cfg.n_joints * depth, 1)
        self.n_joints = cfg.n_joints

    def forward(self, features: Tensor) -> Outputs:
        logits = self.logits(self.body(features))  # (B, J * D, D, D)
        b, c, h, w = logits.shape
        probs = F.softmax(logits.reshape(b, self.n_joints, -1), dim=-1)  # over the whole volume
        volume = probs.reshape(b, self.n_joints, c // self.n_joints, h, w)  # (B, J, D, D, D)
        return soft_argmax_3d(volume), (volume,)

    def loss(self, outputs: Outputs, target: Tensor) -> Tensor:
        """JSD of the volume to a 3D Gaussian at the target plus Euclidean (x, y, z) error."""
        coords, (volume,) = outputs
        b, j, d = volume.shape[:3]
        gauss = gaussian_volumes(target, d, TARGET_SIGMA)
        # js_divergence sums over the last two axes: fold (y, x) into one to cover the volume.
        jsd = js_divergence(volume.reshape(b, j, d, -1), gauss.reshape(b, j, d, -1))
        return (jsd + _euclidean(coords, target)).mean()


HEADS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "marginal-column": MarginalColumn,
    "marginal-stage": MarginalStage,
    "volumetric-32": lambda cfg: VolumetricHead(cfg, HEATMAP_SIZE),
    "volumetric-64": lambda cfg: VolumetricHead(cfg, 2 * HEATMAP_SIZE),
}


def build_head(name: str, seed: int) -> nn.Module:
    """A randomly initialised head of the paper's widths."""
    torch.manual_seed(seed)
    return HEADS[name](variant_config("margipose"))


def make_inputs(batch: int, seed: int) -> tuple[Tensor, Tensor]:
    """Random trunk features (B, F, 32, 32) and target coordinates (B, J, 3) in (-0.8, 0.8)."""
    cfg = variant_config("margipose")
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, cfg.feat_channels, HEATMAP_SIZE, HEATMAP_SIZE, generator=g)
    target = (torch.rand(batch, cfg.n_joints, 3, generator=g) * 2 - 1) * 0.8
    return features, target


def output_floats(head: nn.Module, features: Tensor) -> int:
    """Floats of softmaxed heatmaps the head outputs per image."""
    with torch.inference_mode():
        _, maps = head.eval()(features[:1])
    return sum(m.numel() for m in maps)


def gmac_per_image(head: nn.Module, features: Tensor) -> float:
    """GMAC of one forward on one image."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        head.eval()(features[:1])
    return counter.get_total_flops() / 2e9


def forward_ms(head: nn.Module, features: Tensor, warmup: int, iters: int) -> float:
    """Median milliseconds of an inference forward."""
    head.eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            start = time.perf_counter()
            head(features)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return 1000 * median_and_p90(times)[0]


def saved_activation_bytes(head: nn.Module, features: Tensor, target: Tensor) -> int:
    """Bytes of the unique storages autograd saves for backward in forward + loss (training
    mode), leaving out parameters, buffers and the input features."""
    model_state = [*head.parameters(), *head.buffers(), features]
    excluded = {t.untyped_storage().data_ptr() for t in model_state}
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in excluded:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    head.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        # The graph held by `loss` keeps every saved storage alive, so no address is reused.
        loss = head.loss(head(features), target)
    total = sum(saved.values())
    del loss
    return total


def _proc_status_bytes(field: str) -> int:
    """A kB field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}; the inference peak needs Linux")


def inference_peak_bytes(name: str, batch: int, threads: int, seed: int) -> int:
    """Peak RSS during one inference forward minus RSS before it; run it in a fresh process."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    # Serve every allocation from 64 KiB up by mmap and unmap it on free, so RSS follows the
    # live tensors instead of what glibc's heap happens to keep from earlier frees.
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    torch.set_num_threads(threads)
    head = build_head(name, seed).eval()
    features, _ = make_inputs(batch, seed)
    with torch.inference_mode():
        head(features)  # warm-up: thread pool, oneDNN kernels
        gc.collect()
        libc.malloc_trim(0)  # hand freed heap pages back, so the forward must fault them in
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = _proc_status_bytes("VmRSS")
        head(features)
        return _proc_status_bytes("VmHWM") - before


def inference_peaks(jobs: list[tuple[str, int]], threads: int, seed: int
                    ) -> dict[tuple[str, int], int]:
    """`inference_peak_bytes` of each (head, batch), one at a time, each in a new process."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {job: pool.submit(inference_peak_bytes, *job, threads, seed) for job in jobs}
        return {job: future.result() for job, future in futures.items()}


def measure(names: list[str], batch_sizes: list[int], warmup: int, iters: int, threads: int,
            seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-head rows (output size, parameters, GMAC, time) and per-(head, batch) memory rows."""
    heads, memory = [], []
    for name in names:
        head = build_head(name, seed)
        features, _ = make_inputs(1, seed)
        floats = output_floats(head, features)
        heads.append({
            "head": name, "output_floats_per_image": floats,
            "output_bytes_per_image": 4 * floats,
            "parameters": sum(p.numel() for p in head.parameters()),
            "gmac_per_image": gmac_per_image(head, features),
            "forward_ms_batch1": forward_ms(head, features, warmup, iters),
        })
        for batch in batch_sizes:
            features, target = make_inputs(batch, seed)
            memory.append({"head": name, "batch": batch,
                           "train_saved_bytes": saved_activation_bytes(head, features, target)})
    peaks = inference_peaks([(r["head"], r["batch"]) for r in memory], threads, seed)
    for row in memory:
        row["inference_peak_bytes"] = peaks[row["head"], row["batch"]]
    return heads, memory


def format_tables(heads: list[dict[str, Any]], memory: list[dict[str, Any]]) -> str:
    """Two markdown tables: per head, and memory per (head, batch) with ratios to REFERENCE."""
    head_table = markdown_table(
        ["head", "output floats/image", "output KiB/image", "parameters (M)", "GMAC/image",
         "forward ms (batch 1)"],
        [[r["head"], f"{r['output_floats_per_image']:,}",
          f"{r['output_bytes_per_image'] / 1024:,.0f}", f"{r['parameters'] / 1e6:.2f}",
          f"{r['gmac_per_image']:.2f}", f"{r['forward_ms_batch1']:.1f}"] for r in heads],
    )
    reference = {r["batch"]: r for r in memory if r["head"] == REFERENCE}

    def ratio(row: dict[str, Any], key: str) -> str:
        ref = reference.get(row["batch"])
        return f"{row[key] / ref[key]:.1f}x" if ref and ref[key] > 0 else "-"

    memory_table = markdown_table(
        ["head", "batch", "training activations (MiB)", f"vs {REFERENCE}",
         "inference peak (MiB)", f"vs {REFERENCE}"],
        [[r["head"], str(r["batch"]), f"{r['train_saved_bytes'] / MIB:,.1f}",
          ratio(r, "train_saved_bytes"), f"{r['inference_peak_bytes'] / MIB:,.1f}",
          ratio(r, "inference_peak_bytes")] for r in memory],
    )
    return head_table + "\n\n" + memory_table


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--head", choices=list(HEADS), action="append",
                   help="head to measure (repeatable; default: all)")
    add_common_args(p, warmup=2, warmup_help="untimed forwards before timing",
                    iters_help="timed forwards at batch 1")
    return p


def main(args: argparse.Namespace) -> None:
    machine = apply_common_args(args)
    names = args.head or list(HEADS)
    heads, memory = measure(names, args.batch_sizes, args.warmup, args.iters, args.threads,
                            args.seed)
    print(f"# Marginal vs volumetric heads: {describe_machine(machine)}")
    print("# random weights, paper widths, J = 17, input features (B, 128, 32, 32); training "
          "activations = storages saved for backward (forward + loss); inference peak = peak "
          "RSS growth of one forward in a fresh process\n")
    print(format_tables(heads, memory))
    if args.json is not None:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        write_json(args.json, {"benchmark": "marginal_vs_volumetric", "machine": machine,
                               "settings": {**settings, "head": names},
                               "heads": heads, "memory": memory})


if __name__ == "__main__":
    main(get_args_parser().parse_args())
