"""Exports with float16 weight storage: half the file, float32 arithmetic once loaded."""

import json

import pytest
import torch

from posecontract import torchscript
from posecontract.layout import INPUT
from tests.training.test_export import _tiny_model
from training.export import CARD_FILE, FLOAT16_COORD_TOLERANCE, export, main


def _constants(module, dtype):
    return [n for n in module.graph.findAllNodes("prim::Constant")
            if isinstance(n.output().type(), torch._C.TensorType)
            and n.output().toIValue().dtype == dtype]


def _casts(module):
    """Casts of constants (the model's own casts act on activations)."""
    return [n for n in module.graph.findAllNodes("aten::to")
            if next(n.inputs()).node().kind() == "prim::Constant"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("f16")
    # Seeded: an untrained net's flat heatmaps make its coordinates sensitive to rounding (its
    # float16 move ranges 1.5-3 px over seeds 0-5; a trained one's is 0.02 px on average).
    torch.manual_seed(0)
    model = _tiny_model()
    full = export(model, root, "tiny", version=1)
    half = export(model, root, "tiny", version=2, weights="float16")
    return full, half


def test_float16_storage_halves_the_file(exports):
    full, half = exports
    assert full.weights == "float32" and full.float16_coord_diff is None
    assert half.weights == "float16"
    # Weights dominate the file; the code, the card and small constants do not halve.
    assert 0.45 < half.size_bytes / full.size_bytes < 0.65
    files = {CARD_FILE: ""}
    raw = torch.jit.load(str(half.model_path), _extra_files=files)
    card = json.loads(files[CARD_FILE])
    assert card["weight_storage"] == {"dtype": "float16",
                                      "max_coord_diff_vs_float32": half.float16_coord_diff}
    # As saved: every weight a float16 constant with its cast; no float32 weight left behind.
    halves = _constants(raw, torch.float16)
    assert halves and len(_casts(raw)) == len(halves)
    assert all(n.output().toIValue().numel() < torchscript.MIN_ELEMENTS
               for n in _constants(raw, torch.float32))


def test_load_folds_the_casts_and_computes_what_the_file_says(exports):
    _, half = exports
    raw = torch.jit.load(str(half.model_path)).eval()
    loaded = torchscript.load(half.model_path)
    assert not _constants(loaded, torch.float16) and not _casts(loaded)
    images = torch.randint(0, 256, (3, *INPUT.dims), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        folded, unfolded = loaded(images), raw(images)
    # The fold computes the same float32 weights the per-call casts do; the convolutions then
    # see identical operands (a different kernel choice could reorder sums: float32 rounding).
    for a, b in zip(folded, unfolded, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_float16_weights_move_the_coordinates_by_float16_rounding_only(exports):
    full, half = exports
    images = torch.randint(0, 256, (4, *INPUT.dims), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        coords32 = torchscript.load(full.model_path)(images)[0]
        coords16 = torchscript.load(half.model_path)(images)[0]
    moved = float((coords16 - coords32).abs().max())
    # Not identical (float16 rounding moved the weights), and within the export's bound.
    assert 0 < moved <= FLOAT16_COORD_TOLERANCE
    assert 0 < half.float16_coord_diff <= FLOAT16_COORD_TOLERANCE


def test_a_float32_file_loads_unchanged(exports):
    full, _ = exports
    raw = torch.jit.load(str(full.model_path)).eval()
    loaded = torchscript.load(full.model_path)
    assert not _constants(raw, torch.float16)
    assert str(loaded.graph) == str(raw.graph)


def test_store_float16_needs_a_frozen_module():
    scripted = torch.jit.script(torch.nn.Conv2d(3, 64, 3)).eval()  # weights are attributes
    assert torchscript.store_float16(scripted) == 0


def test_export_refuses_an_unknown_weight_storage(tmp_path):
    with pytest.raises(ValueError, match="weights must be one of float32, float16, got 'int8'"):
        export(_tiny_model(), tmp_path, "tiny", weights="int8")


def test_export_command_takes_weights_float16(tmp_path, capsys):
    main(["--variant", "margipose-lite", "--repository", str(tmp_path), "--weights", "float16",
          "--no-onnx"])
    out = capsys.readouterr().out
    assert "float16 weights: coordinates moved by at most" in out
    files = {CARD_FILE: ""}
    torch.jit.load(str(tmp_path / "margipose-lite" / "1" / "model.pt"), _extra_files=files)
    assert json.loads(files[CARD_FILE])["weight_storage"]["dtype"] == "float16"
