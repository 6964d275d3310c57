"""Triton Python-backend `model.py` of the CPU twin: the exported model, run by torch or ONNX
Runtime.

`posecontract.triton.write_cpu_twin` copies this file into every version folder of the twin as
`model.py`, next to the production `model.pt` (or `model.onnx` when the config's RUNTIME
parameter is `onnxruntime`). It runs inside Triton's Python stub, never in the gateway:
`triton_python_backend_utils` exists only there, and `torch`, `onnxruntime` and `numpy` come from
the interpreter the stub finds as `python3` on PATH (see deploy/triton_server.py); only the chosen
runtime is imported. Tensor names, dtypes and dims are read from the model's config, which
`render_cpu_twin_config` wrote from `posecontract.layout`, so this file depends on nothing else
of the project.

Like the libtorch and onnxruntime backends, it honours the config's INTRA_OP_THREAD_COUNT
parameter (the runtime's own default when absent) and logs the count it runs with.

Triton hands `execute` the requests its dynamic batcher grouped. Each valid request contributes
its (k_i, 3, 256, 256) uint8 rows to one stacked batch, the model runs once, and the outputs are
split back into one response per request; an invalid request gets an error response of its own
and does not fail the others.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TorchModel:
    """model.pt with torch."""

    def __init__(self, folder: Path, threads: str | None, model_name: str):
        import torch

        self.torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        pb_utils.Logger.log_info(f"{model_name}: torch intra-op threads "
                                 f"{torch.get_num_threads()}")
        self.model = torch.jit.load(str(folder / "model.pt"), map_location="cpu").eval()
        # Weights stored as float16 (export --weights float16) are float16 constants, each cast
        # to float32 in the graph: fold the casts once, as posecontract.torchscript.load does.
        torch._C._jit_pass_constant_propagation(self.model.graph)

    def __call__(self, batch: np.ndarray, input_name: str) -> list[np.ndarray]:
        with self.torch.inference_mode():
            return [t.numpy() for t in self.model(self.torch.from_numpy(batch))]


class OnnxModel:
    """model.onnx with ONNX Runtime on the CPU (config parameter RUNTIME = onnxruntime)."""

    def __init__(self, folder: Path, threads: str | None, model_name: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads) if threads else 0
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        pb_utils.Logger.log_info(f"{model_name}: onnxruntime intra-op threads "
                                 f"{threads or 'default'}")

    def __call__(self, batch: np.ndarray, input_name: str) -> list[np.ndarray]:
        return self.session.run(None, {input_name: batch})


RUNTIMES = {"torch": TorchModel, "onnxruntime": OnnxModel}


class TritonPythonModel:
    """One model instance: the exported model and the names of its tensors."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = config.get("parameters", {})
        threads = parameters.get("INTRA_OP_THREAD_COUNT", {}).get("string_value")
        runtime = parameters.get("RUNTIME", {}).get("string_value", "torch")
        # args["model_repository"] is the model's folder; the version folder holds the file.
        folder = Path(args["model_repository"]) / args["model_version"]
        self.model = RUNTIMES[runtime](folder, threads, args["model_name"])
        (spec,) = config["input"]
        self.input_name = spec["name"]
        self.input_dims = tuple(int(d) for d in spec["dims"])  # per item, batch dim implicit
        self.input_dtype = pb_utils.triton_string_to_numpy(spec["data_type"])
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"]))
                        for o in config["output"]]

    def _images(self, request) -> np.ndarray:
        """The request's (k, 3, 256, 256) uint8 input; ValueError naming what is wrong."""
        tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
        if tensor is None:
            raise ValueError(f"missing input {self.input_name}")
        images = tensor.as_numpy()
        if images.dtype != self.input_dtype or images.shape[1:] != self.input_dims:
            raise ValueError(f"{self.input_name} must be {np.dtype(self.input_dtype).name} "
                             f"(k, {', '.join(map(str, self.input_dims))}), "
                             f"got {images.dtype.name} {images.shape}")
        return images

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        good: list[tuple[int, np.ndarray]] = []
        for i, request in enumerate(requests):
            try:
                good.append((i, self._images(request)))
            except ValueError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses[i] = pb_utils.InferenceResponse(error=error)
        if good:
            batch = np.concatenate([images for _, images in good])  # (N, 3, 256, 256)
            try:
                outputs = self.model(batch, self.input_name)
            except Exception as exc:  # torch's RuntimeError, onnxruntime's own types
                error = pb_utils.TritonError(f"inference failed: {exc}")
                for i, _ in good:
                    responses[i] = pb_utils.InferenceResponse(error=error)
                return responses
            start = 0
            for i, images in good:
                stop = start + len(images)
                responses[i] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor(name, np.ascontiguousarray(out[start:stop], dtype=dtype))
                    for (name, dtype), out in zip(self.outputs, outputs, strict=True)
                ])
                start = stop
        return responses

    def finalize(self) -> None:
        self.model = None
