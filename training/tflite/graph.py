"""Read a TensorFlow Lite flatbuffer into plain Python: tensors, constants and operators.

The parsing is done by PyPI `tflite` (the flatbuffer schema); this module turns its accessor
objects into frozen dataclasses the converter can walk, and expands the two kinds of stored
weights the BlazePose models use into dense float32 arrays:

- float16 constants behind DEQUANTIZE operators;
- sparse constants behind DENSIFY operators (TFLite's sparsity format: a traversal order, one
  level per dimension, each DENSE or SPARSE_CSR with segment and index arrays; no block maps).

Shapes are TFLite's (NHWC for images). Nothing here needs torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# TFLite TensorType -> numpy dtype, for the types these models store.
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}

# The option fields the converter reads, per operator (TFLite's own field names).
_OPTIONS = {
    "CONV_2D": ("Conv2DOptions", ("Padding", "StrideH", "StrideW", "DilationHFactor",
                                  "DilationWFactor", "FusedActivationFunction")),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", (
        "Padding", "StrideH", "StrideW", "DilationHFactor", "DilationWFactor",
        "DepthMultiplier", "FusedActivationFunction")),
    "ADD": ("AddOptions", ("FusedActivationFunction",)),
    "MAX_POOL_2D": ("Pool2DOptions", ("Padding", "StrideH", "StrideW", "FilterHeight",
                                      "FilterWidth", "FusedActivationFunction")),
    "RESHAPE": ("ReshapeOptions", ("NewShapeAsNumpy",)),
    "RESIZE_BILINEAR": ("ResizeBilinearOptions", ("AlignCorners", "HalfPixelCenters")),
    "CONCATENATION": ("ConcatenationOptions", ("Axis", "FusedActivationFunction")),
    "DEPTH_TO_SPACE": ("DepthToSpaceOptions", ("BlockSize",)),
}


class TFLiteFormatError(ValueError):
    """The file is not a TFLite model this reader understands (the message says what)."""


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]          # TFLite order (NHWC for 4-D)
    dtype: type
    data: np.ndarray | None = None  # constant value (already dequantised/densified), or None


@dataclass(frozen=True)
class OpInfo:
    index: int
    kind: str                       # builtin operator name, e.g. "CONV_2D"
    inputs: tuple[int, ...]         # tensor indices (-1: optional input left out)
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Graph:
    """The first subgraph of a TFLite model, weights expanded to float32 constants."""

    tensors: tuple[TensorInfo, ...]
    ops: tuple[OpInfo, ...]         # the compute operators, in execution order
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    description: str = ""

    def tensor(self, key: int | str) -> TensorInfo:
        """A tensor by index or by its exact name."""
        if isinstance(key, int):
            if not 0 <= key < len(self.tensors):
                raise KeyError(f"tensor index {key} out of range 0..{len(self.tensors) - 1}")
            return self.tensors[key]
        for t in self.tensors:
            if t.name == key:
                return t
        raise KeyError(f"no tensor named {key!r} in the graph")


def _builtin_names() -> dict[int, str]:
    import tflite

    return {v: k for k, v in vars(tflite.BuiltinOperator).items()
            if not k.startswith("_") and isinstance(v, int)}


def _options(op: Any, kind: str) -> dict[str, Any]:
    import tflite

    if kind not in _OPTIONS:
        return {}
    class_name, fields = _OPTIONS[kind]
    table = op.BuiltinOptions()
    if table is None:
        return {}
    opts = getattr(tflite, class_name)()
    opts.Init(table.Bytes, table.Pos)
    out = {}
    for name in fields:
        value = getattr(opts, name)()
        if name.endswith("AsNumpy"):
            name = name.removesuffix("AsNumpy")
            value = tuple(int(v) for v in value) if isinstance(value, np.ndarray) else ()
        out[name] = value
    return out


def _index_vector(vector_table: Any, kind: int) -> np.ndarray:
    import tflite

    classes = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}
    if kind not in classes:
        raise TFLiteFormatError(f"sparse index vector type {kind} (expected 1..3)")
    vec = classes[kind]()
    vec.Init(vector_table.Bytes, vector_table.Pos)
    return np.asarray(vec.ValuesAsNumpy(), dtype=np.int64)


def densify(values: np.ndarray, shape: tuple[int, ...], order: tuple[int, ...],
            levels: list[tuple[str, int, np.ndarray | None, np.ndarray | None]]) -> np.ndarray:
    """Expand TFLite sparse storage into a dense array.

    `levels[k]` describes dimension `order[k]` in traversal order: ("dense", size, None, None) or
    ("csr", 0, segments, indices). Each level expands every position of the previous ones into its
    children; the stored `values` follow that traversal.
    """
    coords = np.zeros((1, 0), dtype=np.int64)  # (positions, levels so far)
    for fmt, size, segments, indices in levels:
        if fmt == "dense":
            parent = np.repeat(np.arange(len(coords)), size)
            child = np.tile(np.arange(size), len(coords))
        else:
            if len(segments) != len(coords) + 1:
                raise TFLiteFormatError(
                    f"sparse level has {len(segments)} segments for {len(coords)} positions")
            parent = np.repeat(np.arange(len(coords)), np.diff(segments))
            child = indices
        coords = np.concatenate([coords[parent], child[:, None]], axis=1)
    if len(coords) != values.size:
        raise TFLiteFormatError(f"sparse tensor has {values.size} values for {len(coords)} slots")
    dense = np.zeros(shape, dtype=values.dtype)
    index = [None] * len(shape)
    for level, axis in enumerate(order):
        index[axis] = coords[:, level]
    dense[tuple(index)] = values.reshape(-1)
    return dense


def _sparse_levels(sparsity: Any) -> tuple[tuple[int, ...], list]:
    if not sparsity.BlockMapIsNone() and sparsity.BlockMapLength():
        raise TFLiteFormatError("block-sparse tensors (a block map) are not supported")
    order = tuple(int(a) for a in sparsity.TraversalOrderAsNumpy())
    levels = []
    for k in range(sparsity.DimMetadataLength()):
        dm = sparsity.DimMetadata(k)
        if dm.Format() == 0:
            levels.append(("dense", int(dm.DenseSize()), None, None))
        else:
            levels.append(("csr", 0, _index_vector(dm.ArraySegments(), dm.ArraySegmentsType()),
                           _index_vector(dm.ArrayIndices(), dm.ArrayIndicesType())))
    return order, levels


def read_graph(path: str | Path) -> Graph:
    """Parse `path` and return its first subgraph with weights expanded (see module docstring)."""
    import tflite

    buf = Path(path).read_bytes()
    if buf[4:8] != b"TFL3":
        raise TFLiteFormatError(f"{path}: not a TFLite flatbuffer (identifier {buf[4:8]!r})")
    model = tflite.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() != 1:
        raise TFLiteFormatError(f"{path}: {model.SubgraphsLength()} subgraphs; one is supported")
    sub = model.Subgraphs(0)
    names = _builtin_names()

    tensors: list[TensorInfo] = []
    sparse: dict[int, Any] = {}
    for i in range(sub.TensorsLength()):
        t = sub.Tensors(i)
        if t.Type() not in _DTYPES:
            raise TFLiteFormatError(f"{path}: tensor {i} has TFLite type {t.Type()}; "
                                    f"supported: {sorted(_DTYPES)}")
        dtype = _DTYPES[t.Type()]
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        raw = model.Buffers(t.Buffer()).DataAsNumpy() if t.Buffer() else 0
        data = None
        if isinstance(raw, np.ndarray) and raw.size:
            data = np.frombuffer(raw.tobytes(), dtype=dtype)
            if t.Sparsity() is not None:
                sparse[i] = t.Sparsity()
            else:
                data = data.reshape(shape)
        tensors.append(TensorInfo(i, t.Name().decode(), shape, dtype, data))

    ops: list[OpInfo] = []
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        # Codes above 127 live in BuiltinCode only; DeprecatedBuiltinCode caps at 127.
        kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        inputs = tuple(int(v) for v in op.InputsAsNumpy())
        outputs = tuple(int(v) for v in op.OutputsAsNumpy())
        if kind in ("DEQUANTIZE", "DENSIFY") and tensors[inputs[0]].data is not None:
            # Fold weight expansion into a float32 constant on the output tensor.
            src = tensors[inputs[0]]
            value = src.data
            if kind == "DENSIFY":
                if inputs[0] not in sparse:
                    raise TFLiteFormatError(f"{path}: DENSIFY op {i} reads a dense tensor")
                order, levels = _sparse_levels(sparse.pop(inputs[0]))
                value = densify(value, src.shape, order, levels)
            dst = tensors[outputs[0]]
            tensors[outputs[0]] = TensorInfo(dst.index, dst.name, dst.shape, dst.dtype,
                                             value.astype(dst.dtype).reshape(dst.shape))
            continue
        ops.append(OpInfo(i, kind, inputs, outputs, _options(op, kind)))

    description = model.Description().decode() if model.Description() else ""
    return Graph(tuple(tensors), tuple(ops), tuple(int(v) for v in sub.InputsAsNumpy()),
                 tuple(int(v) for v in sub.OutputsAsNumpy()), description)
