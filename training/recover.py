"""A training checkpoint back from an exported model.onnx.

Run directories (`runs/`) are not kept: a machine that is lost takes its checkpoints with it, and
the shipped versions in `model_repository/` are then the only copy of their weights. The ONNX
export keeps every parameter under its module's name, but BatchNorm is folded into the
convolution before it (`<conv>.weight` scaled, the shift in `<conv>.weight_bias`, or in
`<conv>.bias` for a convolution with a bias), so the running
statistics and the affine parameters are not there separately. This module rebuilds a
`MargiPose` (the card's `model_config`) whose eval-mode function is the exported one:

1. every parameter and buffer the ONNX file holds by name is copied (float16 storage is read
   back as the float32 values the export computes with);
2. each BatchNorm whose parameters are missing takes its convolution's folded weight, and is
   first set to the identity plus the folded bias, which is already the export's function;
3. then, so that training can continue with BatchNorm in train mode (batch statistics), each
   BatchNorm is re-expressed around the statistics of its input measured on training crops, and
   its convolution's weight is given back the scale of a freshly initialised layer: each output
   channel's weight times c (the fresh layer's mean channel norm over the folded channel's
   norm), running mean c m and variance c^2 v (m, v: the folded input's), BatchNorm weight
   sqrt(c^2 v + eps) / c and bias b + m. In eval mode that is still x + b exactly; in train
   mode a batch with those statistics gives the same, as the original network's did.

The scale matters for training, not for the function: behind BatchNorm in train mode a weight's
scale does not change the output, but SGD moves it by lr / |w|^2 in relative terms. Folded
weights are far smaller than the network's own (0.19-1.4 x a fresh layer's norm on version 5,
median 0.54): continuing from them at the original learning rate moved the heads 3-27 x too far
per step and cost whole-body accuracy (run "bp-heavy-v6", training/README.md).

The folded weights cannot be unfolded into the original (weight, gamma, running variance)
triple: only their product is known. Continuing to train from a recovered checkpoint is
therefore a fine-tune of an equivalent network, not a bit-exact resume of the lost run.

    python -m training.recover --onnx model_repository/margipose-lite/5/model.onnx \
        --data-root build --sources synthetic-train:64 real2d3d-train:64 \
        --out runs/recovered-v5/last.pt
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.model import MargiPose, ModelConfig, build_model

CARD_KEY = "model.json"


def _initializers(onnx_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The ONNX file's initializers as float32 tensors (float16 storage read back), and its card."""
    import onnx
    from onnx import numpy_helper

    from training.export_onnx import restore_float32

    proto = restore_float32(onnx.load(str(onnx_path)))
    tensors = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
               for i in proto.graph.initializer}
    meta = {p.key: p.value for p in proto.metadata_props}
    if CARD_KEY not in meta:
        raise ValueError(f"{onnx_path} carries no model card ({CARD_KEY}): not a margipose export")
    return tensors, json.loads(meta[CARD_KEY])


def _conv_before(model: nn.Module, bn_name: str) -> str:
    """The name of the convolution a BatchNorm follows in its parent Sequential."""
    parent_name, _, index = bn_name.rpartition(".")
    parent = model.get_submodule(parent_name)
    if not isinstance(parent, nn.Sequential) or not index.isdigit() or int(index) == 0:
        raise ValueError(f"{bn_name}: a BatchNorm that does not follow a convolution in a "
                         "Sequential cannot be recovered from a folded export")
    conv_name = f"{parent_name}.{int(index) - 1}"
    if not isinstance(model.get_submodule(conv_name), nn.Conv2d | nn.ConvTranspose2d):
        raise ValueError(f"{bn_name} follows {conv_name}, which is not a convolution")
    return conv_name


