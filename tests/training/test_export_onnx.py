"""model.onnx beside model.pt: the same contract, checked with ONNX Runtime."""

import json

import numpy as np
import onnx
import pytest
import torch

from posecontract import torchscript
from posecontract.layout import INPUT, OUTPUTS
from tests.training.test_export import _tiny_model
from training.export import (
    CARD_FILE,
    FLOAT16_COORD_TOLERANCE,
    ROUNDING_FACTOR,
    ROUNDING_FLOOR,
    main,
)
from training.export_onnx import OnnxParity, run_session, session

ONNX_TYPES = {onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.FLOAT: "TYPE_FP32"}


def _dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_onnx_file_declares_the_contract_with_a_dynamic_batch(tiny_onnx_exports):
    full, _ = tiny_onnx_exports
    assert full.onnx_path == full.model_path.with_name("model.onnx")
    model = onnx.load(str(full.onnx_path))
    onnx.checker.check_model(model, full_check=True)
    (inp,) = model.graph.input
    assert (inp.name, ONNX_TYPES[inp.type.tensor_type.elem_type]) == (INPUT.name, INPUT.dtype)
    batch, *item = _dims(inp)
    assert isinstance(batch, str) and tuple(item) == INPUT.dims  # named, so dynamic
    assert [(o.name, ONNX_TYPES[o.type.tensor_type.elem_type], tuple(_dims(o)[1:]))
            for o in model.graph.output] == [(s.name, s.dtype, s.dims) for s in OUTPUTS]
    assert all(_dims(o)[0] == batch for o in model.graph.output)
    # The card rides in the metadata, the same JSON as model.pt's.
    files = {CARD_FILE: ""}
    torch.jit.load(str(full.model_path), _extra_files=files)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta[CARD_FILE]) == json.loads(files[CARD_FILE])


def test_onnx_runtime_computes_the_model_at_any_batch(tiny_onnx_exports):
    full, _ = tiny_onnx_exports
    p = full.onnx_parity
    assert p.problem(ROUNDING_FACTOR, ROUNDING_FLOOR) is None
    assert 0 < p.eager_rounding and p.onnx_rounding <= max(ROUNDING_FACTOR * p.eager_rounding,
                                                           ROUNDING_FLOOR)
    sess = session(full.onnx_path, threads=1)
    scripted = torchscript.load(full.model_path)
    images = np.random.default_rng(3).integers(0, 256, (5, *INPUT.dims), np.uint8)
    with torch.inference_mode():
        want = [t.numpy() for t in scripted(torch.from_numpy(images))]
    for batch in (1, 2, 5):
        got = run_session(sess, images[:batch])
        for spec, g, w in zip(OUTPUTS, got, want, strict=True):
            assert g.dtype == np.float32 and g.shape == w[:batch].shape, spec.key
            # Two float32 runtimes, each within the export's bound of the float64 model.
            np.testing.assert_allclose(g, w[:batch], rtol=0, atol=2 * max(
                ROUNDING_FACTOR * p.eager_rounding, ROUNDING_FLOOR), err_msg=spec.key)
    # Item by item: batching does not change an item's result beyond float32 rounding.
    one = run_session(sess, images[3:4])
    five = run_session(sess, images)
    for a, b in zip(one, five, strict=True):
        np.testing.assert_allclose(a[0], b[3], rtol=0, atol=1e-5)


