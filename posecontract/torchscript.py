"""Exported TorchScript files whose large weights are stored as float16.

A frozen TorchScript module holds its weights as tensor constants of its graph. `store_float16`
rewrites every large float32 constant as a float16 constant followed by a cast back to float32
(`aten::to`), so the saved file is about half the size while the graph still computes in float32.
`load` folds those casts away once, at load time (constant propagation turns each cast of a
constant into a float32 constant), so serving costs nothing per call. A module without float16
constants loads unchanged. Triton's libtorch backend runs such a file as is: correct, with the
casts executed on every call.

The rounding is float16's: relative error at most 2**-11 per weight (weights of these models lie
far inside float16's normal range, 6e-5 to 65504). What it does to the outputs is measured at export
(`training.export`) and by evaluating the exported file.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import torch

MIN_ELEMENTS = 1024  # smaller constants (biases, normalisation) stay float32: they weigh nothing


def store_float16(module: torch.jit.ScriptModule, min_elements: int = MIN_ELEMENTS) -> int:
    """Rewrite `module`'s large float32 tensor constants as float16 + cast, in place.

    `module` must be frozen (`torch.jit.freeze`): only then are its weights graph constants.
    Answers how many constants were rewritten.
    """
    graph = module.graph
    rewritten = 0
    for node in list(graph.findAllNodes("prim::Constant")):
        value = node.output()
        if not isinstance(value.type(), torch._C.TensorType):
            continue
        tensor = value.toIValue()
        if tensor.dtype != torch.float32 or tensor.numel() < min_elements:
            continue
        with graph.insert_point_guard(node):
            half = graph.insertConstant(tensor.half())
            dtype = graph.insertConstant(torch.float32)
            no = graph.insertConstant(False)
            none = graph.insertConstant(None)
            # aten::to(self, dtype, non_blocking, copy, memory_format)
            cast = graph.insertNode(graph.create("aten::to", [half, dtype, no, no, none]))
        value.replaceAllUsesWith(cast.output())
        node.destroy()
        rewritten += 1
    return rewritten


def float16_constants(module: torch.jit.ScriptModule) -> int:
    """How many float16 tensor constants `module`'s forward graph holds."""
    count = 0
    for node in module.graph.findAllNodes("prim::Constant"):
        value = node.output()
        if isinstance(value.type(), torch._C.TensorType) and \
                value.toIValue().dtype == torch.float16:
            count += 1
    return count


def load(file: str | Path | BinaryIO, map_location: str | torch.device | None = None,
         extra_files: dict[str, str] | None = None) -> torch.jit.ScriptModule:
    """`torch.jit.load` in eval mode, with float16-stored weights cast to float32 once."""
    kwargs = {"_extra_files": extra_files} if extra_files is not None else {}
    source = str(file) if isinstance(file, str | Path) else file
    module = torch.jit.load(source, map_location=map_location, **kwargs).eval()
    if float16_constants(module):
        torch._C._jit_pass_constant_propagation(module.graph)
    return module
