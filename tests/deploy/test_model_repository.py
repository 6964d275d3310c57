"""The committed model_repository/: every config.pbtxt is the one the export contract renders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from posecontract.layout import INPUT, outputs_named
from posecontract.triton import (
    ServingOptions,
    config_outputs,
    render_config,
    render_cpu_twin_config,
    render_onnx_config,
)
from service.cpus import cgroup_cpu_limit, spare_cpu_threads
from tests.service.test_runtimes import RUNTIME_TOLERANCE

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
# The pose models' configs and files; the person detector's are tested in test_person_detector.
DETECTOR_MODELS = ("person-detector", "person-detector-onnx")
CONFIGS = sorted(p for p in REPOSITORY.glob("*/config.pbtxt")
                 if p.parent.name not in DETECTOR_MODELS)


def test_the_default_model_has_a_production_config():
    assert REPOSITORY / "margipose-lite" / "config.pbtxt" in CONFIGS


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.parent.name)
def test_committed_config_is_rendered_from_the_contract(config):
    name = config.parent.name
    onnx = 'platform: "onnxruntime_onnx"' in config.read_text()
    # Not hand-edited: byte for byte what `margipose-export` writes for this model.
    render = render_onnx_config if onnx else render_config
    # The outputs are those of the model Triton loads (the newest version): five, or six with
    # the visibility head (margipose-lite 4 on).
    outputs = config_outputs(config.read_text())
    assert config.read_text() == render(name, ServingOptions(), outputs=outputs)
    parsed = text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())
    assert parsed.name == name
    assert parsed.platform == ("onnxruntime_onnx" if onnx else "pytorch_libtorch")
    if name.endswith("-onnx"):  # each version is the torch model's folder, linked: one
        # model.onnx, stored once
        torch_model = name.removesuffix("-onnx")
        versions = sorted(p for p in config.parent.iterdir() if p.name.isdigit())
        assert versions and all(
            p.is_symlink() and os.readlink(p) == f"../{torch_model}/{p.name}"
            and (p / "model.onnx").is_file() for p in versions)
    assert [i.name for i in parsed.input] == [INPUT.name]
    assert [o.name for o in parsed.output] == [s.name for s in outputs]
    newest = max((p for p in config.parent.iterdir() if p.name.isdigit()),
                 key=lambda p: int(p.name))
    assert [o.name for o in parsed.output] == _card_outputs(newest)
    assert parsed.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


def _card_outputs(version: Path) -> list[str]:
    """The output names a version's model card lists (model.pt's extra file, else model.onnx's
    metadata)."""
    import json

    import onnx
    import torch

    if (version / "model.pt").is_file():
        files = {"model.json": ""}
        torch.jit.load(str(version / "model.pt"), _extra_files=files)
        text = files["model.json"]
    else:
        meta = onnx.load(str(version / "model.onnx"), load_external_data=False).metadata_props
        text = {p.key: p.value for p in meta}["model.json"]
    return [o["name"] for o in json.loads(text)["outputs"]]


# Each model once: the `<name>-onnx` version folders are links to `<name>`'s.
MODELS = sorted(p for p in REPOSITORY.glob("*/*/model.pt")
                if not p.parent.is_symlink() and p.parents[1].name not in DETECTOR_MODELS)


@pytest.mark.parametrize("path", MODELS, ids=lambda p: f"{p.parents[1].name}/{p.parent.name}")
def test_committed_model_honours_the_contract(path):
    """The shipped TorchScript: the layout's outputs, a card naming what trained it."""
    import json

    import torch

    files = {"model.json": ""}
    model = torch.jit.load(str(path), _extra_files=files)
    card = json.loads(files["model.json"])
    assert card["name"] == path.parents[1].name
    assert card["version"] == int(path.parent.name)
    if card["model_config"]["trunk"].startswith("blazepose"):
        # Converted third-party weights: the card names their source, version and licence.
        trunk = card["trunk_weights"]
        assert trunk["licence"] == "Apache-2.0" and trunk["sha256"] and trunk["source"]
    assert card["training"]["train"], "the card must say which data trained the weights"
    assert path.stat().st_size <= 25 * 2**20
    images = torch.zeros((2, *INPUT.dims), dtype=torch.uint8)
    with torch.inference_mode():
        outputs = model(images)
    specs = outputs_named(o["name"] for o in card["outputs"])
    assert [tuple(t.shape[1:]) for t in outputs] == [tuple(s.dims) for s in specs]
    coords = outputs[0]
    assert torch.isfinite(coords).all() and coords.abs().max() <= 1


# model.onnx beside model.pt: the same model for another runtime. Alone: a model of its own
# (int8, `margipose-quantize`).
ONNX_MODELS = sorted(p for p in REPOSITORY.glob("*/*/model.onnx")
                     if not p.parent.is_symlink() and p.with_name("model.pt").is_file()
                     and p.parents[1].name not in DETECTOR_MODELS)
