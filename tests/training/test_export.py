import json
import re

import pytest
import torch

from posecontract.layout import INPUT, OUTPUTS
from posecontract.triton import ServingOptions, render_config
from training.export import CARD_FILE, ServingModel, calibrate_batchnorm, export, main
from training.heatmaps import coord_spread
from training.model import ModelConfig, build_model


def _tiny_model():
    model = build_model(ModelConfig(n_stages=2, feat_channels=16, mid_channels=32, name="tiny"),
                        pretrained=False)
    calibrate_batchnorm(model, batches=1, batch_size=2)
    return model


def _config_tensors(text: str, section: str) -> list[tuple[str, str, tuple[int, ...]]]:
    block = re.search(section + r" \[(.*?)\n\]", text, re.S).group(1)
    found = re.findall(r'name: "(\w+)"\s+data_type: (\w+)\s+dims: \[ ([\d, ]+) \]', block)
    return [(n, t, tuple(int(d) for d in dims.split(","))) for n, t, dims in found]


def test_export_round_trip_matches_contract(tmp_path):
    model = _tiny_model()
    result = export(model, tmp_path, "tiny", version=3, card_extra={"source": "test"})
    assert result.model_path == tmp_path / "tiny" / "3" / "model.pt"
    assert result.max_abs_diff < 1e-4

    files = {CARD_FILE: ""}
    scripted = torch.jit.load(str(result.model_path), _extra_files=files)
    card = json.loads(files[CARD_FILE])
    assert card["name"] == "tiny" and card["version"] == 3 and card["source"] == "test"
    assert ModelConfig.from_dict(card["model_config"]) == model.cfg

    for batch in (1, 3):  # the batch dimension stays dynamic after scripting
        images = torch.randint(0, 256, (batch, *INPUT.dims), dtype=torch.uint8)
        with torch.inference_mode():
            outputs = scripted(images)
            eager = ServingModel(model)(images)
        assert len(outputs) == len(OUTPUTS)
        for spec, got, want in zip(OUTPUTS, outputs, eager, strict=True):
            assert tuple(got.shape) == (batch, *spec.dims), spec.key
            assert got.dtype == torch.float32
            assert (got - want).abs().max() < 1e-4, spec.key
        coords, std, xy, zy, xz = outputs
        assert torch.allclose(std, coord_spread(xy, zy, xz))

    # config.pbtxt states exactly the tensors the TorchScript file takes and returns.
    text = result.config_path.read_text()
    assert _config_tensors(text, "input") == [(INPUT.name, "TYPE_UINT8", tuple(INPUT.dims))]
    assert _config_tensors(text, "output") == [
        (spec.name, "TYPE_FP32", tuple(t.shape[1:]))
        for spec, t in zip(OUTPUTS, outputs, strict=True)
    ]
    assert 'platform: "pytorch_libtorch"' in text and "max_batch_size: 32" in text


class _Recorder(torch.nn.Module):
    """The model, keeping the inputs it was given."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.cfg, self.inputs = model, model.cfg, []

    def forward(self, x: torch.Tensor):
        self.inputs.append(x)
        return self.model(x)


def test_serving_model_normalises_like_the_config():
    # The served float32 arithmetic, (x - 255 mean) / (255 std), against the config's
    # (x / 255 - mean) / std in float64. Subtraction and division are correctly rounded on
    # every CPU, vectorised or not, so the gap is float32 rounding alone: of the two constants
    # and of two operations, a few ulps of |input| <= 2.7: below 4 * 2.7 * 2**-24 = 6.4e-7.
    model = _tiny_model().eval()
    recorder = _Recorder(model)
    serving = ServingModel(recorder).eval()
    images = torch.randint(0, 256, (2, *INPUT.dims), dtype=torch.uint8)
    images[0, :, 0, :] = torch.arange(256, dtype=torch.uint8)  # every value in every channel
    with torch.inference_mode():
        coords = serving(images)[0]
        direct = model(recorder.inputs[0])[0]
    got = recorder.inputs[0]
    assert got.dtype == torch.float32
    mean = torch.tensor(model.cfg.input_mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(model.cfg.input_std, dtype=torch.float64).view(1, 3, 1, 1)
    want = (images.double() / 255 - mean) / std
    assert float(want.abs().max()) < 2.7
    torch.testing.assert_close(got.double(), want, rtol=0, atol=6.4e-7)
    swapped = (images.double() / 255 - mean.flip(1)) / std.flip(1)
    assert float((got.double() - swapped).abs().max()) > 0.1  # a wrong normalisation shows
    assert torch.equal(coords, direct)  # and the served model is given exactly that input


def test_render_config_rejects_inconsistent_batching():
    with pytest.raises(ValueError, match="exceed max_batch_size 4"):
        render_config("m", ServingOptions(max_batch_size=4))


@pytest.mark.slow
def test_export_command_writes_a_loadable_lite_model(tmp_path, capsys):
    main(["--variant", "margipose-lite", "--repository", str(tmp_path), "--max-batch-size", "8"])
    out = capsys.readouterr().out
    assert "parity eager vs TorchScript: max abs diff" in out
    scripted = torch.jit.load(str(tmp_path / "margipose-lite" / "1" / "model.pt"))
    with torch.inference_mode():
        coords = scripted(torch.zeros(2, *INPUT.dims, dtype=torch.uint8))[0]
    assert coords.shape == (2, 17, 3) and torch.isfinite(coords).all()
    text = (tmp_path / "margipose-lite" / "config.pbtxt").read_text()
    assert "max_batch_size: 8" in text and "preferred_batch_size: [ 8 ]" in text


def test_export_command_puts_the_training_run_and_card_files_in_the_card(tmp_path, capsys):
    import json

    from training.checkpoint import save_checkpoint
    from training.export import calibrate_batchnorm
    from training.model import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(n_stages=1, feat_channels=16, mid_channels=32, name="tiny"),
                        pretrained=False)
    calibrate_batchnorm(model, batches=1, batch_size=2)  # as trained BN: parity within 1e-4
    save_checkpoint(tmp_path / "ck.pt", model, step=7, args={"train": ["synthetic-train"]})
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"evaluation": {"synthetic-test": {"mpjpe": 123.4}}}))
    main(["--checkpoint", str(tmp_path / "ck.pt"), "--repository", str(tmp_path / "repo"),
          "--card", str(results)])
    files = {"model.json": ""}
    torch.jit.load(str(tmp_path / "repo" / "tiny" / "1" / "model.pt"), _extra_files=files)
    card = json.loads(files["model.json"])
    assert card["training"] == {"train": ["synthetic-train"]} and card["step"] == 7
    assert card["evaluation"] == {"synthetic-test": {"mpjpe": 123.4}}
    results.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="expected a JSON object, got list"):
        main(["--checkpoint", str(tmp_path / "ck.pt"), "--repository", str(tmp_path / "r2"),
              "--card", str(results)])
