"""The four BlazePose networks converted to torch against the TFLite interpreter (ai-edge-litert).

Needs the pinned .tflite files (`python -m training.blazepose fetch`); skips without them, fails
instead when MARGIPOSE_REQUIRE_BLAZEPOSE=1 (CI).

Tolerances come from the interpreter itself. It has two CPU kernel sets, XNNPACK (default) and
the reference kernels; both compute the same float32 graph, so their difference d on an output is
the size of float32 rounding there (measured on the committed photo: 4e-7 on the pose flag, 1e-3
on landmarks of up to 350 px, 0.4 on segmentation logits of up to 1.7e3). Our conversion run in
float64 is that graph's exact arithmetic up to float64 rounding, so it must sit within 3 d of
each kernel set; a wrong pad, layout or axis is off by the size of the values. Our float32 run
adds rounding of its own (other kernels, other summation order): within 3 d plus 1e-5 of the
output's range (~100 float32 ulps over a hundred layers) of XNNPACK. A saturated output (the
pose flag at exactly 1) has d = 0: there the range term alone applies.
"""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from training import blazepose
from training.tflite import read_graph

PHOTO = "data/photos/astronaut.jpg"


@pytest.fixture(scope="module")
def models_dir():
    try:
        for name in blazepose.MODELS:
            blazepose.model_path(name)
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except (blazepose.ModelsMissing, ImportError) as exc:
        if os.environ.get("MARGIPOSE_REQUIRE_BLAZEPOSE") == "1":
            pytest.fail(f"MARGIPOSE_REQUIRE_BLAZEPOSE=1 but {exc}")
        pytest.skip(str(exc))
    return blazepose.models_dir()


def _photo(name: str, batch: int = 1) -> np.ndarray:
    """The committed photo as the model's NHWC float32 input; items 2.. are flipped copies."""
    spec = blazepose.MODELS[name]
    img = Image.open(PHOTO).convert("RGB").resize((spec.input_size,) * 2, Image.BILINEAR)
    lo, hi = spec.input_range
    x = np.asarray(img, dtype=np.float32) / 255 * (hi - lo) + lo
    items = [x, x[:, ::-1], x[::-1], x.transpose(1, 0, 2)][:batch]
    return np.ascontiguousarray(np.stack(items))


def _interpreter(name: str, x: np.ndarray, reference_kernels: bool = False,
                 intermediate: str | None = None) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(blazepose.model_path(name)),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF
                     if reference_kernels else OpResolverType.AUTO,
                     experimental_preserve_all_tensors=intermediate is not None)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    if intermediate is not None:
        index = read_graph(blazepose.model_path(name)).tensor(intermediate).index
        return {intermediate: it.get_tensor(index)}
    return {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}


def _torch(net: torch.nn.Module, x: np.ndarray, dtype: torch.dtype) -> list[np.ndarray]:
    net = net.to(dtype).eval()
    with torch.no_grad():
        outs = net(torch.from_numpy(x).permute(0, 3, 1, 2).to(dtype))
    return [(o.permute(0, 2, 3, 1) if o.ndim == 4 else o).double().numpy() for o in outs]


@pytest.mark.parametrize("name", ["detector", "lite", "full", "heavy"])
def test_every_output_equals_the_interpreter(models_dir, name):
    x = _photo(name)
    xnn, ref = _interpreter(name, x), _interpreter(name, x, reference_kernels=True)
    net = blazepose.load(name)
    ours64, ours32 = _torch(net, x, torch.float64), _torch(net, x, torch.float32)
    assert net.output_names == list(xnn)
    for key, o64, o32 in zip(net.output_names, ours64, ours32, strict=True):
        a, r = xnn[key].astype(np.float64), ref[key].astype(np.float64)
        assert o64.shape == a.shape, key
        kernels = np.abs(a - r).max()
        scale = np.abs(a).max()
        for other in (a, r):
            assert np.abs(o64 - other).max() <= 3 * kernels + 1e-6 * scale, (key, kernels)
        assert np.abs(o32 - a).max() <= 3 * kernels + 1e-5 * scale, (key, kernels)


@pytest.mark.parametrize("trunk", sorted(blazepose.TRUNKS))
@pytest.mark.filterwarnings("ignore:Warning. Enabling `experimental_preserve_all_tensors`")
def test_trunk_cut_equals_the_interpreters_intermediate(models_dir, trunk):
    cut = blazepose.TRUNKS[trunk]
    x = _photo(cut.model)
    want = _interpreter(cut.model, x, intermediate=cut.tensor)[cut.tensor].astype(np.float64)
    ref = _interpreter(cut.model, x, reference_kernels=True,
                       intermediate=cut.tensor)[cut.tensor].astype(np.float64)
    net = blazepose.load_trunk(trunk)
    (got,) = _torch(net, x, torch.float64)
    assert got.shape == (1, cut.shape[1], cut.shape[2], cut.shape[0])
    kernels = np.abs(want - ref).max()
    assert np.abs(got - want).max() <= 3 * kernels + 1e-6 * np.abs(want).max()
    # The trunk holds only what the cut needs: far fewer operators than the whole network.
    assert len(net.ops) < len(blazepose.load(cut.model).ops)


