"""Train MargiPose as the reference did: mixed 3D + 2D batches, 1-cycle SGD, intermediate loss.

    margipose-train --variant margipose --data-root /data --train mpi3d-trainval mpii-trainval \\
        --out runs/mpi3d
    torchrun --nproc_per_node=8 -m training.train ... (same arguments; the global batch is split)

The run directory gets `last.pt` (model config, weights, optimiser, schedule position, RNG and
sampler state: `--resume` continues bit-exactly on CPU), `args.json`, `metrics.csv` (and
TensorBoard events under `tb/` when the tensorboard package is installed) and
`heatmaps/step_*.png` pictures of the model's marginal maps at every validation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from training.checkpoint import load_checkpoint, save_checkpoint
from training.data.mixed import (
    MixedDataset,
    RoundRobinBatchSampler,
    collate,
    evaluation_keys,
    split_batch,
)
from training.data.partial import PartialView
from training.data.sample import SampleSource
from training.data.transforms import make_example
from training.engine import evaluate, predict_figure, train_one_epoch, unwrap
from training.losses import DEFAULT_TEACHER_DEPTH_WEIGHT, DEFAULT_VISIBILITY_WEIGHT
from training.model import FREEZABLE, VARIANTS, build_model, freeze, variant_config
from training.schedule import LOW_LR_FRACTION, MOMENTUM_HIGH, OneCycle

DatasetFactory = Callable[[str, Path], SampleSource]
AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16,
                                             "fp16": torch.float16}
CHECKPOINT_NAME = "last.pt"
# Arguments that define the run: a resumed run must agree on them to continue the same run.
RUN_DEFINING = ("variant", "train", "epochs", "steps_per_epoch", "batch_size", "source_counts",
                "lr_max", "seed", "n_stages", "no_axis_permutation", "no_jsd", "freeze",
                "teacher_depth_weight", "init", "trunk_body_lr_scale", "visibility",
                "cut_prob", "occluder_prob", "visibility_weight", "tight_prob")
# Run-defining arguments added later: a checkpoint saved before one existed (so trained without
# what it switches) resumes under any value.
ADDED_LATER = ("teacher_depth_weight", "trunk_body_lr_scale", "visibility", "cut_prob",
               "occluder_prob", "visibility_weight", "tight_prob")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", choices=sorted(VARIANTS), default="margipose")
    p.add_argument("--data-root", type=Path, required=True,
                   help="root holding the datasets (layout: training/data/registry.py)")
    p.add_argument("--train", nargs="+", required=True, metavar="SPEC",
                   help="training sets, mixed round-robin in this order, "
                        "e.g. mpi3d-trainval mpii-trainval")
    p.add_argument("--val", metavar="SPEC", help="validation set (none in the reference setups)")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--steps-per-epoch", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32, help="global batch (all ranks)")
    p.add_argument("--source-counts", type=int, nargs="+", metavar="N",
                   help="examples per batch from each --train set (default: equal split)")
    p.add_argument("--accum-steps", type=int, default=1,
                   help="split each rank's batch into this many forward/backward chunks")
    p.add_argument("--lr-max", type=float, default=1.0, help="peak learning rate of the 1-cycle")
    p.add_argument("--workers", type=int, default=4, help="data loader processes per rank")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--resume", type=Path, help="checkpoint to continue from")
    p.add_argument("--init", type=Path,
                   help="start a new run from this checkpoint's weights (same variant; fresh "
                        "optimiser and schedule), e.g. to fine-tune a trunk trained frozen")
    p.add_argument("--amp", choices=sorted(AMP_DTYPES), default="none",
                   help="mixed precision (bf16, or fp16 with loss scaling on CUDA)")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--no-pretrained", action="store_true",
                   help="start the trunk from random init instead of installed ImageNet weights")
    p.add_argument("--val-every", type=int, default=1, help="epochs between validations")
    p.add_argument("--checkpoint-every", type=int, default=1, help="epochs between checkpoints")
    p.add_argument("--log-every", type=int, default=10, help="steps between logged scalars")
    p.add_argument("--n-stages", type=int, help="ablation: number of stages (variant default)")
    p.add_argument("--no-axis-permutation", action="store_true", help="ablation")
    p.add_argument("--no-jsd", action="store_true", help="ablation: no JSD regulariser")
    p.add_argument("--freeze", choices=sorted(FREEZABLE),
                   help="keep this part of the pretrained trunk fixed (stride8: stem and blocks "
                        "to stride 8, BatchNorm statistics included; trunk-body: a BlazePose "
                        "trunk's converted network, only its adapter and the heads train; "
                        "all-but-visibility: only the visibility head trains)")
    p.add_argument("--trunk-body-lr-scale", type=float, default=1.0, metavar="S",
                   help="train a BlazePose trunk's converted network at S times the scheduled "
                        "learning rate (its adapter and the heads at 1x): fine-tuning pretrained "
                        "weights that have no BatchNorm to absorb large steps (default 1)")
    p.add_argument("--channels-last", action="store_true",
                   help="channels-last memory format (faster convolutions on CPU)")
    p.add_argument("--teacher-depth-weight", type=float, default=DEFAULT_TEACHER_DEPTH_WEIGHT,
                   metavar="W",
                   help="weight in [0, 1] of the depth loss of samples whose depth is a "
                        "teacher's estimate (real2d3d-*; ground truth weighs 1, 0 trains them "
                        f"as 2D-only; default {DEFAULT_TEACHER_DEPTH_WEIGHT})")
    p.add_argument("--visibility", action="store_true",
                   help="add the per-joint in-view head (with --init from a model without one, "
                        "the head starts fresh and everything else loads)")
    p.add_argument("--visibility-weight", type=float, default=DEFAULT_VISIBILITY_WEIGHT,
                   metavar="W", help="weight of the in-view loss beside the pose loss "
                                     f"(default {DEFAULT_VISIBILITY_WEIGHT})")
    p.add_argument("--cut-prob", type=float, default=0.0, metavar="P",
                   help="probability that a training example's body is cut by a simulated image "
                        "border (head and shoulders, waist-up, knees-up, a side; default 0)")
    p.add_argument("--occluder-prob", type=float, default=0.0, metavar="P",
                   help="probability that an occluder hides part of a training example's body "
                        "(default 0)")
    p.add_argument("--tight-prob", type=float, default=0.0, metavar="P",
                   help="of the border cuts, the share drawn as a tight box instead: the box "
                        "re-framed the same way but the picture going on beyond it, as when a "
                        "user or the service's second pass boxes only the joints in view "
                        "(default 0)")
    return p


# ----------------------------------------------------------------------------- setup helpers


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (world_size 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_from_env(env: Mapping[str, str]) -> Distributed:
    """Read RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them."""
    world = int(env.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    return Distributed(int(env["RANK"]), world, int(env.get("LOCAL_RANK", "0")))


def pick_device(requested: str | None, job: Distributed) -> torch.device:
    """The device of this rank: cuda:LOCAL_RANK under torchrun on GPUs."""
    name = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name} asked for CUDA, which is not available")
        if job.world_size > 1:
            device = torch.device("cuda", job.local_rank)
            torch.cuda.set_device(device)
    return device


def seed_all(seed: int) -> None:
    """Seed Python, numpy and torch (the data stream has its own keyed generators)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global RNG states, in types a weights_only checkpoint can hold."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {**np_state, "state": {"key": np_state["state"]["key"].tolist(),
                                        "pos": int(np_state["state"]["pos"])}},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = dict(state["numpy"])
    np_state["state"] = {"key": np.asarray(np_state["state"]["key"], dtype=np.uint32),
                         "pos": np_state["state"]["pos"]}
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def open_registered(spec: str, root: Path) -> SampleSource:
    """Open a dataset spec with the registry (imported here, so this module loads without it)."""
    from training.data.registry import open_dataset

    return open_dataset(spec, root)


