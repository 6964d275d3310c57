"""The exported model as ONNX: `model.onnx` beside `model.pt`, the same contract.

One uint8 input and five float32 outputs with the names, dtypes and per-item dims of
`posecontract.layout` (Triton's `INPUT__0`, `OUTPUT__k`), the batch dimension dynamic. It is
written by torch's `torch.export`-based exporter (the TorchScript-based one is deprecated) at
opset 18, as one self-contained file, and checked with ONNX Runtime against the eager model in
float64 by the same rule as the TorchScript file (`training.export.Parity`): ONNX Runtime's float32
outputs may be at most ROUNDING_FACTOR times eager float32's own error from the float64 truth.

`store_float16` gives the file float16 weight storage, as `posecontract.torchscript` does for
TorchScript: each large float32 initializer becomes a float16 initializer and a Cast node;
ONNX Runtime's constant folding (on by default) turns them back into float32 weights when a
session is made, so inference costs what it did.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from posecontract.layout import INPUT, INPUT_SIZE, model_outputs, outputs_named
from posecontract.onnx_session import open_session

OPSET = 18
MAX_EXPORT_BATCH = 1024  # the exporter's bound on the dynamic batch dimension
MIN_ELEMENTS = 1024  # smaller initializers stay float32 (as in posecontract.torchscript)


def to_onnx(serving: torch.nn.Module, path: str | Path) -> Path:
    """Write the serving wrapper (uint8 images -> the contract's outputs, with `visibility`
    when the wrapped model has the head) to `path`."""
    path = Path(path)
    example = torch.zeros((2, *INPUT.dims), dtype=torch.uint8)
    outputs = model_outputs(getattr(serving.model, "visibility", None) is not None)
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    with warnings.catch_warnings():
        # torch.export's own internals warn (pytree deprecations); they are not about our model.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(serving.eval(), (example,), str(path), dynamo=True,
                          input_names=[INPUT.name], output_names=[o.name for o in outputs],
                          dynamic_shapes=({0: batch},), opset_version=OPSET,
                          external_data=False, optimize=True, verbose=False)
    return path


def session(path: str | Path | bytes, threads: int = 0):
    """An ONNX Runtime CPU session for `path` or a serialized model (threads 0: ONNX Runtime's
    default), set up as the embedded backend sets it up."""
    return open_session(path, threads)


def run_session(sess, images: np.ndarray) -> tuple[np.ndarray, ...]:
    """The session's contract outputs in contract order (five, or six with `visibility`)."""
    outputs = outputs_named(o.name for o in sess.get_outputs())
    return tuple(sess.run([o.name for o in outputs], {INPUT.name: images}))


@dataclass
class OnnxParity:
    """Max abs differences over all outputs on the same random images."""

    onnx_rounding: float  # ONNX Runtime float32 vs eager float64
    eager_rounding: float  # eager float32 vs eager float64
    vs_torchscript: float  # ONNX Runtime vs the TorchScript file, both float32
    float16_coord_diff: float | None = None  # coords, float16-stored weights vs float32

    def problem(self, factor: float, floor: float) -> str | None:
        bound = max(factor * self.eager_rounding, floor)
        if not self.onnx_rounding <= bound:
            return (f"ONNX Runtime's float32 outputs are {self.onnx_rounding:.3g} from the "
                    f"float64 model, more than {factor} x eager float32's own error "
                    f"{self.eager_rounding:.3g} (or {floor}): the ONNX graph is not the model")
        return None


def _eager(serving: torch.nn.Module, images: Tensor) -> tuple[np.ndarray, ...]:
    with torch.inference_mode():
        return tuple(t.double().numpy() for t in serving(images))


def _parity_images(batch: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, INPUT_SIZE, INPUT_SIZE), dtype=torch.uint8,
                         generator=g)


