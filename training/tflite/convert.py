"""Build a torch module from a TFLite graph, operator by operator, in NCHW.

    graph = read_graph("pose_landmark_full.tflite")
    net = convert(graph)                          # every graph output
    trunk = convert(graph, outputs=[277])         # cut at an intermediate tensor (index or name)
    outs = net(images)                            # images (B, 3, H, W); a list of tensors

Each TFLite operator becomes one small module (`conv_12`, `dwconv_3`, `add_7`, ...: kind and a
count in graph order) whose weights are ordinary float32 parameters, so the result trains,
scripts (`torch.jit.script`) and freezes. Tensors travel in a list of slots that are reused once
a tensor is dead. Conventions:

- 4-D tensors are NCHW inside the module and at its outputs; other tensors keep TFLite's order.
- The batch size comes from the input; every other shape is the graph's (fixed input size).
- TF 'SAME' padding is computed from the graph's static shapes; where it is asymmetric (stride 2
  on even sizes: the extra row and column go at the bottom and right) an explicit pad runs first.
- RESHAPE flattens in NHWC order and CONCATENATION axes are remapped, so values match TFLite's.

Supported operators: see `SUPPORTED`; anything else raises `UnsupportedOperator` naming it.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.tflite.graph import Graph, OpInfo, TensorInfo

SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "PAD", "RESHAPE", "RESIZE_BILINEAR",
             "MAX_POOL_2D", "LOGISTIC", "CONCATENATION", "DEPTH_TO_SPACE",
             "DEQUANTIZE", "DENSIFY")  # the last two only on constants (folded by read_graph)
# TFLite fused activations we implement: NONE, RELU, RELU_N1_TO_1, RELU6, TANH.
_ACTIVATIONS = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh"}
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


class UnsupportedOperator(ValueError):
    """The graph uses an operator, option or layout the converter does not implement."""


def _activate(x: Tensor, code: int) -> Tensor:
    if code == 1:
        return F.relu(x)
    if code == 2:
        return x.clamp(-1.0, 1.0)
    if code == 3:
        return F.hardtanh(x, 0.0, 6.0)
    if code == 4:
        return torch.tanh(x)
    return x


class Conv(nn.Module):
    """CONV_2D or DEPTHWISE_CONV_2D (groups = input channels), fused activation, 'SAME' pads."""

    pad: list[int]  # F.pad amounts (left, right, top, bottom), empty when the conv pads

    def __init__(self, src: int, out: int, conv: nn.Conv2d, pad: list[int], activation: int,
                 source: str):
        super().__init__()
        self.src, self.out, self.pad, self.activation = src, out, pad, activation
        self.conv = conv
        self.source = source  # the TFLite tensor this op writes (for reading the module tree)

    def forward(self, values: list[Tensor]) -> Tensor:
        x = values[self.src]
        if len(self.pad) > 0:
            x = F.pad(x, self.pad)
        return _activate(self.conv(x), self.activation)


class Add(nn.Module):
    def __init__(self, a: int, b: int, out: int, activation: int):
        super().__init__()
        self.a, self.b, self.out, self.activation = a, b, out, activation

    def forward(self, values: list[Tensor]) -> Tensor:
        return _activate(values[self.a] + values[self.b], self.activation)


class Pad(nn.Module):
    """PAD with zeros; `pad` is F.pad's order for NCHW (W, H, C pairs)."""

    pad: list[int]

    def __init__(self, src: int, out: int, pad: list[int]):
        super().__init__()
        self.src, self.out, self.pad = src, out, pad

    def forward(self, values: list[Tensor]) -> Tensor:
        return F.pad(values[self.src], self.pad)


class MaxPool(nn.Module):
    kernel: list[int]
    stride: list[int]
    pad: list[int]

    def __init__(self, src: int, out: int, kernel: list[int], stride: list[int], pad: list[int],
                 activation: int):
        super().__init__()
        self.src, self.out, self.kernel, self.stride = src, out, kernel, stride
        self.pad, self.activation = pad, activation

    def forward(self, values: list[Tensor]) -> Tensor:
        x = values[self.src]
        if len(self.pad) > 0:  # TF ignores padded cells in a max: pad with -inf
            x = F.pad(x, self.pad, value=-math.inf)
        return _activate(F.max_pool2d(x, self.kernel, self.stride), self.activation)


