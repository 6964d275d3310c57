"""Export a MargiPose checkpoint to TorchScript plus its Triton config.

The exported module takes uint8 RGB images (N, 3, 256, 256), owns the input normalisation, and
returns the outputs of `posecontract.layout.OUTPUTS` in order. It is written to
`<repository>/<name>/<version>/model.pt` with `<repository>/<name>/config.pbtxt` beside it, both
rendered from the same contract. A model card (JSON) travels inside the TorchScript file as the
extra file `model.json`.

    margipose-export --variant margipose-lite --repository model_repository
    margipose-export --checkpoint runs/lite/last.pt --name margipose-lite --version 2
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from posecontract.layout import INPUT, INPUT_SIZE, model_outputs
from posecontract.skeleton import JOINT_NAMES, PARENTS
from posecontract.torchscript import load as load_torchscript
from posecontract.torchscript import store_float16
from posecontract.triton import ServingOptions, render_config, write_onnx_model
from training import export_onnx
from training.checkpoint import load_checkpoint
from training.export_onnx import OnnxParity
from training.heatmaps import coord_spread
from training.model import VARIANTS, MargiPose, build_model, variant_config

CARD_FILE = "model.json"
# TorchScript against eager. In float64 a faithful graph agrees to ~1e-13 on any CPU. In float32
# folding BatchNorm into the convolutions changes the rounding: the TorchScript outputs are about
# as far from the float64 truth as eager float32's own are (2-8e-6 on margipose-lite, 2-3e-5 on
# a small untrained model, depending on the CPU's kernels; 0.9-2.3x eager's error, measured under
# four ATen/oneDNN dispatch settings); a graph that lost precision (a half-precision op) would be
# hundreds of times further.
PARITY_TOLERANCE_F64 = 1e-9
ROUNDING_FACTOR = 10  # float32 TorchScript's error may be this many times eager float32's
ROUNDING_FLOOR = 1e-6  # ... or this much, for a model that float32 reproduces almost exactly
# Weights stored as float16 (`--weights float16`) move every weight by up to 2**-11 of itself. On
# margipose-lite version 2 that moved the coordinates of 57 real crops by 0.02 px on average
# (99th percentile 0.26 px, worst 1.3 px on a joint with a two-peaked heatmap; 1 px = 1/128
# normalised) and of random images by up to 1.1 px; a rewrite that broke a weight moves them by
# tens of pixels. So an export may move them by at most 4 px of the 256 crop; the move is written
# to the card, and the exported file is evaluated like any other before it ships.
FLOAT16_COORD_TOLERANCE = 4 / 128
WEIGHT_STORAGE = ("float32", "float16")


class ServingModel(nn.Module):
    """uint8 images (N, 3, 256, 256) -> (coords, coord_std, heatmap_xy, heatmap_zy, heatmap_xz)."""

    def __init__(self, model: MargiPose):
        super().__init__()
        self.model = model
        # (x / 255 - mean) / std == (x - 255 mean) / (255 std), in the model's dtype (float32;
        # float64 for the exact parity check)
        dtype = next(model.parameters()).dtype
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) * 255
                     for v in (model.cfg.input_mean, model.cfg.input_std))
        self.register_buffer("mean", mean.to(dtype))
        self.register_buffer("std", std.to(dtype))

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        torch._assert(image.dim() == 4 and image.shape[1] == 3,
                      "expected uint8 images of shape (N, 3, 256, 256)")
        x = (image.to(self.mean.dtype) - self.mean) / self.std
        coords, stages, _ = self.model(x)
        xy, zy, xz = stages[-1]
        return coords, coord_spread(xy, zy, xz), xy, zy, xz


class VisibleServingModel(ServingModel):
    """ServingModel of a model with a visibility head: the five outputs and `visibility`, the
    in-view probability per joint (the sigmoid of the head's calibrated logits)."""

    def __init__(self, model: MargiPose):
        super().__init__(model)
        if model.visibility is None:
            raise ValueError("VisibleServingModel needs a model with a visibility head")

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        torch._assert(image.dim() == 4 and image.shape[1] == 3,
                      "expected uint8 images of shape (N, 3, 256, 256)")
        x = (image.to(self.mean.dtype) - self.mean) / self.std
        coords, stages, logits = self.model(x)
        xy, zy, xz = stages[-1]
        assert logits is not None  # the head is there (checked above); refines the Optional
        return coords, coord_spread(xy, zy, xz), xy, zy, xz, torch.sigmoid(logits)


def serving_model(model: MargiPose) -> ServingModel:
    """The serving wrapper that fits `model`: with the in-view output if it has the head."""
    return VisibleServingModel(model) if model.visibility is not None else ServingModel(model)


@dataclass
class Parity:
    """Max abs differences over all outputs on the same random images."""

    float32: float  # TorchScript vs eager, both float32 as served
    float64: float  # TorchScript vs eager, both float64: the graph's fidelity
    eager_rounding: float  # eager float32 vs eager float64: float32's own error on this model
    scripted_rounding: float  # TorchScript float32 vs eager float64

    def problem(self) -> str | None:
        """Why the TorchScript model is not faithful, or None if it is."""
        if not self.float64 < PARITY_TOLERANCE_F64:
            return (f"TorchScript differs from eager by {self.float64:.3g} in float64 "
                    f"(> {PARITY_TOLERANCE_F64}): scripting or freezing changed the function")
        bound = max(ROUNDING_FACTOR * self.eager_rounding, ROUNDING_FLOOR)
        if not self.scripted_rounding <= bound:
            return (f"TorchScript float32 is {self.scripted_rounding:.3g} from the float64 "
                    f"outputs, more than {ROUNDING_FACTOR} x eager float32's own error "
                    f"{self.eager_rounding:.3g} (or {ROUNDING_FLOOR}): the float32 graph lost "
                    "precision")
        return None


@dataclass
class ExportResult:
    model_path: Path
    config_path: Path
    parity: Parity
    size_bytes: int
    weights: str = "float32"
    float16_coord_diff: float | None = None  # float16-stored vs float32 weights, coords only
    onnx_path: Path | None = None
    onnx_parity: OnnxParity | None = None
    onnx_config_path: Path | None = None  # <name>-onnx/config.pbtxt (Triton's onnxruntime)

    @property
    def max_abs_diff(self) -> float:
        """TorchScript vs eager in float32, as served."""
        return self.parity.float32


def calibrate_batchnorm(model: MargiPose, batches: int = 3, batch_size: int = 4, seed: int = 0
                        ) -> None:
    """Give an untrained model the BN statistics of random inputs, then set it to eval.

    A freshly initialised network in eval mode normalises with mean 0 / variance 1, so its
    activations grow through the stacked columns until the softmax saturates to one-hot maps:
    a degenerate model whose outputs flip on rounding noise. Real running statistics make a
    random export behave numerically like a trained one (used to build and test the service).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch_size, 3, INPUT_SIZE, INPUT_SIZE, generator=g))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def model_card(model: MargiPose, name: str, version: int, extra: dict[str, Any]) -> dict:
    """The JSON model card embedded in the TorchScript file."""
    pretrained = {}
    if model.cfg.trunk.startswith("blazepose-"):
        from training.blazepose import provenance

        size = model.cfg.trunk.removeprefix("blazepose-")
        pretrained = {"trunk_weights": provenance(f"{size}-s8")}
    return {
        "name": name,
        "version": version,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_config": model.cfg.to_dict(),
        "joints": list(JOINT_NAMES),
        "parents": list(PARENTS),
        "input": {"name": INPUT.name, "dtype": INPUT.dtype, "dims": list(INPUT.dims)},
        "outputs": [{"name": o.name, "key": o.key, "dtype": o.dtype, "dims": list(o.dims)}
                    for o in model_outputs(model.visibility is not None)],
        **pretrained,
        **extra,
    }


def to_torchscript(model: MargiPose) -> torch.jit.ScriptModule:
    """Script and freeze the serving wrapper (BN folded into convolutions)."""
    wrapper = serving_model(model).eval()
    # Triton's libtorch backend serves TorchScript only, so we keep scripting although
    # torch 2.13 marks torch.jit deprecated in favour of torch.export (see pyproject's
    # filterwarnings).
    return torch.jit.freeze(torch.jit.script(wrapper))


def _outputs(module: nn.Module, images: Tensor) -> tuple[Tensor, ...]:
    with torch.inference_mode():
        return tuple(out.double() for out in module(images))


def _max_diff(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def script_and_check(model: MargiPose,
                     script: Callable[[MargiPose], torch.jit.ScriptModule] = to_torchscript,
                     batch: int = 2, seed: int = 0) -> tuple[torch.jit.ScriptModule, Parity]:
    """`script(model)`, and its Parity with eager on random images.

    For the float64 comparison `script` is applied to a float64 copy of the model as well.
    """
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, INPUT_SIZE, INPUT_SIZE), dtype=torch.uint8,
                           generator=g)
    scripted = script(model)
    exact = copy.deepcopy(model).double().eval()
    eager64 = _outputs(serving_model(exact).eval(), images)
    eager32 = _outputs(serving_model(model).eval(), images)
    scripted32 = _outputs(scripted, images)
    parity = Parity(
        float32=_max_diff(scripted32, eager32),
        float64=_max_diff(_outputs(script(exact), images), eager64),
        eager_rounding=_max_diff(eager32, eager64),
        scripted_rounding=_max_diff(scripted32, eager64),
    )
    return scripted, parity


def store_weights_float16(scripted: torch.jit.ScriptModule, seed: int = 1) -> float:
    """Store `scripted`'s weights as float16 (in place); answer how far its coords moved.

    The move is measured on the module as saved and loaded (a module that already ran keeps its
    execution plan after its graph is rewritten). Raises if they moved more than
    FLOAT16_COORD_TOLERANCE or if nothing was converted.
    """
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (4, 3, INPUT_SIZE, INPUT_SIZE), dtype=torch.uint8,
                           generator=g)
    before = _outputs(scripted, images)
    if store_float16(scripted) == 0:
        raise RuntimeError("--weights float16: the frozen graph has no float32 weight constants")
    saved = io.BytesIO()
    torch.jit.save(scripted, saved)
    saved.seek(0)
    moved = float((_outputs(load_torchscript(saved), images)[0] - before[0]).abs().max())
    if not moved <= FLOAT16_COORD_TOLERANCE:
        raise RuntimeError(f"float16 weights move the coordinates by {moved:.3g} normalised "
                           f"units (> {FLOAT16_COORD_TOLERANCE:.3g}, 4 px of the crop): "
                           "export with float32 weights")
    return moved


def export(model: MargiPose, repository: str | Path, name: str, version: int = 1,
           options: ServingOptions | None = None, card_extra: dict | None = None,
           weights: str = "float32", onnx: bool = False) -> ExportResult:
    """Write model.pt and config.pbtxt; raise if TorchScript is not faithful to eager (Parity).

    `weights="float16"` stores the weights as float16 (half the file; computed in float32 after
    `posecontract.torchscript.load`), after checking how far that moves the coordinates.
    `onnx=True` writes model.onnx beside model.pt (`training.export_onnx`), checked with ONNX
    Runtime by the same rule, with the same weight storage and the card in its metadata.
    """
    if weights not in WEIGHT_STORAGE:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_STORAGE)}, got {weights!r}")
    model = model.eval()
    scripted, parity = script_and_check(model)
    if (problem := parity.problem()) is not None:
        raise RuntimeError(problem)
    extra = dict(card_extra or {})
    moved = None
    if weights == "float16":
        moved = store_weights_float16(scripted)
        extra["weight_storage"] = {"dtype": "float16", "max_coord_diff_vs_float32": moved}
    model_dir = Path(repository) / name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    model_path = version_dir / "model.pt"
    card = model_card(model, name, version, extra)
    card_json = json.dumps(card, indent=2)
    torch.jit.save(scripted, str(model_path), _extra_files={CARD_FILE: card_json})
    config_path = model_dir / "config.pbtxt"
    outputs = model_outputs(model.visibility is not None)
    config_path.write_text(render_config(name, options or ServingOptions(), outputs))
    result = ExportResult(model_path, config_path, parity, model_path.stat().st_size, weights,
                          moved)
    if onnx:
        result.onnx_path, result.onnx_parity = _export_onnx(model, version_dir / "model.onnx",
                                                            weights, card_json)
        result.onnx_config_path = write_onnx_model(Path(repository), name, options,
                                                   outputs=outputs)
    return result


def _export_onnx(model: MargiPose, path: Path, weights: str, card_json: str
                 ) -> tuple[Path, OnnxParity]:
    """model.onnx beside model.pt; raise if ONNX Runtime does not compute the model."""
    serving = serving_model(model).eval()
    export_onnx.to_onnx(serving, path)
    scripted = load_torchscript(path.with_name("model.pt"))
    parity = export_onnx.onnx_parity(serving, path, scripted)
    if (problem := parity.problem(ROUNDING_FACTOR, ROUNDING_FLOOR)) is not None:
        raise RuntimeError(problem)
    if weights == "float16":
        parity.float16_coord_diff = export_onnx.store_float16_checked(path)
        if not parity.float16_coord_diff <= FLOAT16_COORD_TOLERANCE:
            raise RuntimeError(f"float16 weights move model.onnx's coordinates by "
                               f"{parity.float16_coord_diff:.3g} normalised units "
                               f"(> {FLOAT16_COORD_TOLERANCE:.3g}, 4 px of the crop)")
        # model.pt rounded its own BN-folded weights, which differ from ONNX's in the last
        # float32 bits, so the two float16 files agree to float16's rounding, not float32's.
        parity.vs_torchscript = export_onnx.torchscript_diff(path, scripted)
    export_onnx.set_metadata(path, {CARD_FILE: card_json})
    return path, parity


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="training checkpoint to export")
    src.add_argument("--variant", choices=sorted(VARIANTS),
                     help="export a freshly initialised variant (for building and testing)")
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--name", help="model name in the repository (default: the variant name)")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="init seed with --variant")
    p.add_argument("--max-batch-size", type=int, default=ServingOptions.max_batch_size)
    p.add_argument("--weights", choices=WEIGHT_STORAGE, default="float32",
                   help="how model.pt stores the weights: float16 halves the file (computed in "
                        "float32 once loaded; the coordinates' move is checked and carded)")
    p.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                   help="also write model.onnx beside model.pt, checked with ONNX Runtime "
                        "(default: yes)")
    p.add_argument("--onnx-beside", type=Path, metavar="MODEL_PT",
                   help="only write model.onnx beside this already exported model.pt (with its "
                        "card), from the --checkpoint it was exported from")
    p.add_argument("--card", type=Path, action="append", default=[], metavar="JSON",
                   help="a JSON object file merged into the model card (e.g. evaluation "
                        "results); repeatable")
    return p


def onnx_beside(model: MargiPose, model_pt: Path) -> tuple[Path, OnnxParity]:
    """Write model.onnx beside an already exported model.pt of the same weights.

    The checkpoint must reproduce model.pt (within the float32 bound of the export's check); the
    ONNX file takes model.pt's card and weight storage unchanged, and the repository gains the
    `<name>-onnx` Triton config.
    """
    model = model.eval()
    files = {CARD_FILE: ""}
    shipped = load_torchscript(model_pt, "cpu", files)
    card_json = files[CARD_FILE]
    card_json = card_json.decode() if isinstance(card_json, bytes) else card_json
    card = json.loads(card_json or "{}")
    weights = card.get("weight_storage", {}).get("dtype", "float32")
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (2, 3, INPUT_SIZE, INPUT_SIZE), dtype=torch.uint8,
                           generator=g)
    eager = _outputs(serving_model(model).eval(), images)
    moved = _max_diff(_outputs(shipped, images), eager)
    if weights == "float16":
        bound = FLOAT16_COORD_TOLERANCE
    else:  # the bound export() held model.pt to, against the float64 model
        exact = _outputs(serving_model(copy.deepcopy(model).double()).eval(), images)
        bound = 2 * max(ROUNDING_FACTOR * _max_diff(eager, exact), ROUNDING_FLOOR)
    if not moved <= bound:
        raise RuntimeError(f"{model_pt} is not this checkpoint's export: outputs differ by "
                           f"{moved:.3g} (> {bound:.3g})")
    path, parity = _export_onnx(model, model_pt.with_name("model.onnx"), weights, card_json)
    write_onnx_model(model_pt.parents[2], model_pt.parents[1].name,
                     outputs=model_outputs(model.visibility is not None))
    return path, parity


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    if args.onnx_beside is not None:
        if args.checkpoint is None:
            raise SystemExit("--onnx-beside needs the --checkpoint that model.pt was exported from")
        path, o = onnx_beside(load_checkpoint(args.checkpoint)[0], args.onnx_beside)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) with {args.onnx_beside}'s "
              f"card: ONNX Runtime {o.onnx_rounding:.3g} from the float64 model (eager float32 "
              f"{o.eager_rounding:.3g}), {o.vs_torchscript:.3g} from model.pt")
        return
    if args.checkpoint is not None:
        model, payload = load_checkpoint(args.checkpoint)
        # The card says what trained the weights: the run's arguments (data, schedule, seed).
        extra = {"source": str(args.checkpoint), "step": payload.get("step"),
                 "training": payload.get("args")}
    else:
        torch.manual_seed(args.seed)
        model = build_model(variant_config(args.variant))
        calibrate_batchnorm(model)
        extra = {"source": f"random init (seed {args.seed}), untrained"}
    for path in args.card:
        added = json.loads(path.read_text())
        if not isinstance(added, dict):
            raise SystemExit(f"--card {path}: expected a JSON object, got {type(added).__name__}")
        extra.update(added)
    name = args.name or model.cfg.name
    sizes = tuple(b for b in ServingOptions.preferred_batch_sizes if b <= args.max_batch_size)
    options = ServingOptions(max_batch_size=args.max_batch_size, preferred_batch_sizes=sizes,
                             warmup_batch_sizes=tuple(sorted({1, *sizes})))
    result = export(model, args.repository, name, args.version, options, extra, args.weights,
                    args.onnx)
    print(f"wrote {result.model_path} ({result.size_bytes / 1e6:.1f} MB) and {result.config_path}")
    if result.float16_coord_diff is not None:
        print(f"float16 weights: coordinates moved by at most {result.float16_coord_diff:.3g} "
              "normalised units")
    p = result.parity
    print(f"parity eager vs TorchScript: max abs diff {p.float32:.3g} in float32 (float32's own "
          f"error {p.eager_rounding:.3g} eager, {p.scripted_rounding:.3g} TorchScript), "
          f"{p.float64:.3g} in float64")
    if result.onnx_path is not None:
        o = result.onnx_parity
        print(f"wrote {result.onnx_path} ({result.onnx_path.stat().st_size / 1e6:.1f} MB): ONNX "
              f"Runtime {o.onnx_rounding:.3g} from the float64 model (eager float32 "
              f"{o.eager_rounding:.3g}), {o.vs_torchscript:.3g} from model.pt")


if __name__ == "__main__":
    main()