class CSVLogger:
    """Scalars as rows `step,tag,value` of `metrics.csv` (appended across resumes)."""

    def __init__(self, path: Path) -> None:
        new = not path.exists()
        self._file = path.open("a", encoding="utf-8")
        if new:
            self._file.write("step,tag,value\n")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self._file.writelines(f"{step},{tag},{value!r}\n" for tag, value in scalars.items())
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class RunLogger:
    """metrics.csv always; TensorBoard scalars too when `torch.utils.tensorboard` imports."""

    def __init__(self, run_dir: Path) -> None:
        self.csv = CSVLogger(run_dir / "metrics.csv")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the tensorboard package is optional
            self.tensorboard = None
        else:
            self.tensorboard = SummaryWriter(str(run_dir / "tb"))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.csv.log(step, scalars)
        if self.tensorboard is not None:
            for tag, value in scalars.items():
                self.tensorboard.add_scalar(tag, value, step)

    def close(self) -> None:
        self.csv.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _jsonable(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def _check_args(args: argparse.Namespace, world_size: int) -> None:
    """Raise ValueError for argument combinations that cannot run."""
    for name in ("epochs", "steps_per_epoch", "batch_size", "accum_steps", "val_every",
                 "checkpoint_every", "log_every"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.epochs * args.steps_per_epoch < 3:
        raise ValueError("The 1-cycle schedule needs at least 3 steps in all "
                         f"(--epochs {args.epochs} x --steps-per-epoch {args.steps_per_epoch})")
    local, rest = divmod(args.batch_size, world_size)
    if rest or local % args.accum_steps:
        raise ValueError(
            f"--batch-size {args.batch_size} must split over {world_size} ranks and then into "
            f"--accum-steps {args.accum_steps} chunks"
        )
    if not 0.0 <= args.teacher_depth_weight <= 1.0:
        raise ValueError(f"--teacher-depth-weight must be in [0, 1] (ground truth weighs 1), "
                         f"got {args.teacher_depth_weight}")
    if args.source_counts is not None:
        if len(args.source_counts) != len(args.train):
            raise ValueError(f"--source-counts {args.source_counts} needs one count per --train "
                             f"set {args.train}")
        if sum(args.source_counts) != args.batch_size:
            raise ValueError(f"--source-counts {args.source_counts} must add up to "
                             f"--batch-size {args.batch_size}")


def parameter_groups(model: nn.Module, trunk_body_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: every trained parameter at the scheduled rate, or, with a
    `trunk_body_lr_scale` other than 1, a BlazePose trunk's converted body in its own group at that
    multiple (`OneCycle.apply` reads "lr_scale")."""
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not math.isfinite(trunk_body_lr_scale) or trunk_body_lr_scale < 0:
        raise ValueError(f"--trunk-body-lr-scale must be a finite number >= 0, "
                         f"not {trunk_body_lr_scale}")
    if trunk_body_lr_scale == 1.0:
        return [{"params": [p for _, p in trained]}]
    body_prefixes = tuple(f"{path}." for path in FREEZABLE["trunk-body"])
    body = [p for n, p in trained if n.startswith(body_prefixes)]
    if not body:
        raise ValueError("--trunk-body-lr-scale needs a BlazePose trunk whose body trains "
                         f"({model.cfg.trunk!r} trunk" +
                         (", body frozen)" if hasattr(model.trunk, "body") else ")"))
    rest = [p for n, p in trained if not n.startswith(body_prefixes)]
    return [{"params": rest}, {"params": body, "lr_scale": trunk_body_lr_scale}]


def _check_resume(saved: Mapping[str, Any], args: argparse.Namespace) -> None:
    """Raise ValueError when the checkpoint's run differs from the one asked for."""
    now = _jsonable(args)
    differ = {k: (saved.get(k), now[k]) for k in RUN_DEFINING
              if saved.get(k) != now[k] and (k in saved or k not in ADDED_LATER)}
    if differ:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differ.items())
        raise ValueError(f"--resume continues the same run; these arguments differ: {detail}")


# ----------------------------------------------------------------------------- main


def main(args: argparse.Namespace, dataset_factory: DatasetFactory | None = None,
         env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Train; returns {"step", "losses" (this run's per-step global losses), "val"}.

    dataset_factory(spec, data_root) opens a dataset (default: the registry); env holds
    torchrun's RANK / WORLD_SIZE / LOCAL_RANK (default: os.environ).
    """
    job = distributed_from_env(os.environ if env is None else env)
    _check_args(args, job.world_size)
    device = pick_device(args.device, job)
    if args.amp == "fp16" and device.type != "cuda":
        raise ValueError(f"--amp fp16 needs a CUDA device (loss scaling), not {device}; "
                         "use bf16 or none")
    if job.world_size > 1:
        # MASTER_ADDR / MASTER_PORT come from the environment (env:// rendezvous).
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                rank=job.rank, world_size=job.world_size)
    try:
        return _train(args, job, device, dataset_factory or open_registered)
    finally:
        if job.world_size > 1:
            dist.destroy_process_group()


def _train(args: argparse.Namespace, job: Distributed, device: torch.device,
           factory: DatasetFactory) -> dict[str, Any]:
    seed_all(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sources = [factory(spec, args.data_root) for spec in args.train]
    val_source = factory(args.val, args.data_root) if args.val else None

    payload: dict[str, Any] | None = None
    if args.resume is not None:
        model, payload = load_checkpoint(args.resume)
        _check_resume(payload["args"], args)
    else:
        overrides: dict[str, Any] = {"axis_permutation": not args.no_axis_permutation,
                                     "use_jsd": not args.no_jsd}
        if args.n_stages is not None:
            overrides["n_stages"] = args.n_stages
        if args.visibility:
            overrides["visibility"] = True
        cfg = variant_config(args.variant, **overrides)
        if args.init is not None:
            model, _ = load_checkpoint(args.init, add_visibility=args.visibility)
            if model.cfg != cfg:
                raise ValueError(f"--init {args.init} holds a {model.cfg.name} model configured "
                                 f"{model.cfg}, not the --variant and ablations asked for: {cfg}")
        else:
            model = build_model(cfg, pretrained=not args.no_pretrained)
    if args.freeze:
        freeze(model, args.freeze)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if job.world_size > 1:
        if device.type == "cuda":
            # Normalise over the global batch as one GPU with batch 32 did. SyncBatchNorm only
            # runs on GPUs; on CPU (gloo) each rank's BatchNorm sees its local batch, the same
            # as single-process training with --accum-steps = world size.
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)

    schedule = OneCycle(args.epochs * args.steps_per_epoch, args.lr_max)
    # SGD without weight decay or Nesterov; lr and momentum are set before every batch.
    trained = parameter_groups(model, args.trunk_body_lr_scale)
    optimiser = torch.optim.SGD(trained, lr=LOW_LR_FRACTION * args.lr_max,
                                momentum=MOMENTUM_HIGH, weight_decay=0.0, nesterov=False)
    amp = AMP_DTYPES[args.amp]
    scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" else None

    counts = tuple(args.source_counts or split_batch(args.batch_size, len(sources)))
    sampler = RoundRobinBatchSampler([len(s) for s in sources], counts, args.seed,
                                     job.rank, job.world_size)
    start_epoch = 0
    if payload is not None:
        optimiser.load_state_dict(payload["optimiser"])
        if scaler is not None and payload.get("scaler") is not None:
            scaler.load_state_dict(payload["scaler"])
        if payload["sampler"]["seed"] != args.seed or tuple(payload["sampler"]["counts"]) != counts:
            raise ValueError(f"Checkpoint sampler {payload['sampler']} does not match this run")
        start_epoch = int(payload["epoch"])
        set_rng_state(payload["rng"])
    partial = PartialView(args.cut_prob, args.occluder_prob, args.tight_prob)
    loader = DataLoader(MixedDataset(sources, args.seed, partial=partial), batch_sampler=sampler,
                        num_workers=args.workers, collate_fn=collate,
                        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    val_loader = None
    if val_source is not None:
        keys = evaluation_keys(len(val_source), job.rank, job.world_size)
        val_loader = DataLoader(MixedDataset([val_source], args.seed, augment=False),
                                batch_size=max(1, args.batch_size // job.world_size),
                                sampler=keys, num_workers=args.workers, collate_fn=collate)
    # The pictures follow one fixed, unaugmented example (validation's first, else training's).
    figure_batch = collate([make_example((val_source or sources[0])[0])]) if job.is_main else None

    logger = None
    if job.is_main:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "args.json").write_text(json.dumps(_jsonable(args), indent=2))
        logger = RunLogger(args.out)
    losses: list[float] = []
    val: dict[str, float] = {}
    step = start_epoch * args.steps_per_epoch
    try:
        for epoch in range(start_epoch, args.epochs):
            sampler.set_window(epoch * args.steps_per_epoch, args.steps_per_epoch)
            epoch_losses = train_one_epoch(
                net, loader, optimiser, schedule, device, epoch, args.steps_per_epoch,
                amp=amp, scaler=scaler, accum_steps=args.accum_steps, logger=logger,
                log_every=args.log_every, progress=job.is_main,
                teacher_depth_weight=args.teacher_depth_weight,
                visibility_weight=args.visibility_weight)
            losses += epoch_losses
            step = (epoch + 1) * args.steps_per_epoch
            last = epoch + 1 == args.epochs
            if (epoch + 1) % args.val_every == 0 or last:
                if val_loader is not None:
                    val = evaluate(net, val_loader, device, amp,
                                   args.teacher_depth_weight).means()
                    if logger is not None:
                        logger.log(step, val)
                if figure_batch is not None:
                    picture = predict_figure(net, figure_batch, device)
                    (args.out / "heatmaps").mkdir(exist_ok=True)
                    picture.save(args.out / "heatmaps" / f"step_{step:07d}.png")
            if job.is_main and ((epoch + 1) % args.checkpoint_every == 0 or last):
                save_checkpoint(
                    args.out / CHECKPOINT_NAME, unwrap(net), args=_jsonable(args),
                    optimiser=optimiser.state_dict(),
                    scaler=scaler.state_dict() if scaler is not None else None,
                    schedule={"total_steps": schedule.total_steps, "lr_max": schedule.lr_max},
                    step=step, epoch=epoch + 1, rng=rng_state(), sampler=sampler.state_dict(),
                )
            if job.is_main:
                mean = sum(epoch_losses) / len(epoch_losses)
                shown = " ".join(f"{k} {v:.4g}" for k, v in val.items())
                print(f"epoch {epoch + 1}/{args.epochs} step {step}: loss {mean:.4f} {shown}",
                      flush=True)
    finally:
        if logger is not None:
            logger.close()
    return {"step": step, "losses": losses, "val": val}


def cli() -> None:
    """Console entry point: `margipose-train`."""
    main(get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