class Resize(nn.Module):
    """RESIZE_BILINEAR with half-pixel centres (align_corners False) or align_corners True."""

    size: list[int]

    def __init__(self, src: int, out: int, size: list[int], align_corners: bool):
        super().__init__()
        self.src, self.out, self.size, self.align_corners = src, out, size, align_corners

    def forward(self, values: list[Tensor]) -> Tensor:
        return F.interpolate(values[self.src], size=self.size, mode="bilinear",
                             align_corners=self.align_corners)


class Reshape(nn.Module):
    """RESHAPE in TFLite's element order: 4-D inputs go NHWC first, 4-D outputs come back NCHW."""

    shape: list[int]

    def __init__(self, src: int, out: int, shape: list[int], from_4d: bool, to_4d: bool):
        super().__init__()
        self.src, self.out, self.shape = src, out, shape  # shape without the batch
        self.from_4d, self.to_4d = from_4d, to_4d

    def forward(self, values: list[Tensor]) -> Tensor:
        x = values[self.src]
        if self.from_4d:
            x = x.permute(0, 2, 3, 1)
        x = x.reshape([x.shape[0]] + self.shape)
        if self.to_4d:
            x = x.permute(0, 3, 1, 2)
        return x


class Concat(nn.Module):
    srcs: list[int]

    def __init__(self, srcs: list[int], out: int, axis: int, activation: int):
        super().__init__()
        self.srcs, self.out, self.axis, self.activation = srcs, out, axis, activation

    def forward(self, values: list[Tensor]) -> Tensor:
        return _activate(torch.cat([values[i] for i in self.srcs], dim=self.axis),
                         self.activation)


