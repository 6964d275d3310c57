"""Export the BlazePose person detector into the model repository (TorchScript and ONNX).

    python -m training.export_detector --repository model_repository   # -> person-detector/1

The network is MediaPipe's `pose_detection.tflite` rebuilt op by op (`training.tflite`); the
exported module adds what the serving side should not have to know: uint8 in, the [-1, 1]
normalisation, and the anchor decoding (`posecontract.detection`), so it answers decoded boxes
and keypoints in input units and probabilities. Score threshold, non-maximum suppression and
the mapping back to the image stay in the gateway (`posecontract.detection.detections`): they
depend on request options and give a variable number of people.

The TFLite weights are float16 (expanded by DEQUANTIZE), so storing them as float16 in model.pt
and model.onnx loses nothing: the files equal the float32 rebuild exactly in their weights.
Both files carry the model card (source, licence, contract) like the pose model's. Checks at
export: TorchScript and ONNX against the eager rebuild, and the in-graph decoding against
`decode_raw` in float64.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from posecontract.detection import (
    DETECTOR_INPUT,
    DETECTOR_NAME,
    DETECTOR_OUTPUTS,
    DETECTOR_SERVING,
    NUM_COORDS,
    anchor_centres,
    decode_raw,
)
from posecontract.torchscript import store_float16
from posecontract.triton import onnx_model_name, render_config, render_onnx_config
from training.blazepose import LICENCE, MODELS, PIP_WHEEL, load

NAME = DETECTOR_NAME
CARD_FILE = "model.json"
# How far the exported outputs may sit from the eager rebuild, relative to 1 + |value|: float32
# kernels differ between TorchScript, ONNX Runtime and eager (fused ops, other summation
# orders; the keypoint regressions reach values of ~700 input pixels before scaling, where
# float32's step is 6e-5). Boxes are in input units (5e-4 is 0.11 input pixels; the random
# images of the check push some anchors' offsets to +-3), scores are probabilities. Measured:
# 2.1e-4 (one keypoint coordinate of one anchor) on this machine.
EXPORT_TOLERANCE = 5e-4
SERVING = DETECTOR_SERVING


class DetectorModel(nn.Module):
    """uint8 (B, 3, 224, 224) -> decoded (B, 2254, 12) in input units, scores (B, 2254)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        anchors = torch.from_numpy(anchor_centres())
        scale = torch.ones(NUM_COORDS)
        offset = anchors.repeat(1, NUM_COORDS // 2)  # (2254, 12): anchor x, y repeated
        offset[:, 2:4] = 0  # width and height are sizes
        self.register_buffer("offset", offset)
        self.register_buffer("scale", scale / DETECTOR_INPUT.dims[-1])

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        x = image.float() / 127.5 - 1.0
        outputs = self.network(x)
        raw, logits = outputs[0], outputs[1]
        boxes = raw * self.scale + self.offset
        scores = torch.sigmoid(torch.clamp(logits.squeeze(-1), -100.0, 100.0))
        return boxes, scores


def detector_model(root: str | Path | None = None) -> DetectorModel:
    return DetectorModel(load("detector", root)).eval()


def model_card(version: int) -> dict:
    spec = MODELS["detector"]
    return {
        "name": NAME, "version": version,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kind": "person-detector",
        "source": f"MediaPipe BlazePose person detector {spec.embedded_name}",
        "file": f"{spec.member} from {PIP_WHEEL}", "sha256": spec.sha256, "licence": LICENCE,
        "converted_by": "training/tflite (TFLite graph rebuilt op by op in torch)",
        "postprocess": "posecontract.detection (threshold, weighted NMS, letterbox, crops)",
        "input": {"name": DETECTOR_INPUT.name, "dtype": DETECTOR_INPUT.dtype,
                  "dims": list(DETECTOR_INPUT.dims)},
        "outputs": [{"name": o.name, "key": o.key, "dtype": o.dtype, "dims": list(o.dims)}
                    for o in DETECTOR_OUTPUTS],
        "weight_storage": {"dtype": "float16",
                           "note": "the TFLite weights are float16: nothing is rounded"},
    }


def _images(batch: int, seed: int) -> Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(
        0, 256, (batch, *DETECTOR_INPUT.dims), np.uint8))


