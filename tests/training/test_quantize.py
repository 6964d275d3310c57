"""Static int8 quantization of model.onnx (training/quantize.py)."""

import json

import numpy as np
import onnx
import pytest

from posecontract.layout import INPUT, OUTPUTS
from tests.training.test_data_real2d import write_fixture
from training.export import CARD_FILE
from training.export_onnx import restore_float32, run_session, session
from training.quantize import (
    FOLDED_ACTIVATIONS,
    QUANTIZED_OPS,
    float_nodes,
    module_path,
    parse_calibration,
    quantize_command,
)


def test_calibration_sources_are_training_splits_only():
    assert parse_calibration(["real2d-train:200", "synthetic-train:5"]) == [
        ("real2d-train", 200), ("synthetic-train", 5)]
    for held_out in ("real2d-val:10", "synthetic-test:10", "mpi3d-test:3"):
        with pytest.raises(ValueError, match="is a held-out split"):
            parse_calibration([held_out])
    for bad in ("real2d-train", "real2d-train:0", "real2d-train:x"):
        with pytest.raises(ValueError, match="expected DATASET:COUNT"):
            parse_calibration([bad])


def test_restore_float32_undoes_float16_storage(tiny_onnx_exports):
    full, half = tiny_onnx_exports
    restored = restore_float32(onnx.load(str(half.onnx_path)))
    assert not [i for i in restored.graph.initializer
                if i.data_type == onnx.TensorProto.FLOAT16]
    assert not [n for n in restored.graph.node if n.name.endswith("__to_float32")]
    onnx.checker.check_model(restored)
    # The same function: float16-rounded values held as float32.
    images = np.random.default_rng(0).integers(0, 256, (2, *INPUT.dims), np.uint8)
    want = run_session(session(half.onnx_path), images)
    got = run_session(session(restored.SerializeToString()), images)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)
    # A float32 file comes back unchanged.
    plain = onnx.load(str(full.onnx_path))
    assert restore_float32(plain).SerializeToString() == plain.SerializeToString()


def test_quantize_command_writes_an_int8_model_of_its_own(tiny_onnx_exports, tmp_path, capsys):
    full, half = tiny_onnx_exports
    write_fixture(tmp_path / "data" / "real2d")
    repo = tmp_path / "repo"
    out = quantize_command(["--model", str(half.onnx_path), "--data-root", str(tmp_path / "data"),
                "--calibration", "real2d-train:4", "--repository", str(repo),
                "--name", "tiny-int8", "--version", "2"])
    assert out == repo / "tiny-int8" / "2" / "model.onnx"
    assert "calibrated on 4 crops" in capsys.readouterr().out
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8 = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    float_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT
                     and int(np.prod(i.dims)) >= 1024]
    assert int8 and not float_weights  # every convolution weight is int8
    # Weights a quarter of float32's; this small model's file is 42 %: the graph itself (a
    # QuantizeLinear/DequantizeLinear pair per tensor, their scales) weighs as much as the weights.
    assert out.stat().st_size < 0.5 * full.onnx_path.stat().st_size
    card = json.loads({p.key: p.value for p in model.metadata_props}[CARD_FILE])
    assert card["name"] == "tiny"
    assert card["quantization"]["ops"] == [*QUANTIZED_OPS, *FOLDED_ACTIVATIONS]
    assert card["quantization"]["calibration_sources"] == ["real2d-train:4"]
    assert card["quantization"]["calibration_crops"] == 4
    # It runs, with the contract's outputs; the heatmaps stay distributions (float softmax).
    images = np.random.default_rng(1).integers(0, 256, (3, *INPUT.dims), np.uint8)
    outputs = run_session(session(out), images)
    for spec, o in zip(OUTPUTS, outputs, strict=True):
        assert o.dtype == np.float32 and o.shape == (3, *spec.dims), spec.key
    np.testing.assert_allclose(outputs[2].sum(axis=(-2, -1)), 1, rtol=0, atol=1e-4)
    assert (repo / "tiny-int8" / "config.pbtxt").read_text().count('name: "tiny-int8"') == 1


def test_quantize_refuses_held_out_calibration(tiny_onnx_exports, tmp_path):
    full, _ = tiny_onnx_exports
    with pytest.raises(ValueError, match="real2d-val.*is a held-out split"):
        quantize_command(["--model", str(full.onnx_path), "--data-root", str(tmp_path),
              "--calibration", "real2d-val:4", "--name", "x"])


def test_keep_float_leaves_the_named_modules_convolutions_in_float(tiny_onnx_exports, tmp_path):
    full, _ = tiny_onnx_exports
    source = onnx.load(str(full.onnx_path))
    convs = [n for n in source.graph.node if n.op_type in QUANTIZED_OPS]
    paths = {n.name: module_path(n) for n in convs}
    # Every convolution is traced to its module; the model's three parts are all there.
    assert None not in paths.values()
    assert {p.split(".")[0] for p in paths.values()} == {"trunk", "first", "refine"}
    # A module's convolutions and the activations after them.
    assert float_nodes(source.graph, ["refine"]) == sorted(
        n.name for n in source.graph.node if n.op_type in QUANTIZED_OPS + FOLDED_ACTIVATIONS
        and (module_path(n) or "").startswith("refine."))
    assert set(float_nodes(source.graph, ["refine"])) > {
        n for n, p in paths.items() if p.startswith("refine.")}
    with pytest.raises(ValueError, match="no convolution of the model lies under heads"):
        float_nodes(source.graph, ["first", "heads"])
    with pytest.raises(ValueError, match="under firs\\b"):
        float_nodes(source.graph, ["firs"])  # whole path components, not string prefixes

    write_fixture(tmp_path / "data" / "real2d")
    out = quantize_command(["--model", str(full.onnx_path), "--data-root", str(tmp_path / "data"),
                            "--calibration", "real2d-train:4", "--repository",
                            str(tmp_path / "repo"), "--name", "tiny-int8",
                            "--keep-float", "first", "refine"])
    model = onnx.load(str(out))
    made_by = {o: n for n in model.graph.node for o in n.output}
    initializers = {i.name: i for i in model.graph.initializer}
    int8, kept = [], []
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OPS:
            continue
        weight = node.input[1]
        if weight in made_by and made_by[weight].op_type == "DequantizeLinear":
            int8.append(paths[node.name])
        else:
            assert initializers[weight].data_type == onnx.TensorProto.FLOAT, node.name
            kept.append(paths[node.name])
    assert int8 and all(p.startswith("trunk.") for p in int8)
    assert kept and all(p.split(".")[0] in ("first", "refine") for p in kept)
    assert len(int8) + len(kept) == len(convs)
    card = json.loads({p.key: p.value for p in model.metadata_props}[CARD_FILE])
    assert card["quantization"]["float_modules"] == ["first", "refine"]
    assert card["quantization"]["float_convolutions"] == len(kept)