class DepthToSpace(nn.Module):
    """DEPTH_TO_SPACE: TFLite orders the input channels (row i, column j, channel c)."""

    def __init__(self, src: int, out: int, block: int):
        super().__init__()
        self.src, self.out, self.block = src, out, block

    def forward(self, values: list[Tensor]) -> Tensor:
        x = values[self.src]
        b, c, h, w = x.shape
        r = self.block
        x = x.reshape(b, r, r, c // (r * r), h, w).permute(0, 3, 4, 1, 5, 2)
        return x.reshape(b, c // (r * r), h * r, w * r)


class Sigmoid(nn.Module):
    def __init__(self, src: int, out: int):
        super().__init__()
        self.src, self.out = src, out

    def forward(self, values: list[Tensor]) -> Tensor:
        return torch.sigmoid(values[self.src])


class TFLiteModule(nn.Module):
    """The converted graph: forward(x (B, C, H, W)) -> list of output tensors."""

    output_slots: list[int]
    output_names: list[str]

    def __init__(self, ops: nn.ModuleDict, n_slots: int, input_slot: int,
                 output_slots: list[int], output_names: list[str]):
        super().__init__()
        self.ops = ops
        self.n_slots, self.input_slot = n_slots, input_slot
        self.output_slots = output_slots
        self.output_names = output_names  # TFLite names of the outputs, in order

    def forward(self, x: Tensor) -> list[Tensor]:
        values = [x for _ in range(self.n_slots)]
        for op in self.ops.values():
            values[op.out] = op(values)
        return [values[i] for i in self.output_slots]


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) of one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _spatial_pads(graph: Graph, op: OpInfo, kernel: tuple[int, int], dilation: tuple[int, int]
                  ) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for the op's padding option (0 SAME, 1 VALID)."""
    o = op.options
    if o["Padding"] == 1:
        return 0, 0, 0, 0
    _, h, w, _ = graph.tensors[op.inputs[0]].shape
    t, b = _same_pad(h, kernel[0], o["StrideH"], dilation[0])
    left, r = _same_pad(w, kernel[1], o["StrideW"], dilation[1])
    return t, b, left, r


def _activation(op: OpInfo) -> int:
    code = op.options.get("FusedActivationFunction", 0)
    if code not in _ACTIVATIONS:
        raise UnsupportedOperator(f"operator {op.index} {op.kind}: fused activation {code} "
                                  f"(supported: {sorted(_ACTIVATIONS.values())})")
    return code


def _const(graph: Graph, index: int, op: OpInfo) -> np.ndarray:
    data = graph.tensors[index].data
    if data is None:
        raise UnsupportedOperator(f"operator {op.index} {op.kind}: input {index} "
                                  f"({graph.tensors[index].name}) must be a constant")
    return data


def _conv(graph: Graph, op: OpInfo, slot: dict[int, int], out: int) -> Conv:
    o = op.options
    weight = _const(graph, op.inputs[1], op).astype(np.float32)
    bias = (_const(graph, op.inputs[2], op).astype(np.float32)
            if len(op.inputs) > 2 and op.inputs[2] >= 0 else None)
    cin = graph.tensors[op.inputs[0]].shape[3]
    if op.kind == "CONV_2D":
        cout, kh, kw, wcin = weight.shape
        if wcin != cin:
            raise UnsupportedOperator(f"operator {op.index} CONV_2D: grouped convolution "
                                      f"({cin} input channels, weights for {wcin})")
        w = weight.transpose(0, 3, 1, 2)               # [O, kh, kw, I] -> [O, I, kh, kw]
        groups = 1
    else:
        _, kh, kw, cout = weight.shape
        if cout != cin * o["DepthMultiplier"]:
            raise UnsupportedOperator(f"operator {op.index} DEPTHWISE_CONV_2D: {cout} outputs "
                                      f"for {cin} inputs x multiplier {o['DepthMultiplier']}")
        w = weight.transpose(3, 0, 1, 2)               # [1, kh, kw, C] -> [C, 1, kh, kw]
        groups = cin
    dilation = (o["DilationHFactor"], o["DilationWFactor"])
    t, b, left, r = _spatial_pads(graph, op, (kh, kw), dilation)
    symmetric = t == b and left == r
    conv = nn.Conv2d(cin, cout, (kh, kw), (o["StrideH"], o["StrideW"]),
                     padding=(t, left) if symmetric else 0, dilation=dilation, groups=groups,
                     bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
        if bias is not None:
            conv.bias.copy_(torch.from_numpy(bias))
    return Conv(slot[op.inputs[0]], out, conv, [] if symmetric else [left, r, t, b],
                _activation(op), graph.tensors[op.outputs[0]].name)


def _module(graph: Graph, op: OpInfo, slot: dict[int, int], out: int) -> nn.Module:
    """One operator as a module reading its inputs from `slot` and writing slot `out`."""
    src = slot.get(op.inputs[0], -1)
    in_shape = graph.tensors[op.inputs[0]].shape
    out_shape = graph.tensors[op.outputs[0]].shape
    o = op.options
    if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return _conv(graph, op, slot, out)
    if op.kind == "ADD":
        if any(i not in slot for i in op.inputs):
            raise UnsupportedOperator(f"operator {op.index} ADD with a constant operand")
        if graph.tensors[op.inputs[0]].shape != graph.tensors[op.inputs[1]].shape:
            raise UnsupportedOperator(f"operator {op.index} ADD with broadcasting")
        return Add(slot[op.inputs[0]], slot[op.inputs[1]], out, _activation(op))
    if op.kind == "PAD":
        amounts = _const(graph, op.inputs[1], op).reshape(-1, 2)
        if len(in_shape) != 4 or amounts[0].any():
            raise UnsupportedOperator(f"operator {op.index} PAD: only 4-D, never the batch axis")
        (t, b), (left, r), (c0, c1) = amounts[1], amounts[2], amounts[3]
        return Pad(src, out, [int(v) for v in (left, r, t, b, c0, c1)])
    if op.kind == "MAX_POOL_2D":
        kernel = [o["FilterHeight"], o["FilterWidth"]]
        t, b, left, r = _spatial_pads(graph, op, (kernel[0], kernel[1]), (1, 1))
        pad = [] if t == b == left == r == 0 else [left, r, t, b]
        return MaxPool(src, out, kernel, [o["StrideH"], o["StrideW"]], pad, _activation(op))
    if op.kind == "RESIZE_BILINEAR":
        if not o["AlignCorners"] and not o["HalfPixelCenters"]:
            raise UnsupportedOperator(f"operator {op.index} RESIZE_BILINEAR: legacy sampling "
                                      "(neither half-pixel centres nor aligned corners)")
        size = [int(v) for v in _const(graph, op.inputs[1], op)]
        return Resize(src, out, size, bool(o["AlignCorners"]))
    if op.kind == "RESHAPE":
        return Reshape(src, out, list(out_shape[1:]), len(in_shape) == 4, len(out_shape) == 4)
    if op.kind == "CONCATENATION":
        axis = o["Axis"] % len(out_shape)
        if len(out_shape) == 4:
            axis = _NHWC_TO_NCHW_AXIS[axis]
        return Concat([slot[i] for i in op.inputs], out, axis, _activation(op))
    if op.kind == "DEPTH_TO_SPACE":
        return DepthToSpace(src, out, o["BlockSize"])
    if op.kind == "LOGISTIC":
        return Sigmoid(src, out)
    raise UnsupportedOperator(f"operator {op.index} {op.kind} is not supported "
                              f"(supported: {', '.join(SUPPORTED)})")


_SHORT = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "dwconv", "ADD": "add", "PAD": "pad",
          "MAX_POOL_2D": "maxpool", "RESIZE_BILINEAR": "resize", "RESHAPE": "reshape",
          "CONCATENATION": "concat", "DEPTH_TO_SPACE": "depth_to_space", "LOGISTIC": "sigmoid"}


def _resolve(graph: Graph, key: int | str) -> TensorInfo:
    try:
        return graph.tensor(key)
    except KeyError as e:
        raise KeyError(f"cannot cut the graph at {key!r}: {e.args[0]}") from None


def convert(graph: Graph, outputs: list[int | str] | None = None) -> TFLiteModule:
    """Build the module computing `outputs` (tensor indices or names; default: the graph's).

    Only the operators those outputs need are built, so cutting at an intermediate tensor gives a
    trunk without the heads behind it.
    """
    wanted = [_resolve(graph, k).index for k in (outputs or list(graph.outputs))]
    if len(graph.inputs) != 1:
        raise UnsupportedOperator(f"graphs with {len(graph.inputs)} inputs; one is supported")
    (entry,) = graph.inputs
    producer = {t: op for op in graph.ops for t in op.outputs}
    for t in wanted:
        if t != entry and t not in producer:
            raise KeyError(f"tensor {t} ({graph.tensors[t].name}) is a constant, not a result")

    # The operators the outputs depend on, in graph order.
    needed: set[int] = set()
    stack = list(wanted)
    while stack:
        t = stack.pop()
        op = producer.get(t)
        if op is None or op.index in needed:
            continue
        needed.add(op.index)
        stack += [i for i in op.inputs if i >= 0 and graph.tensors[i].data is None]
    ops = [op for op in graph.ops if op.index in needed]
    for op in ops:  # (an unsupported kind is refused by _module, naming it)
        if len(op.outputs) != 1:
            raise UnsupportedOperator(f"operator {op.index} {op.kind} has {len(op.outputs)} "
                                      "outputs; one is supported")

    # Slots: a tensor's slot is free again after its last reader (outputs are never freed).
    last_use = {i: k for k, op in enumerate(ops) for i in op.inputs}
    slot = {entry: 0}
    free: list[int] = []
    n_slots = 1
    modules = nn.ModuleDict()
    counts: dict[str, int] = {}
    for k, op in enumerate(ops):
        if free:
            out = free.pop()
        else:
            out, n_slots = n_slots, n_slots + 1
        module = _module(graph, op, slot, out)
        short = _SHORT[op.kind]
        modules[f"{short}_{counts.get(short, 0)}"] = module
        counts[short] = counts.get(short, 0) + 1
        slot[op.outputs[0]] = out
        for i in set(op.inputs):
            if i in slot and last_use.get(i) == k and i not in wanted:
                free.append(slot[i])
    return TFLiteModule(modules, n_slots, 0, [slot[t] for t in wanted],
                        [graph.tensors[t].name for t in wanted])