INT8_MODELS = sorted(p for p in REPOSITORY.glob("*/*/model.onnx")
                     if not p.parent.is_symlink() and not p.with_name("model.pt").is_file())
# Real person crops: the committed photos, each cut to a square around its middle.
PHOTOS = sorted(Path(REPOSITORY.parent, "data", "photos").glob("*.jpg"))
# Two float32 runtimes, each within the export's bound of the float64 model (eager float32's own
# error is 3.8e-6 for version 2): tests/service/test_runtimes.py's tolerance.


def _photo_crops():
    import numpy as np
    from PIL import Image

    crops = []
    for path in PHOTOS:
        image = Image.open(path).convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        crop = image.crop((left, top, left + side, top + side)).resize((256, 256))
        crops.append(np.asarray(crop).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(crops))


def test_the_default_model_ships_as_onnx_too():
    assert REPOSITORY / "margipose-lite-onnx" / "config.pbtxt" in CONFIGS
    latest = max((p for p in MODELS if p.parents[1].name == "margipose-lite"),
                 key=lambda p: int(p.parent.name))
    assert latest.with_name("model.onnx") in ONNX_MODELS


@pytest.mark.parametrize("path", ONNX_MODELS,
                         ids=lambda p: f"{p.parents[1].name}/{p.parent.name}")
def test_committed_onnx_computes_what_its_model_pt_computes(path):
    """On real crops, ONNX Runtime on model.onnx = torch on model.pt; one card for both."""
    import json

    import numpy as np
    import onnx
    import torch

    from posecontract import torchscript
    from training.export_onnx import run_session, session

    assert len(PHOTOS) >= 5
    files = {"model.json": ""}
    scripted = torchscript.load(path.with_name("model.pt"), "cpu", files)
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert json.loads(meta["model.json"]) == json.loads(files["model.json"])
    assert path.stat().st_size <= 25 * 2**20
    images = _photo_crops()
    with torch.inference_mode():
        want = [t.numpy() for t in scripted(torch.from_numpy(images))]
    got = run_session(session(path, threads=2), images)
    card = json.loads(files["model.json"])
    tolerance = RUNTIME_TOLERANCE
    if card.get("weight_storage", {}).get("dtype") == "float16":
        # Two float16 roundings of one float32 model: TorchScript rounds the frozen graph's
        # constants (BatchNorm folded by freezing), ONNX its initializers (folded by the
        # exporter), so the files hold slightly different weights. The export measured how far
        # TorchScript's rounding moves the coordinates (the card's figure, 0.0015 for version 3)
        # and checked ONNX's against the float32 model too; two such roundings are allowed
        # twice the card's figure apart (measured here for version 3: 2.8e-4).
        tolerance = 2 * card["weight_storage"]["max_coord_diff_vs_float32"]
    for spec, g, w in zip(outputs_named(o["name"] for o in card["outputs"]), got, want,
                          strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=tolerance, err_msg=spec.key)


@pytest.mark.parametrize("render", [render_config, render_cpu_twin_config])
def test_intra_op_threads_render_as_the_backends_parameter(render):
    parsed = text_format.Parse(render("m", ServingOptions(intra_op_threads=3)),
                               model_config_pb2.ModelConfig())
    assert parsed.parameters["INTRA_OP_THREAD_COUNT"].string_value == "3"
    # Left out by default: the committed production config stays byte for byte the same.
    parsed = text_format.Parse(render("m", ServingOptions()), model_config_pb2.ModelConfig())
    assert "INTRA_OP_THREAD_COUNT" not in parsed.parameters
    with pytest.raises(ValueError, match="intra_op_threads must be >= 0"):
        render("m", ServingOptions(intra_op_threads=-1))


