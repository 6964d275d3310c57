"""A training checkpoint rebuilt from an exported model.onnx (training/recover.py)."""

import pytest
import torch
from torch import nn

from training.checkpoint import load_checkpoint
from training.engine import normalise_images
from training.export import calibrate_batchnorm, export
from training.export_onnx import load_exported
from training.model import ModelConfig, build_model
from training.recover import (
    _channel_norms,
    _conv_before,
    _fresh_norms,
    load_folded,
    main,
    restat,
)

# The recovered model computes in float32 what ONNX Runtime computes in float32 from the same
# weights, in another order: normalised coordinates (range about [-1, 1]) agree to float32
# rounding carried through two stages of heads, far below this bound; a wrong weight moves
# them by 1e-2 or more (checked below by perturbing one folded bias).
COORD_TOL = 1e-3


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small model with the in-view head, calibrated, exported with float16 weights."""
    torch.manual_seed(1)
    model = build_model(ModelConfig(n_stages=2, feat_channels=16, mid_channels=32, name="tiny",
                                    visibility=True), pretrained=False)
    calibrate_batchnorm(model, batches=1, batch_size=2)
    with torch.no_grad():  # a head that is not all zeros, and a calibration to carry over
        model.visibility.local.normal_(0, 0.5)
        model.visibility.context.normal_(0, 0.5)
        model.visibility.temperature.fill_(1.3)
        model.visibility.offset.copy_(torch.linspace(-0.5, 0.5, 17))
    root = tmp_path_factory.mktemp("recover")
    export(model, root, "tiny", version=1, onnx=True, weights="float16")
    return root / "tiny" / "1" / "model.onnx", model


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 256, 256), dtype=torch.uint8, generator=g)


def _outputs(model, images):
    with torch.no_grad():
        coords, _, logits = model(normalise_images(images, model))
    return coords, torch.sigmoid(logits)


def test_recovered_model_computes_the_export(exported):
    path, original = exported
    model, card, folded = load_folded(path)
    assert card["name"] == "tiny" and model.cfg == original.cfg
    # the export folds every BatchNorm; each one is recovered
    assert len(folded) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
    images = _images(3, 5)
    shipped = load_exported(path)(images)
    coords, vis = _outputs(model, images)
    assert (coords - shipped[0]).abs().max() < COORD_TOL
    assert (vis - shipped[5]).abs().max() < COORD_TOL
    # the calibration travels: temperature and offsets are the exported ones
    assert model.visibility.temperature.item() == pytest.approx(1.3)
    torch.testing.assert_close(model.visibility.offset, torch.linspace(-0.5, 0.5, 17))
    # and the check can fail: one wrong folded bias moves the coordinates
    bn = model.get_submodule(folded[0])
    with torch.no_grad():
        bn.bias.add_(1.0)
    moved, _ = _outputs(model, images)
    assert (moved - shipped[0]).abs().max() > 10 * COORD_TOL


def test_restat_keeps_eval_and_makes_train_mode_agree(exported):
    path, _ = exported
    model, _, folded = load_folded(path)
    images = _images(4, 6)
    before, vis_before = _outputs(model, images)
    restat(model, folded, images, batch=4)
    after, vis_after = _outputs(model, images)
    assert (after - before).abs().max() < COORD_TOL
    assert (vis_after - vis_before).abs().max() < COORD_TOL
    bn = model.get_submodule(folded[-1])
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    # every folded convolution is back at a fresh layer's weight scale, channel by channel
    fresh = _fresh_norms(model, [_conv_before(model, n) for n in folded])
    for name in folded:
        conv = _conv_before(model, name)
        norms = _channel_norms(model.get_submodule(conv))
        torch.testing.assert_close(norms, torch.full_like(norms, fresh[conv]), rtol=1e-5,
                                   atol=0)
    # in train mode, a batch whose statistics are the measured ones normalises as in eval
    model.train()
    trained, _ = _outputs(model, images)
    model.eval()
    # the running variance is unbiased, a batch's is not: (n - 1) / n of the spread on
    # 4 x 64 x 64 positions is 4e-6, so train and eval agree to float32 rounding as above
    assert (trained - before).abs().max() < 10 * COORD_TOL


def test_command_writes_a_checkpoint_training_loads(exported, tmp_path, capsys):
    path, _ = exported
    out = tmp_path / "recovered.pt"
    extra = main(["--onnx", str(path), "--out", str(out)])
    assert "version 1" in capsys.readouterr().out
    model, payload = load_checkpoint(out)
    assert payload["recovered_from"]["onnx"] == str(path) and extra["recovered_from"]
    coords, _ = _outputs(model.eval(), _images(2, 7))
    shipped = load_exported(path)(_images(2, 7))
    assert (coords - shipped[0]).abs().max() < COORD_TOL


def test_sources_need_a_data_root(exported, tmp_path):
    path, _ = exported
    with pytest.raises(SystemExit, match="--data-root"):
        main(["--onnx", str(path), "--sources", "synthetic-train:4", "--out",
              str(tmp_path / "x.pt")])


def test_a_file_without_a_card_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ValueError, match="no model card"):
        load_folded(path)