def test_float16_onnx_holds_half_weights_and_matches_float16_torchscript(tiny_onnx_exports):
    full, half = tiny_onnx_exports
    ratio = half.onnx_path.stat().st_size / full.onnx_path.stat().st_size
    assert 0.45 < ratio < 0.65
    model = onnx.load(str(half.onnx_path))
    halves = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    casts = {n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    assert halves and {i.name for i in halves} <= casts
    assert 0 < half.onnx_parity.float16_coord_diff <= FLOAT16_COORD_TOLERANCE
    images = np.random.default_rng(4).integers(0, 256, (2, *INPUT.dims), np.uint8)
    got32 = run_session(session(full.onnx_path), images)[0]
    got16 = run_session(session(half.onnx_path), images)[0]
    # Rounded, so not equal, and moved by float16's rounding only (the export's bound).
    assert 0 < np.abs(got16 - got32).max() <= FLOAT16_COORD_TOLERANCE


def test_parity_names_an_onnx_graph_that_is_not_the_model():
    good = OnnxParity(onnx_rounding=3e-6, eager_rounding=1e-6, vs_torchscript=2e-6)
    assert good.problem(ROUNDING_FACTOR, ROUNDING_FLOOR) is None
    bad = OnnxParity(onnx_rounding=0.2, eager_rounding=1e-6, vs_torchscript=0.2)
    assert "the ONNX graph is not the model" in bad.problem(ROUNDING_FACTOR, ROUNDING_FLOOR)


def test_export_command_writes_onnx_by_default_and_not_with_no_onnx(tmp_path, capsys):
    main(["--variant", "margipose-lite", "--repository", str(tmp_path / "a")])
    out = capsys.readouterr().out
    assert "model.onnx" in out and "ONNX Runtime" in out
    assert (tmp_path / "a" / "margipose-lite" / "1" / "model.onnx").is_file()
    main(["--variant", "margipose-lite", "--repository", str(tmp_path / "b"), "--no-onnx"])
    assert not (tmp_path / "b" / "margipose-lite" / "1" / "model.onnx").exists()
    assert (tmp_path / "b" / "margipose-lite" / "1" / "model.pt").is_file()


def test_evaluators_load_onnx_like_torchscript(tiny_onnx_exports):
    """margipose-eval and peers.compare_real2d take model.onnx where they take model.pt."""
    from peers.common import load_ours
    from training.export_onnx import load_exported

    full, _ = tiny_onnx_exports
    images = torch.from_numpy(
        np.random.default_rng(6).integers(0, 256, (2, *INPUT.dims), np.uint8))
    module, label = load_ours(full.onnx_path)
    assert label == "tiny (ours)"
    scripted = load_exported(full.model_path)
    with torch.inference_mode():
        want = scripted(images)
    got = module.eval()(images)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="ONNX models are evaluated with ONNX Runtime on the cpu"):
        load_exported(full.onnx_path, "cuda")


def test_onnx_beside_adds_model_onnx_to_a_shipped_model_pt(tmp_path, capsys):
    from training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = _tiny_model()
    save_checkpoint(tmp_path / "ck.pt", model, step=3, args={"train": ["synthetic-train"]})
    main(["--checkpoint", str(tmp_path / "ck.pt"), "--repository", str(tmp_path / "repo"),
          "--no-onnx", "--version", "2"])
    model_pt = tmp_path / "repo" / "tiny" / "2" / "model.pt"
    before = model_pt.read_bytes()
    main(["--checkpoint", str(tmp_path / "ck.pt"), "--onnx-beside", str(model_pt)])
    assert f"{model_pt.with_name('model.onnx')}" in capsys.readouterr().out
    assert model_pt.read_bytes() == before  # model.pt untouched
    files = {CARD_FILE: ""}
    torch.jit.load(str(model_pt), _extra_files=files)
    meta = {p.key: p.value for p in onnx.load(str(model_pt.with_name("model.onnx"))).metadata_props}
    assert meta[CARD_FILE] == files[CARD_FILE].decode()  # the same card, byte for byte
    assert (tmp_path / "repo" / "tiny-onnx" / "config.pbtxt").is_file()
    # Another checkpoint is not the one model.pt came from.
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "other.pt", _tiny_model(), step=1, args={})
    with pytest.raises(RuntimeError, match="is not this checkpoint's export"):
        main(["--checkpoint", str(tmp_path / "other.pt"), "--onnx-beside", str(model_pt)])
    with pytest.raises(SystemExit, match="--onnx-beside needs the --checkpoint"):
        main(["--variant", "margipose-lite", "--onnx-beside", str(model_pt)])