@pytest.mark.parametrize(("cpus", "limit", "threads"), [
    ({0}, None, 1), ({0, 1}, None, 1), (set(range(16)), None, 15),
    (set(range(16)), 2.5, 2),  # a container's quota of 2.5 CPUs: 3 to share, 2 for torch
    ({0, 1}, 8.0, 1),  # a quota above the CPUs it may run on changes nothing
])
def test_spare_cpu_threads_leaves_one_cpu_to_the_gateway(monkeypatch, cpus, limit, threads):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: cpus)
    monkeypatch.setattr("service.cpus.cgroup_cpu_limit", lambda: limit)
    assert spare_cpu_threads() == threads


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_cpu_limit_reads_v2_then_v1(tmp_path):
    v2 = tmp_path / "v2"
    _write(v2 / "pod" / "cpu.max", "250000 100000\n")
    _write(v2 / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(v2, own="/pod") == 2.5  # the process's own group first
    assert cgroup_cpu_limit(v2, own="/") is None  # "max": unlimited
    assert cgroup_cpu_limit(v2, own="/elsewhere") is None  # no file there: the root's
    v1 = tmp_path / "v1"
    _write(v1 / "cpu" / "cpu.cfs_quota_us", "150000\n")
    _write(v1 / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(v1, own="/") == 1.5
    _write(v1 / "cpu" / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_limit(v1, own="/") is None
    assert cgroup_cpu_limit(tmp_path / "none", own="/") is None


def test_every_committed_model_file_is_tested():
    from tests.deploy.test_person_detector import detector_files

    onnx_files = {p for p in REPOSITORY.glob("*/*/model.onnx") if not p.parent.is_symlink()}
    assert onnx_files == set(ONNX_MODELS) | set(INT8_MODELS) | {
        p for p in detector_files() if p.suffix == ".onnx"}
    pt_files = {p for p in REPOSITORY.glob("*/*/model.pt") if not p.parent.is_symlink()}
    assert pt_files == set(MODELS) | {p for p in detector_files() if p.suffix == ".pt"}


@pytest.mark.parametrize("path", INT8_MODELS, ids=lambda p: f"{p.parents[1].name}/{p.parent.name}")
def test_committed_int8_model_is_its_float_sources_model_quantized(path):
    """An int8 model: its card says what it was quantized from and on which (training) crops,
    it fits the size limit, and on real crops it computes its float source's function up to
    int8's error."""
    import json

    import numpy as np
    import onnx

    from training.export_onnx import run_session, session
    from training.quantize import parse_calibration

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    card = json.loads(meta["model.json"])
    quant = card["quantization"]
    parse_calibration(quant["calibration_sources"])  # training splits only, or it raises
    source = REPOSITORY.parent / quant["source"]
    assert source.is_file() and source.parent.parent.parent == REPOSITORY
    assert path.stat().st_size <= 25 * 2**20
    assert {n.op_type for n in onnx.load(str(path)).graph.node} >= {"QuantizeLinear",
                                                                     "DequantizeLinear"}
    images = _photo_crops()
    got = run_session(session(path, threads=2), images)
    want = run_session(session(source, threads=2), images)
    for spec, g in zip(outputs_named(o["name"] for o in card["outputs"]), got, strict=True):
        assert g.shape == (len(images), *spec.dims) and np.isfinite(g).all(), spec.key
    coords = np.abs(got[0] - want[0])
    # Measured on these crops (AVX-512 VNNI, ONNX Runtime and OpenVINO alike): 0.038 mean,
    # 0.023 median of the crop's half-width; another trained model (version 3) is 0.126 / 0.069
    # from the int8 one. int8 kernels differ between CPUs (without VNNI, ONNX Runtime's u8s8
    # products can saturate), so the bound allows about twice the measured error while staying
    # below what a different model gives.
    assert coords.mean() < 0.08 and np.median(coords) < 0.05, (coords.mean(), np.median(coords))
    for maps in got[2:]:  # the heatmaps stay distributions (float softmax)
        np.testing.assert_allclose(maps.sum(axis=(-2, -1)), 1, rtol=0, atol=1e-4)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("path", INT8_MODELS, ids=lambda p: f"{p.parents[1].name}/{p.parent.name}")
def test_the_gateway_serves_the_committed_int8_model(path, runtime):
    """`serve --model-name <int8 model> --runtime onnxruntime|openvino` answers real photos and
    says which model answered. (How closely int8 follows float32 is the test above, on crops
    around people: on these whole images, people small or cut, the two differ by 0.06-0.14 of
    the crop's half-width on average, as uncertain inputs amplify int8's rounding.)"""
    import httpx
    import numpy as np

    from service.settings import Settings
    from tests.service.conftest import RunningServer, free_port

    name = path.parents[1].name
    settings = Settings(model_repository=REPOSITORY, model_name=name, runtime=runtime,
                        torch_threads=1, port=free_port(), grpc_port=free_port())
    answered = 0
    with RunningServer(settings) as server, httpx.Client(base_url=server.url,
                                                         timeout=60) as client:
        for photo in PHOTOS:
            r = client.post("/v1/predict", content=photo.read_bytes(),
                            headers={"Content-Type": "image/jpeg"})
            assert r.status_code == 200, r.text
            answer = r.json()
            assert answer["model"]["name"] == name
            assert answer["model"]["version"] == path.parent.name  # a string in the API
            # The person detector finds the people (in frame 225 nobody: the man is hidden).
            for person in answer["persons"]:
                joints = np.array([j["normalised"] for j in person["joints"]])
                assert joints.shape == (17, 3) and np.isfinite(joints).all()
                assert np.abs(joints).max() <= 1
                answered += 1
    assert answered >= len(PHOTOS)
