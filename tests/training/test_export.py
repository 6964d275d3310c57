import copy
import json
import re

import pytest
import torch

from posecontract.layout import INPUT, OUTPUTS
from posecontract.triton import ServingOptions, render_config
from training.export import (
    CARD_FILE,
    PARITY_TOLERANCE_F64,
    ROUNDING_FACTOR,
    ROUNDING_FLOOR,
    Parity,
    ServingModel,
    calibrate_batchnorm,
    export,
    main,
    script_and_check,
    to_torchscript,
)
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
    assert result.parity.problem() is None and result.parity.float64 < 1e-9
    assert result.max_abs_diff == result.parity.float32 > 0  # float32 folding does round
    exact = ServingModel(copy.deepcopy(model).double()).eval()
    # The served float32 outputs stay within the export's bound of the float64 function.
    bound = max(ROUNDING_FACTOR * result.parity.eager_rounding, ROUNDING_FLOOR)

    files = {CARD_FILE: ""}
    scripted = torch.jit.load(str(result.model_path), _extra_files=files)
    card = json.loads(files[CARD_FILE])
    assert card["name"] == "tiny" and card["version"] == 3 and card["source"] == "test"
    assert ModelConfig.from_dict(card["model_config"]) == model.cfg

    for batch in (1, 3):  # the batch dimension stays dynamic after scripting
        images = torch.randint(0, 256, (batch, *INPUT.dims), dtype=torch.uint8)
        with torch.inference_mode():
            outputs = scripted(images)
            want64 = exact(images)
        assert len(outputs) == len(OUTPUTS)
        for spec, got, want in zip(OUTPUTS, outputs, want64, strict=True):
            assert tuple(got.shape) == (batch, *spec.dims), spec.key
            assert got.dtype == torch.float32
            assert float((got.double() - want).abs().max()) <= bound, spec.key
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


class _RoundedOutputs(torch.nn.Module):
    """A serving wrapper that rounds its outputs through bfloat16 (CPU autocast's precision): a
    graph that lost precision, by up to 2**-8 relative (~4e-3 for outputs near 1), where
    float32 itself errs by 2e-6 to 4e-5.

    With `float32_only` a float64 model is left exact, as a float32-specific fault would be.
    """

    def __init__(self, model: torch.nn.Module, float32_only: bool) -> None:
        super().__init__()
        self.inner, self.float32_only = ServingModel(model), float32_only

    def forward(self, image: torch.Tensor):
        c, s, xy, zy, xz = self.inner(image)
        if self.float32_only and c.dtype != torch.float32:
            return c, s, xy, zy, xz
        bf16 = torch.bfloat16
        return (c.to(bf16).to(c.dtype), s.to(bf16).to(s.dtype), xy.to(bf16).to(xy.dtype),
                zy.to(bf16).to(zy.dtype), xz.to(bf16).to(xz.dtype))


def _rounded(float32_only: bool):
    return lambda m: torch.jit.freeze(torch.jit.script(_RoundedOutputs(m, float32_only).eval()))


def test_parity_tells_rounding_from_a_lost_or_changed_function():
    model = _tiny_model().eval()
    _, good = script_and_check(model)
    assert good.problem() is None
    assert good.float64 < 1e-9 < good.eager_rounding < 1e-3  # float32 rounds, float64 hardly
    _, lossy = script_and_check(model, _rounded(float32_only=True))
    assert lossy.float64 < 1e-9
    assert "the float32 graph lost precision" in lossy.problem()
    _, changed = script_and_check(model, _rounded(float32_only=False))
    assert changed.float64 > PARITY_TOLERANCE_F64
    assert "scripting or freezing changed the function" in changed.problem()
    other = build_model(model.cfg, pretrained=False)  # other weights: another function
    calibrate_batchnorm(other, batches=1, batch_size=2)
    _, wrong = script_and_check(model, lambda m: to_torchscript(other if m is model else
                                                               copy.deepcopy(other).double()))
    assert "changed the function" in wrong.problem()
    # The bound itself: ROUNDING_FACTOR x eager's error, or the floor.
    assert Parity(1e-4, 1e-14, 1e-5, 9.9e-5).problem() is None
    assert "lost precision" in Parity(1e-4, 1e-14, 1e-5, 1.01e-4).problem()
    assert Parity(1e-6, 1e-14, 1e-9, 0.99e-6).problem() is None


@pytest.mark.slow
def test_export_command_writes_a_loadable_lite_model(tmp_path, capsys):
    main(["--variant", "margipose-lite", "--repository", str(tmp_path), "--max-batch-size", "8",
          "--no-onnx"])
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
          "--card", str(results), "--no-onnx"])
    files = {"model.json": ""}
    torch.jit.load(str(tmp_path / "repo" / "tiny" / "1" / "model.pt"), _extra_files=files)
    card = json.loads(files["model.json"])
    assert card["training"] == {"train": ["synthetic-train"]} and card["step"] == 7
    assert card["evaluation"] == {"synthetic-test": {"mpjpe": 123.4}}
    results.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="expected a JSON object, got list"):
        main(["--checkpoint", str(tmp_path / "ck.pt"), "--repository", str(tmp_path / "r2"),
              "--card", str(results)])
