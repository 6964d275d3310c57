"""Post-training static int8 quantization of an exported model.onnx (ONNX Runtime's quantizer).

The float model's convolutions get int8 weights (per output channel, symmetric) and uint8
activations (per tensor), in QDQ form: QuantizeLinear/DequantizeLinear pairs around each
quantized operator, which ONNX Runtime runs with int8 kernels and OpenVINO turns into its own
int8 graph. The activation ranges come from calibration crops cut exactly as evaluation cuts them
(the reference box of each example, `training.evaluate.crop_jobs`) from training sources only:
never from a held-out split.

    margipose-quantize --model model_repository/margipose-lite/3/model.onnx \\
        --data-root build --calibration real2d-train:200 synthetic-train:200 \\
        --repository model_repository --name margipose-lite-int8 --version 3

The result is a model of its own (`<repository>/<name>/<version>/model.onnx`, with a Triton
onnxruntime config), served like any ONNX model (`--model-name <name> --runtime onnxruntime`).
Its card is the source's plus how it was quantized.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from posecontract.layout import INPUT, outputs_named
from posecontract.triton import ServingOptions, write_onnx_config
from training.export import CARD_FILE

# Only the convolutions: the heads' softmax and soft-argmax need float precision.
QUANTIZED_OPS = ("Conv", "ConvTranspose")
# ... and the activations that follow them (the BlazePose body's ReLU6 is a Clip), so that the
# quantizer folds each one into its convolution's output range: a convolution's output quantized
# before its activation spends most of the 256 levels on values the activation then cuts off.
FOLDED_ACTIVATIONS = ("Clip", "Relu")
HELD_OUT = ("val", "test")  # calibration must not see a split whose name says it is held out
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def parse_calibration(specs: Sequence[str]) -> list[tuple[str, int]]:
    """["real2d-train:200", ...] -> [("real2d-train", 200), ...], refusing held-out splits."""
    parsed = []
    for spec in specs:
        name, sep, count = spec.rpartition(":")
        if not sep or not count.isdigit() or int(count) < 1:
            raise ValueError(f"calibration source {spec!r}: expected DATASET:COUNT, e.g. "
                             "real2d-train:200")
        if any(part in HELD_OUT for part in name.split("-")[1:]):
            raise ValueError(f"calibration source {name!r} is a held-out split; calibrate on "
                             "training data (e.g. real2d-train, synthetic-train)")
        parsed.append((name, int(count)))
    return parsed


def calibration_crops(source, count: int) -> np.ndarray:
    """`count` reference-box crops spread evenly over `source`: uint8 (count, 3, 256, 256)."""
    from training.evaluate import crop_jobs, crop_params

    if len(source) == 0:
        raise ValueError("calibration source is empty")
    picks = np.linspace(0, len(source) - 1, min(count, len(source))).round().astype(int)
    crops = []
    for i in picks:
        (job,) = crop_jobs(int(i), source[int(i)], crop_params(False))
        crops.append(job.image.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(crops))


class _Reader:
    """ONNX Runtime's CalibrationDataReader over crops, one at a time (the histogram
    calibrators stack what they collect, so every batch must have the same size)."""

    def __init__(self, crops: np.ndarray, batch: int = 1):
        self._batches: Iterator[np.ndarray] = iter(
            [crops[i:i + batch] for i in range(0, len(crops), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        images = next(self._batches, None)
        return None if images is None else {INPUT.name: images}


def module_path(node) -> str | None:
    """The MargiPose module (`trunk.body.ops.conv_3`, `refine.0.xy.up.1`, ...) an exported ONNX
    node came from, read from the torch exporter's `pkg.torch.onnx.name_scopes` metadata (which
    quant_pre_process keeps); None when it has none."""
    import ast

    scopes = next((p.value for p in node.metadata_props
                   if p.key == "pkg.torch.onnx.name_scopes"), None)
    if not scopes:
        return None
    modules = [s for s in ast.literal_eval(scopes) if s.startswith("model.")]
    return modules[-1].removeprefix("model.") if modules else None


def float_nodes(graph, prefixes: Sequence[str]) -> list[str]:
    """Names of the quantizable nodes (convolutions and their activations) of modules under any
    of `prefixes` (dotted module paths, matched whole: `refine` holds `refine.0.xy`, not
    `refiner`). A prefix that holds no convolution is an error, so a typo never silently
    quantizes what was meant to stay float."""
    found: dict[str, list[str]] = {p: [] for p in prefixes}
    convs: dict[str, int] = dict.fromkeys(prefixes, 0)
    for node in graph.node:
        path = module_path(node) if node.op_type in QUANTIZED_OPS + FOLDED_ACTIVATIONS else None
        for prefix in prefixes:
            if path is not None and (path == prefix or path.startswith(prefix + ".")):
                found[prefix].append(node.name)
                convs[prefix] += node.op_type in QUANTIZED_OPS
    empty = [p for p, n in convs.items() if not n]
    if empty:
        raise ValueError(f"no convolution of the model lies under {', '.join(empty)}; module "
                         "paths look like trunk.body, trunk.adapt, first, refine.0")
    return sorted({name for names in found.values() for name in names})


def quantize(model: Path, out: Path, crops: np.ndarray, method: str = "minmax",
             card_extra: dict | None = None, keep_float: Sequence[str] = ()) -> Path:
    """Write the int8 version of `model` (float32 or float16-stored ONNX) to `out`; the
    convolutions of the modules under `keep_float` stay float32."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from training.export_onnx import restore_float32, set_metadata

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    source = onnx.load(str(model))
    card = json.loads({p.key: p.value for p in source.metadata_props}.get(CARD_FILE, "{}"))
    with tempfile.TemporaryDirectory() as tmp:
        plain, prepared = Path(tmp) / "float32.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(restore_float32(source), str(plain))
        quant_pre_process(str(plain), str(prepared))
        graph = onnx.load(str(prepared)).graph
        excluded = float_nodes(graph, keep_float) if keep_float else []
        kept_convs = sum(n.name in excluded and n.op_type in QUANTIZED_OPS for n in graph.node)
        out.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(
            str(prepared), str(out), _Reader(crops), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=[*QUANTIZED_OPS, *FOLDED_ACTIVATIONS],
            nodes_to_exclude=excluded,
            per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method={"minmax": CalibrationMethod.MinMax,
                              "percentile": CalibrationMethod.Percentile,
                              "entropy": CalibrationMethod.Entropy}[method],
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    card["quantization"] = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                            "weights": "int8 per channel", "activations": "uint8 per tensor",
                            "ops": [*QUANTIZED_OPS, *FOLDED_ACTIVATIONS],
                            "calibration_method": method,
                            "calibration_crops": int(len(crops)), "source": str(model),
                            "float_modules": list(keep_float),
                            "float_convolutions": kept_convs,
                            **(card_extra or {})}
    set_metadata(out, {CARD_FILE: json.dumps(card, indent=2)})
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="exported model.onnx")
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--calibration", nargs="+", default=["real2d-train:200", "synthetic-train:200"],
                   metavar="DATASET:COUNT", help="training sources and crops from each")
    p.add_argument("--method", choices=CALIBRATION_METHODS, default="minmax")
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--name", required=True, help="model name of the int8 model")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--keep-float", nargs="+", default=[], metavar="MODULE",
                   help="modules whose convolutions stay float32 (dotted paths: trunk.adapt, "
                        "first, refine)")
    return p


def main(argv: list[str] | None = None) -> None:
    quantize_command(argv)


def quantize_command(argv: list[str] | None = None) -> Path:
    """margipose-quantize; answers the written model.onnx."""
    from training.evaluate import open_registered

    args = get_args_parser().parse_args(argv)
    sources = parse_calibration(args.calibration)
    crops = np.concatenate([calibration_crops(open_registered(name, args.data_root), count)
                            for name, count in sources])
    out = args.repository / args.name / str(args.version) / "model.onnx"
    quantize(args.model, out, crops, args.method,
             {"calibration_sources": [f"{n}:{c}" for n, c in sources]}, args.keep_float)
    import onnx

    names = [o.name for o in onnx.load(str(out), load_external_data=False).graph.output]
    write_onnx_config(args.repository, args.name, ServingOptions(),
                      outputs=outputs_named(names))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB), calibrated on {len(crops)} crops")
    return out


if __name__ == "__main__":
    main()