def _diff(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def _onnx_outputs(path: Path, images: Tensor) -> tuple[np.ndarray, ...]:
    return tuple(a.astype(np.float64) for a in run_session(session(path), images.numpy()))


def onnx_parity(serving32: torch.nn.Module, path: Path, scripted: torch.jit.ScriptModule,
                batch: int = 3, seed: int = 2) -> OnnxParity:
    """Compare ONNX Runtime on `path` with the eager model in float64 and float32."""
    images = _parity_images(batch, seed)
    serving64 = copy.deepcopy(serving32).double().eval()
    truth = _eager(serving64, images)
    eager32 = _eager(serving32, images)
    got = _onnx_outputs(path, images)
    return OnnxParity(onnx_rounding=_diff(got, truth), eager_rounding=_diff(eager32, truth),
                      vs_torchscript=_diff(got, _eager(scripted, images)))


def torchscript_diff(path: Path, scripted: torch.jit.ScriptModule, batch: int = 3,
                     seed: int = 2) -> float:
    """`onnx_parity`'s `vs_torchscript` alone (same images), without the float64 model."""
    images = _parity_images(batch, seed)
    return _diff(_onnx_outputs(path, images), _eager(scripted, images))


def store_float16(path: str | Path, min_elements: int = MIN_ELEMENTS) -> int:
    """Rewrite the ONNX file's large float32 initializers as float16 + Cast, in place."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    kept, casts, rewritten = [], [], 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            kept.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16),
                                       f"{init.name}__float16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__to_float32"))
        rewritten += 1
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)  # the casts first: nodes must be topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return rewritten


def set_metadata(path: str | Path, entries: dict[str, str]) -> None:
    """Write `entries` into the file's metadata (ONNX Runtime: custom_metadata_map)."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def store_float16_checked(path: str | Path, seed: int = 1) -> float:
    """`store_float16`, answering how far it moved the coordinates under ONNX Runtime."""
    images = np.random.default_rng(seed).integers(0, 256, (4, *INPUT.dims), np.uint8)
    before = run_session(session(path), images)[0]
    if store_float16(path) == 0:
        raise RuntimeError(f"{path}: no float32 initializers to store as float16")
    return float(np.abs(run_session(session(path), images)[0] - before).max())


class OnnxModule:
    """An ONNX Runtime session called like the TorchScript module: uint8 (B, 3, 256, 256) CPU
    tensor -> the contract's outputs as float32 tensors. The card is in `card`."""

    def __init__(self, path: str | Path, threads: int = 0):
        self.session = session(path, threads)
        text = self.session.get_modelmeta().custom_metadata_map.get("model.json")
        self.card_json = text or ""

    def __call__(self, images: Tensor) -> tuple[Tensor, ...]:
        outputs = run_session(self.session, images.cpu().numpy())
        return tuple(torch.from_numpy(o) for o in outputs)

    def eval(self) -> OnnxModule:
        return self


def load_exported(path: str | Path, device: str | torch.device = "cpu",
                  extra_files: dict[str, str] | None = None):
    """model.pt (posecontract.torchscript.load) or model.onnx (ONNX Runtime, CPU) by suffix.

    `extra_files` gets the card under "model.json" from either.
    """
    from posecontract.torchscript import load

    if Path(path).suffix != ".onnx":
        return load(path, device, extra_files)
    if torch.device(device).type != "cpu":
        raise ValueError(f"{path}: ONNX models are evaluated with ONNX Runtime on the cpu")
    module = OnnxModule(path)
    if extra_files is not None and "model.json" in extra_files:
        extra_files["model.json"] = module.card_json
    return module


def restore_float32(model):
    """An ONNX ModelProto without float16 weight storage: each float16 initializer that
    `store_float16` cast back becomes the float32 initializer again (a copy; others unchanged)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    halves = {i.name: i for i in graph.initializer if i.data_type == TensorProto.FLOAT16}
    casts = [n for n in graph.node if n.op_type == "Cast" and n.input[0] in halves]
    if not casts:
        return model
    restored = [numpy_helper.from_array(
        numpy_helper.to_array(halves[n.input[0]]).astype(np.float32), n.output[0]) for n in casts]
    dropped = {n.input[0] for n in casts}
    kept = [i for i in graph.initializer if i.name not in dropped] + restored
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = [n for n in graph.node if not (n.op_type == "Cast" and n.input[0] in dropped)]
    del graph.node[:]
    graph.node.extend(nodes)
    return model