def _diff(a, b) -> float:
    """Largest |a - b| / (1 + |b|) over the outputs."""
    out = 0.0
    for x, y in zip(a, b, strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        out = max(out, float((np.abs(x - y) / (1 + np.abs(y))).max()))
    return out


def export(repository: str | Path, version: int = 1, root: str | Path | None = None,
           onnx: bool = True) -> dict[str, float]:
    """Write `<repository>/person-detector/<version>/model.pt` (and model.onnx), the
    libtorch config and the `-onnx` model; answers the parity checks."""
    model = detector_model(root)
    images = _images(3, 0)
    with torch.no_grad():
        eager = [t.numpy() for t in model(images)]
        raw = model.network(images.float() / 127.5 - 1.0)
    reference = decode_raw(raw[0].numpy(), raw[1].numpy(), anchor_centres())
    checks = {"decoding_vs_float64": _diff(eager, reference)}

    folder = Path(repository) / NAME / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    card = json.dumps(model_card(version), indent=1)
    scripted = torch.jit.freeze(torch.jit.script(model))
    if store_float16(scripted) == 0:
        raise RuntimeError("the frozen detector has no float32 weight constants")
    torch.jit.save(scripted, str(folder / "model.pt"), _extra_files={CARD_FILE: card})
    loaded = torch.jit.load(str(folder / "model.pt"))
    with torch.no_grad():
        checks["torchscript_vs_eager"] = _diff([t.numpy() for t in loaded(images)], eager)
    (folder.parent / "config.pbtxt").write_text(
        render_config(NAME, SERVING, DETECTOR_OUTPUTS, DETECTOR_INPUT))
    if onnx:
        from training import export_onnx

        path = folder / "model.onnx"
        batch = torch.export.Dim("batch", min=1, max=64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(model, (images[:2],), str(path), dynamo=True,
                              input_names=[DETECTOR_INPUT.name],
                              output_names=[o.name for o in DETECTOR_OUTPUTS],
                              dynamic_shapes=({0: batch},), opset_version=export_onnx.OPSET,
                              external_data=False, optimize=True, verbose=False)
        export_onnx.store_float16(path)
        export_onnx.set_metadata(path, {CARD_FILE: card})
        session = export_onnx.session(path)
        outs = session.run(None, {DETECTOR_INPUT.name: images.numpy()})
        checks["onnx_vs_eager"] = _diff(outs, eager)
        onnx_dir = Path(repository) / onnx_model_name(NAME)
        onnx_dir.mkdir(exist_ok=True)
        link = onnx_dir / str(version)
        if not link.exists():
            link.symlink_to(Path("..") / NAME / str(version), target_is_directory=True)
        (onnx_dir / "config.pbtxt").write_text(render_onnx_config(
            onnx_model_name(NAME), SERVING, outputs=DETECTOR_OUTPUTS, input_spec=DETECTOR_INPUT))
    bad = {k: v for k, v in checks.items() if not v <= EXPORT_TOLERANCE}
    if bad:
        raise RuntimeError(f"exported detector differs beyond {EXPORT_TOLERANCE}: {bad}")
    return checks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Export the BlazePose person detector.")
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--models-dir", type=Path, default=None,
                   help="where the .tflite files are (default build/blazepose)")
    p.add_argument("--no-onnx", action="store_true", help="write model.pt only")
    args = p.parse_args(argv)
    checks = export(args.repository, args.version, args.models_dir, onnx=not args.no_onnx)
    for key, value in checks.items():
        print(f"{key}: max difference {value:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
