"""The TFLite -> torch converter on small hand-built graphs, against numpy written from TFLite's
definitions (NHWC). The real BlazePose models against the interpreter: test_blazepose.py."""

import numpy as np
import pytest
import torch

from training.tflite import UnsupportedOperator, convert
from training.tflite.graph import Graph, OpInfo, TensorInfo, densify

F32 = np.float32


def _graph(tensors: list[tuple[tuple[int, ...], np.ndarray | None]], ops: list[OpInfo],
           outputs: tuple[int, ...]) -> Graph:
    infos = tuple(TensorInfo(i, f"t{i}", shape, F32 if data is None else data.dtype.type, data)
                  for i, (shape, data) in enumerate(tensors))
    return Graph(infos, tuple(ops), (0,), outputs)


def _run(graph: Graph, x_nhwc: np.ndarray) -> list[np.ndarray]:
    net = convert(graph).double()
    with torch.no_grad():
        outs = net(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2))
    return [o.permute(0, 2, 3, 1).numpy() if o.ndim == 4 else o.numpy() for o in outs]


def _conv_same_nhwc(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """TF conv2d, padding SAME, straight from its definition: out size ceil(in / stride),
    total padding (out - 1) * stride + k - in, the smaller half before."""
    n, h, wd, _ = x.shape
    o, kh, kw, _ = w.shape
    oh, ow = -(-h // stride), -(-wd // stride)
    ph, pw = max((oh - 1) * stride + kh - h, 0), max((ow - 1) * stride + kw - wd, 0)
    xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = np.zeros((n, oh, ow, o))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.einsum("nhwc,ohwc->no", patch, w.astype(float)) + b
    return out


@pytest.mark.parametrize("size,stride,k", [(6, 2, 3), (6, 2, 5), (7, 2, 3), (6, 1, 3)])
def test_conv_same_padding_matches_tf_definition(size, stride, k):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, size, size, 3))
    # Weights exactly representable in float32 (the converter's parameter type).
    w = rng.normal(size=(4, k, k, 3)).astype(F32)
    b = rng.normal(size=4).astype(F32)
    out = (-(-size // stride),) * 2
    g = _graph([((2, size, size, 3), None), ((4, k, k, 3), w), ((4,), b), ((2, *out, 4), None)],
               [OpInfo(0, "CONV_2D", (0, 1, 2), (3,), {
                   "Padding": 0, "StrideH": stride, "StrideW": stride, "DilationHFactor": 1,
                   "DilationWFactor": 1, "FusedActivationFunction": 0})], (3,))
    (got,) = _run(g, x)
    np.testing.assert_allclose(got, _conv_same_nhwc(x, w, b, stride), rtol=1e-12, atol=1e-12)


def test_depthwise_relu6_pad_reshape_concat_follow_nhwc_semantics():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 4, 3)) * 5
    w = rng.normal(size=(1, 3, 3, 3)).astype(F32)
    b = rng.normal(size=3).astype(F32)
    pads = np.array([[0, 0], [1, 0], [0, 2], [0, 1]], dtype=np.int32)  # channel padding too
    g = _graph([
        ((2, 4, 4, 3), None), ((1, 3, 3, 3), w), ((3,), b),
        ((2, 4, 4, 3), None),                       # 3: depthwise + relu6
        ((4, 2), pads), ((2, 5, 6, 4), None),       # 5: padded
        ((2, 120), None),                           # 6: reshaped (NHWC order)
        ((2, 4, 4, 6), None),                       # 7: concat on channels
    ], [
        OpInfo(0, "DEPTHWISE_CONV_2D", (0, 1, 2), (3,), {
            "Padding": 0, "StrideH": 1, "StrideW": 1, "DilationHFactor": 1, "DilationWFactor": 1,
            "DepthMultiplier": 1, "FusedActivationFunction": 3}),
        OpInfo(1, "PAD", (3, 4), (5,)),
        OpInfo(2, "RESHAPE", (5,), (6,), {"NewShape": (2, 120)}),
        OpInfo(3, "CONCATENATION", (0, 3), (7,), {"Axis": -1, "FusedActivationFunction": 0}),
    ], (5, 6, 7))
    padded, flat, cat = _run(g, x)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    dw = np.zeros_like(x)
    for i in range(4):
        for j in range(4):
            patch = xp[:, i:i + 3, j:j + 3, :]
            dw[:, i, j, :] = np.einsum("nhwc,hwc->nc", patch, w[0].astype(float)) + b
    dw = np.clip(dw, 0, 6)
    want_pad = np.pad(dw, pads)
    np.testing.assert_allclose(padded, want_pad, atol=1e-12)
    np.testing.assert_allclose(flat, want_pad.reshape(2, 120), atol=1e-12)
    np.testing.assert_allclose(cat, np.concatenate([x, dw], axis=-1), atol=1e-12)


def test_depth_to_space_orders_channels_row_column_channel():
    x = np.arange(2 * 2 * 3 * 8, dtype=np.float64).reshape(2, 2, 3, 8)  # block 2 -> 2 channels
    g = _graph([((2, 2, 3, 8), None), ((2, 4, 6, 2), None)],
               [OpInfo(0, "DEPTH_TO_SPACE", (0,), (1,), {"BlockSize": 2})], (1,))
    (got,) = _run(g, x)
    want = np.zeros((2, 4, 6, 2))
    for i in range(2):
        for j in range(2):  # TF: out[h*2+i, w*2+j, c] = in[h, w, (i*2+j)*C + c]
            want[:, i::2, j::2, :] = x[:, :, :, (i * 2 + j) * 2:(i * 2 + j + 1) * 2]
    np.testing.assert_array_equal(got, want)


def test_densify_csr_level():
    # A 2x4 matrix, rows dense, columns CSR: row 0 has (1, 3), row 1 has (0).
    dense = densify(np.array([5.0, 6.0, 7.0]), (2, 4), (0, 1),
                    [("dense", 2, None, None),
                     ("csr", 0, np.array([0, 2, 3]), np.array([1, 3, 0]))])
    np.testing.assert_array_equal(dense, [[0, 5, 0, 6], [7, 0, 0, 0]])


def test_unsupported_operator_is_named():
    g = _graph([((1, 4), None), ((1, 4), None)], [OpInfo(0, "SOFTMAX", (0,), (1,))], (1,))
    with pytest.raises(UnsupportedOperator, match="operator 0 SOFTMAX is not supported"):
        convert(g)


def test_cut_at_unknown_tensor_is_named():
    g = _graph([((1, 2, 2, 1), None), ((1, 2, 2, 1), None)],
               [OpInfo(0, "LOGISTIC", (0,), (1,))], (1,))
    with pytest.raises(KeyError, match="no tensor named 'nope'"):
        convert(g, outputs=["nope"])