@pytest.mark.parametrize("name", ["detector", "lite", "full", "heavy"])
def test_batch_items_equal_single_runs_and_script_equals_eager(models_dir, name):
    # float64: batching and scripting must not change the arithmetic beyond float64 rounding.
    net = blazepose.load(name).double().eval()
    x = torch.from_numpy(_photo(name, batch=3)).permute(0, 3, 1, 2).double()
    scripted = torch.jit.freeze(torch.jit.script(net))
    with torch.no_grad():
        batched, script_out = net(x), scripted(x)
        for i in range(3):
            for b, s in zip(net(x[i:i + 1]), batched, strict=True):
                torch.testing.assert_close(b[0], s[i], rtol=1e-9, atol=1e-9)
    for e, s in zip(batched, script_out, strict=True):
        torch.testing.assert_close(e, s, rtol=1e-9, atol=1e-9)


def test_gradients_reach_every_trunk_parameter(models_dir):
    trunk = blazepose.load_trunk("full-s8")
    x = torch.from_numpy(_photo("full", batch=2)).permute(0, 3, 1, 2)
    (features,) = trunk(x)
    features.square().mean().backward()
    missing = [n for n, p in trunk.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing
    assert all(n.startswith("ops.") for n, _ in trunk.named_parameters())
    assert max(len(n) for n, _ in trunk.named_parameters()) < 32  # readable: ops.dwconv_12.conv...


def test_a_changed_file_is_refused(tmp_path):
    spec = blazepose.MODELS["lite"]
    (tmp_path / spec.file).write_bytes(b"not the model")
    with pytest.raises(blazepose.ModelsMissing, match="is not the pinned"):
        blazepose.model_path("lite", tmp_path)
    with pytest.raises(blazepose.ModelsMissing, match="python -m training.blazepose fetch"):
        blazepose.model_path("full", tmp_path)
    with pytest.raises(KeyError, match="choose one of"):
        blazepose.load_trunk("huge-s8", tmp_path)


def test_margipose_on_the_blazepose_trunk(models_dir, tmp_path):
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.model import build_model, freeze, variant_config

    cfg = variant_config("margipose-blazepose-full")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.from_numpy(_photo("full", batch=2)).permute(0, 3, 1, 2)
    reference = blazepose.load_trunk("full-s8").eval()
    with torch.no_grad():
        # The body carries BlazePose's weights untouched; the adapter gives the heads' width.
        torch.testing.assert_close(model.trunk.body(x)[0], reference(x)[0], rtol=0, atol=0)
        assert model.trunk(x).shape == (2, cfg.feat_channels, 32, 32)
        coords, stages, _ = model(x)
    assert coords.shape == (2, 17, 3) and len(stages) == cfg.n_stages
    # Without `pretrained` the body is re-initialised.
    scratch = build_model(cfg, pretrained=False)
    assert not torch.equal(scratch.trunk.body.ops.conv_0.conv.weight,
                           reference.ops.conv_0.conv.weight)

    # --trunk-body-lr-scale: the converted body in its own, slower group; the rest at 1x.
    from training.train import parameter_groups

    groups = parameter_groups(model, 1e-4)
    body_ids = {id(p) for n, p in model.named_parameters() if n.startswith("trunk.body.")}
    assert {id(p) for p in groups[1]["params"]} == body_ids and groups[1]["lr_scale"] == 1e-4
    assert {id(p) for p in groups[0]["params"]}.isdisjoint(body_ids)
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))

    # Frozen body: only the adapter and the heads train.
    count = freeze(model, "trunk-body")
    body = {n for n, _ in model.named_parameters() if n.startswith("trunk.body.")}
    assert count == sum(p.numel() for n, p in model.named_parameters() if n in body) > 0
    assert all(p.requires_grad == (n not in body) for n, p in model.named_parameters())
    with pytest.raises(ValueError, match="needs a efficientnet-lite0 trunk"):
        freeze(model, "stride8")
    with pytest.raises(ValueError, match="whose body trains .*body frozen"):
        parameter_groups(model, 0.1)

    # The model card names the trunk's source, version and licence.
    from training.export import model_card

    card = model_card(model, "m", 1, {})["trunk_weights"]
    assert card["source"].endswith("blazepose_ghum_39kp_full_oss_2021_07_02")
    assert card["licence"] == "Apache-2.0" and "mediapipe==0.10.21" in card["file"]
    assert card["sha256"] == blazepose.MODELS["full"].sha256

    # A checkpoint rebuilds the model, fine-tuned trunk weights included.
    with torch.no_grad():
        model.trunk.body.ops.conv_0.conv.weight.add_(0.01)
    save_checkpoint(tmp_path / "ck.pt", model)
    loaded, _ = load_checkpoint(tmp_path / "ck.pt")
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded.eval()(x)[0])
