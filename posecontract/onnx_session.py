"""One way to open an exported model.onnx with ONNX Runtime, for the gateway and the tools.

The embedded backend (`service.backends.runtimes`) and the exporter's checks and evaluators
(`training.export_onnx`) run the same file with the same session settings: `threads` intra-op
threads (0: ONNX Runtime's default), one inter-op thread (one batch at a time), errors-only
logging, and ONNX Runtime's default graph optimisation, whose constant folding turns float16
weight storage back into float32 weights once. Triton's Python-backend twin
(`posecontract.triton_python_model`) keeps its own copy: it may import nothing of the project.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def open_session(source: str | Path | bytes, threads: int = 0,
                 providers: Sequence[Any] = ("CPUExecutionProvider",)):
    """An `onnxruntime.InferenceSession` for a file path or a serialized model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    model = source if isinstance(source, bytes) else str(source)
    return ort.InferenceSession(model, options, providers=list(providers))
