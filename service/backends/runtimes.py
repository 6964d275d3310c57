"""The runtimes of the embedded backend: one exported model, run in-process.

- `torch` runs `model.pt` (TorchScript) on a torch device (`cpu`, `cuda`, `cuda:N`);
- `onnxruntime` runs `model.onnx` with ONNX Runtime (CPU; `cuda` takes its CUDA provider);
- `openvino` runs `model.onnx` with OpenVINO on the CPU.

Each one is built in the backend's inference thread (with OpenMP a thread count is per thread),
reads the model card the exporter embedded (`model.pt`'s extra file, `model.onnx`'s metadata),
and runs uint8 batches to the outputs of the model's contract (`posecontract.layout.ModelContract`:
the pose model's `POSE` by default, the person detector's `DETECTOR_CONTRACT`), in contract
order. Only the chosen runtime's package is imported, so a gateway serving ONNX needs no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

from posecontract.layout import POSE, ModelContract, TensorSpec
from posecontract.onnx_session import open_session
from service.errors import BackendUnavailable

CARD_KEY = "model.json"  # the exporter's model card: model.pt's extra file, model.onnx's metadata
FILES = {"torch": "model.pt", "onnxruntime": "model.onnx", "openvino": "model.onnx"}
PACKAGES = {"torch": "torch (the `local` extra)", "onnxruntime": "onnxruntime (the `onnx` extra)",
            "openvino": "openvino (the `openvino` extra)"}


class Runtime(Protocol):
    name: str
    threads: int  # intra-op threads it runs with (0 where the runtime does not say)
    card: dict
    outputs: tuple[TensorSpec, ...]  # the model's contract outputs (with `visibility` or not)

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """uint8 (N, *input dims) -> the `outputs`, in order, each with leading dim N."""


def check_runtime(name: str) -> None:
    """Raise BackendUnavailable unless `name` is one of the runtimes."""
    if name not in FILES:
        raise BackendUnavailable(f"Unknown runtime {name!r}; choose one of {', '.join(FILES)}")


def open_runtime(name: str, path: Path, device: str, threads: int,
                 contract: ModelContract = POSE) -> Runtime:
    """Load `path` (a model of `contract`) with runtime `name`; `threads` 0 leaves the
    runtime's own default.

    Raises BackendUnavailable naming the problem (unknown runtime, missing package, a device the
    runtime cannot use, a file it cannot load).
    """
    check_runtime(name)
    try:
        runtime = {"torch": TorchRuntime, "onnxruntime": OnnxRuntime,
                   "openvino": OpenVinoRuntime}[name]
        return runtime(path, device, threads, contract)
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(f"Runtime {name!r} needs {PACKAGES[name]}: {exc}") from exc


def _card(text: str | None) -> dict:
    return json.loads(text) if text else {}


def _named(path: Path, names: list[str], contract: ModelContract) -> tuple[TensorSpec, ...]:
    """The contract outputs of a model from its output names; BackendUnavailable if they do not
    fit the contract."""
    try:
        return contract.named(names)
    except ValueError as exc:
        raise BackendUnavailable(f"Cannot serve {path}: {exc}") from exc


class TorchRuntime:
    name = "torch"

    def __init__(self, path: Path, device: str, threads: int, contract: ModelContract = POSE):
        import torch

        from posecontract import torchscript

        self._torch = torch
        self._device = torch.device(device)
        if threads > 0:
            torch.set_num_threads(threads)
        files = {CARD_KEY: ""}
        try:
            self.module = torchscript.load(path, self._device, files)
        except (RuntimeError, ValueError) as exc:
            raise BackendUnavailable(f"Cannot load {path}: {exc}") from exc
        self.card = _card(files[CARD_KEY])
        self.threads = torch.get_num_threads()
        # TorchScript names no outputs: the card lists them (cards before the visibility head
        # list the five of OUTPUTS; a model without a card is taken to have those five).
        listed = [o["name"] for o in self.card.get("outputs", [])]
        self.outputs = _named(path, listed, contract) if listed else contract.outputs

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        with self._torch.inference_mode():
            outputs = self.module(self._torch.from_numpy(images).to(self._device))
        return [t.cpu().numpy() for t in outputs]


class OnnxRuntime:
    name = "onnxruntime"

    def __init__(self, path: Path, device: str, threads: int, contract: ModelContract = POSE):
        import onnxruntime as ort

        if device == "cpu":
            providers = ["CPUExecutionProvider"]
        elif device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable(
                    f"device {device!r}: this onnxruntime has no CUDA provider (install "
                    "onnxruntime-gpu), or serve on cpu")
            index = device.partition(":")[2] or "0"
            providers = [("CUDAExecutionProvider", {"device_id": int(index)})]
        else:
            raise BackendUnavailable(f"device {device!r}: onnxruntime runs on cpu or cuda[:N]")
        try:
            self._session = open_session(path, threads, providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendUnavailable(f"Cannot load {path}: {exc}") from exc
        self.card = _card(self._session.get_modelmeta().custom_metadata_map.get(CARD_KEY))
        self.threads = threads
        self.outputs = _named(path, [o.name for o in self._session.get_outputs()], contract)
        self._names = [o.name for o in self.outputs]
        self._input = contract.input.name

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        return self._session.run(self._names, {self._input: images})


class OpenVinoRuntime:
    name = "openvino"

    def __init__(self, path: Path, device: str, threads: int, contract: ModelContract = POSE):
        import openvino as ov

        if device != "cpu":
            raise BackendUnavailable(f"device {device!r}: the openvino runtime runs on cpu")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
            # OpenVINO computes in bfloat16 by default where the CPU has it (Intel AMX, AMD
            # Zen 4): 8 mantissa bits move the joints visibly. The model is float32.
            config: dict = {"INFERENCE_PRECISION_HINT": "f32"}
            if threads > 0:
                config["INFERENCE_NUM_THREADS"] = threads
            compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as exc:
            raise BackendUnavailable(f"Cannot load {path}: {exc}") from exc
        try:
            self.card = _card(model.get_rt_info(["framework", CARD_KEY]).astype(str))
        except RuntimeError:  # no card in the file's metadata
            self.card = {}
        self.threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        self._request = compiled.create_infer_request()
        self.outputs = _named(path, [port.get_any_name() for port in model.outputs], contract)
        self._names = [o.name for o in self.outputs]
        self._input = contract.input.name

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        results = self._request.infer({self._input: images})
        by_name = {port.get_any_name(): value for port, value in results.items()}
        # infer() answers views of the request's buffers: copy before the next batch reuses them.
        return [np.array(by_name[name], copy=True) for name in self._names]