def load_folded(onnx_path: Path) -> tuple[MargiPose, dict[str, Any], list[str]]:
    """Steps 1 and 2: a model whose eval-mode function is the export's, every folded BatchNorm
    set to the identity plus its bias. Returns (model in eval mode, card, folded BN names)."""
    tensors, card = _initializers(onnx_path)
    cfg = ModelConfig.from_dict(card["model_config"])
    model = build_model(cfg, pretrained=False)
    state = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    folded: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d) and f"model.{name}.weight" not in tensors:
            conv = _conv_before(model, name)
            # the folded bias: a new tensor for a convolution without a bias of its own, else
            # under the convolution's bias (which then stays zero: the BatchNorm adds it)
            weight, bias = f"model.{conv}.weight", f"model.{conv}.weight_bias"
            if model.get_submodule(conv).bias is not None:
                bias = f"model.{conv}.bias"
                new[f"{conv}.bias"] = torch.zeros(module.num_features)
            if weight not in tensors or bias not in tensors:
                raise ValueError(f"{onnx_path}: no folded {weight} / {bias} for {name}")
            new[f"{conv}.weight"] = tensors[weight]
            channels = module.num_features
            new[f"{name}.weight"] = torch.ones(channels)
            new[f"{name}.bias"] = tensors[bias]
            new[f"{name}.running_mean"] = torch.zeros(channels)
            new[f"{name}.running_var"] = torch.full((channels,), 1.0 - module.eps)
            folded.append(name)
    for key in state:
        if key in new or key.endswith("num_batches_tracked"):
            continue
        if f"model.{key}" in tensors:
            new[key] = tensors[f"model.{key}"]
    # Parameters the exporter folded into a constant of another name: the visibility head's
    # context matrix is stored transposed (it is only used as context.t()).
    if cfg.visibility and "visibility.context" not in new:
        shape = tuple(state["visibility.context"].shape)
        candidates = [t for n, t in tensors.items() if not n.startswith("model.")
                      and tuple(t.shape) == shape[::-1]]
        if len(candidates) != 1:
            raise ValueError(f"{onnx_path}: cannot find the visibility head's context matrix "
                             f"({len(candidates)} constants of shape {shape[::-1]})")
        new["visibility.context"] = candidates[0].t().contiguous()
    missing = [k for k in state if k not in new and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{onnx_path}: {len(missing)} tensors not recoverable, e.g. {missing[:4]}")
    for key, value in new.items():
        if tuple(value.shape) != tuple(state[key].shape):
            raise ValueError(f"{onnx_path}: {key} has shape {tuple(value.shape)}, the model "
                             f"{tuple(state[key].shape)}")
    model.load_state_dict({**state, **new})
    return model.eval(), card, folded


def _fresh_norms(model: MargiPose, convs: Sequence[str], seed: int = 0) -> dict[str, float]:
    """The mean output-channel weight norm of each convolution in a freshly built model."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fresh = build_model(model.cfg, pretrained=False)
    return {name: _channel_norms(fresh.get_submodule(name)).mean().item() for name in convs}


def _channel_norms(conv: nn.Module) -> torch.Tensor:
    """Per output channel weight norm (ConvTranspose2d keeps output channels in dim 1)."""
    w = conv.weight.detach().double()
    if isinstance(conv, nn.ConvTranspose2d):
        w = w.transpose(0, 1)
    return w.flatten(1).norm(dim=1)


def restat(model: MargiPose, folded: Sequence[str], images: torch.Tensor, batch: int = 16
           ) -> None:
    """Step 3: re-express each folded BatchNorm around its input's statistics on `images`
    (uint8 crops), its convolution at a fresh layer's weight scale. The eval-mode function
    does not change."""
    from training.engine import normalise_images

    model.eval()
    convs = {name: _conv_before(model, name) for name in folded}
    targets = _fresh_norms(model, list(convs.values()))
    sums: dict[str, list[torch.Tensor]] = {name: [] for name in folded}
    hooks = []
    for name in folded:
        def hook(_m, args, _out, name=name):
            x = args[0].double()
            sums[name].append(torch.stack([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)),
                                           torch.full_like(x[0, :, 0, 0],
                                                           x[:, 0].numel())]))
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch):
                model(normalise_images(images[start:start + batch], model))
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for name in folded:
            s, s2, n = torch.stack(sums[name]).sum(0)
            mean = s / n
            var = (s2 / n - mean * mean).clamp_min(0) * n / (n - 1)
            bn = model.get_submodule(name)
            conv = model.get_submodule(convs[name])
            norms = _channel_norms(conv)
            c = torch.where(norms > 0, targets[convs[name]] / norms.clamp_min(1e-12), 1.0)
            shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
            conv.weight.copy_(conv.weight.double() * c.view(shape))  # any conv bias is 0
            bias = bn.bias.double().clone()  # the folded bias (weight 1, statistics 0 / 1)
            bn.running_mean.copy_(c * mean)
            bn.running_var.copy_(c * c * var)
            bn.weight.copy_((c * c * var + bn.eps).sqrt() / c)
            bn.bias.copy_(bias + mean)


def recover(onnx_path: Path, images: torch.Tensor | None = None
            ) -> tuple[MargiPose, dict[str, Any]]:
    """The model of an exported model.onnx and its card; with `images` (uint8 training crops),
    BatchNorm re-expressed around their statistics (step 3)."""
    model, card, folded = load_folded(onnx_path)
    if images is not None:
        restat(model, folded, images)
    return model, card


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", type=Path, required=True, help="an exported model.onnx")
    p.add_argument("--data-root", type=Path, help="where --sources are (for the statistics)")
    p.add_argument("--sources", nargs="*", default=[], metavar="NAME:COUNT",
                   help="training-split crops for BatchNorm's statistics, every view of each "
                        "(e.g. synthetic-train:64 real2d3d-train:64); none: statistics 0 / 1")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from training.checkpoint import save_checkpoint
    from training.evaluate import open_registered
    from training.visibility import _parse_sources, calibration_set

    args = get_args_parser().parse_args(argv)
    images = None
    if args.sources:
        if args.data_root is None:
            raise SystemExit("--sources needs --data-root")
        sources = [(open_registered(name, args.data_root), n)
                   for name, n in _parse_sources(args.sources)]
        images = torch.stack([e.image for e in calibration_set(sources)])
    model, card = recover(args.onnx, images)
    extra: dict[str, Any] = {
        "recovered_from": {"onnx": str(args.onnx), "name": card.get("name"),
                           "version": card.get("version"),
                           "statistics": list(args.sources) or None}}
    if card.get("training") is not None:
        extra["args"] = card["training"]
    save_checkpoint(args.out, model, **extra)
    n = 0 if images is None else len(images)
    print(f"wrote {args.out}: {card.get('name')} version {card.get('version')}, "
          f"BatchNorm statistics from {n} crops")
    return extra


if __name__ == "__main__":
    main()
