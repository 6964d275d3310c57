"""The Triton path against a real Triton: nvidia-pytriton's bundled `tritonserver` on loopback.

It serves the CPU twin (Python backend, same `model.pt`) of the session's tiny export twice: as
`tiny-pose` with the production batching, and as `tiny-pose-q1` with a queue of one request that
waits up to a second for a batch (so that one request parked there fills the queue on cue). The
gateway's core and REST app run over `TritonBackend`. Without `.venv-triton` (`make triton-env`)
the server tests skip, and fail instead when MARGIPOSE_REQUIRE_TRITON=1 (CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from google.protobuf import text_format
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import model_config_pb2

from deploy.triton_server import TritonServer, missing_reason
from posecontract.detection import (
    DETECTOR_CONTRACT,
    DETECTOR_NAME,
    window_batch,
    write_detector_twin,
)
from posecontract.layout import INPUT
from posecontract.torchscript import float16_constants
from posecontract.triton import (
    ServingOptions,
    onnx_model_name,
    render_onnx_config,
    write_cpu_twin,
)
from service.backends.local import LocalBackend
from service.backends.triton import TritonBackend
from service.core import PoseService
from service.errors import BackendUnavailable, DeadlineExceeded
from service.options import Box, PredictOptions
from service.settings import Settings
from tests.conftest import FIXTURE_OUTPUTS
from tests.service.conftest import RunningServer, torch_free_gateway
from tests.service.test_runtimes import RUNTIME_TOLERANCE

from .conftest import MODEL_NAME, free_port, jpeg_bytes, run

PRODUCTION = Path(__file__).resolve().parents[2] / "model_repository"
PHOTO = PRODUCTION.parent / "data" / "photos" / "sports2d_frame075.jpg"
QUEUE_MODEL = "tiny-pose-q1"
FLOAT16_MODEL = "tiny-pose-f16"  # the same weights stored as float16 (export --weights float16)
ONNX_TWIN = "tiny-pose-onnx-twin"  # model.onnx run by ONNX Runtime in the Python backend
# One request parks in the queue for up to a second waiting for a batch of 4; a second is refused.
QUEUE_OPTIONS = ServingOptions(max_batch_size=4, preferred_batch_sizes=(4,),
                               max_queue_delay_us=1_000_000, max_queue_size=1,
                               warmup_batch_sizes=(1,))
# Triton vs embedded run the same TorchScript with the same torch, one intra-op thread each,
# on the same batches: the same kernels (their raw outputs agreed bit for bit on our machine).
# The thread count and the batch split alone move this untrained model's float32 outputs by up
# to 3e-5 (measured under four ATen/oneDNN dispatch settings), so they are held equal rather
# than the tolerances widened.
COORD_TOLERANCE = 1e-4  # normalised coordinates (crop half-width = 1), Triton vs embedded
BOX_TOLERANCE_PX = 0.01  # the auto-crop box (pixels), from pass 1's coordinates
OUTPUT_TOLERANCE = 1e-5  # raw outputs
COUNTERS = ("nv_inference_count", "nv_inference_exec_count")  # Triton's items, executions
TORCH_DTYPES = {torch.float32: "TYPE_FP32", torch.uint8: "TYPE_UINT8"}


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    """A config.pbtxt through Triton's own protobuf schema (unknown fields are rejected)."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_production_config_matches_the_export_and_its_twin(model_repository, tmp_path):
    production = parse_config(model_repository / MODEL_NAME / "config.pbtxt")
    assert production.name == MODEL_NAME and production.platform == "pytorch_libtorch"
    assert production.max_batch_size == 32
    assert production.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert production.dynamic_batching.default_queue_policy.max_queue_size > 0
    assert {"INFERENCE_MODE", "ENABLE_JIT_PROFILING"} <= set(production.parameters)

    # The exported module's real input and outputs, per item (the batch dimension is implicit).
    model = torch.jit.load(str(model_repository / MODEL_NAME / "1" / "model.pt"))
    images = torch.zeros((2, *INPUT.dims), dtype=torch.uint8)
    with torch.inference_mode():
        outputs = model(images)
    (expected_input,) = production.input
    assert expected_input.name == INPUT.name
    assert tuple(expected_input.dims) == tuple(images.shape[1:])
    assert model_config_pb2.DataType.Name(expected_input.data_type) == TORCH_DTYPES[images.dtype]
    real = [(f"OUTPUT__{k}", tuple(t.shape[1:]), TORCH_DTYPES[t.dtype])
            for k, t in enumerate(outputs)]
    declared = [(o.name, tuple(o.dims), model_config_pb2.DataType.Name(o.data_type))
                for o in production.output]
    assert declared == real
    assert [o.name for o in production.output] == [s.name for s in FIXTURE_OUTPUTS]

    twin_dir = write_cpu_twin(model_repository, MODEL_NAME, tmp_path / "twin")
    twin = parse_config(twin_dir / "config.pbtxt")
    assert twin.backend == "python" and not twin.platform and not twin.parameters
    assert twin.name == production.name and twin.max_batch_size == production.max_batch_size
    assert list(twin.input) == list(production.input)
    assert list(twin.output) == list(production.output)
    assert twin.dynamic_batching == production.dynamic_batching
    assert twin.version_policy == production.version_policy
    assert list(twin.model_warmup) == list(production.model_warmup)
    (group,) = twin.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert (twin_dir / "1" / "model.pt").resolve() == \
        (model_repository / MODEL_NAME / "1" / "model.pt").resolve()
    assert (twin_dir / "1" / "model.py").is_file()
    with pytest.raises(ValueError, match="must not lie inside"):
        write_cpu_twin(model_repository, MODEL_NAME, model_repository / "twin")


@pytest.fixture(scope="module")
def triton(model_repository, float16_repository, tmp_path_factory) -> Iterator[TritonServer]:
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("MARGIPOSE_REQUIRE_TRITON") == "1":
            pytest.fail(f"MARGIPOSE_REQUIRE_TRITON=1 but no Triton here: {reason}")
        pytest.skip(f"no real Triton: {reason}")
    twin = tmp_path_factory.mktemp("twin_repository")  # beside model_repository, not inside
    # The production options but one warm-up batch (the CPU takes seconds for a batch of 32),
    # and one torch thread, as `make stack` gives a 2-CPU machine.
    write_cpu_twin(model_repository, MODEL_NAME, twin,
                   ServingOptions(warmup_batch_sizes=(1,), intra_op_threads=1))
    write_cpu_twin(model_repository, MODEL_NAME, twin, QUEUE_OPTIONS, served_name=QUEUE_MODEL)
    write_cpu_twin(float16_repository, MODEL_NAME, twin,
                   ServingOptions(warmup_batch_sizes=(1,), intra_op_threads=1),
                   served_name=FLOAT16_MODEL)
    write_cpu_twin(model_repository, MODEL_NAME, twin,
                   ServingOptions(warmup_batch_sizes=(1,), intra_op_threads=1),
                   served_name=ONNX_TWIN, runtime="onnxruntime")
    # The committed person detector, as the second model of the same server.
    write_detector_twin(PRODUCTION, twin, intra_op_threads=1)
    server = TritonServer(twin, tmp_path_factory.mktemp("tritonserver"),
                          (MODEL_NAME, QUEUE_MODEL, FLOAT16_MODEL, ONNX_TWIN, DETECTOR_NAME))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def gateway_settings(triton: TritonServer, **overrides) -> Settings:
    values = dict(backend="triton", triton_url=triton.grpc_url, model_name=MODEL_NAME,
                  port=free_port(), max_batch_size=8,
                  max_body_bytes=2_000_000, max_image_pixels=4_000_000, max_persons=4)
    return Settings(**{**values, **overrides})


@contextlib.contextmanager
def rest_gateway(settings: Settings) -> Iterator[httpx.Client]:
    """The real gateway (`service.gateway.Gateway`) with `backend=triton`, and a client."""
    with RunningServer(settings) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def predict(client: httpx.Client, seed: int = 0, boxes=((100, 50, 80, 120),)) -> httpx.Response:
    return client.post("/v1/predict", content=jpeg_bytes(seed=seed),
                       headers={"Content-Type": "image/jpeg"},
                       params={"boxes": json.dumps([list(b) for b in boxes])})


def triton_metric(server: TritonServer, name: str, model: str) -> float:
    text = httpx.get(server.metrics_url, timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # The parser names counter samples `<family>_total`, as Triton's text does not.
            if sample.name in (name, f"{name}_total") and sample.labels.get("model") == model:
                return sample.value
    raise AssertionError(f"{name} for {model} not in Triton's metrics")


def test_predictions_equal_the_embedded_backend(triton, model_repository):
    settings = gateway_settings(triton)

    async def compare() -> None:
        # One thread, as the twin runs (INTRA_OP_THREAD_COUNT 1): by default the embedded
        # backend takes one fewer than the CPUs, 2 on a 4-core machine.
        local = PoseService(settings, LocalBackend(model_repository, MODEL_NAME, threads=1))
        remote = PoseService(settings, TritonBackend(triton.grpc_url, MODEL_NAME))
        await local.start()
        await remote.start()
        try:
            info = remote.backend.info()
            assert (info.name, info.version) == (MODEL_NAME, "1")
            assert info.card["triton"]["platform"] == "python"

            images = np.random.default_rng(0).integers(0, 256, (5, *INPUT.dims), np.uint8)
            want, got = await local.backend.infer(images), await remote.backend.infer(images)
            for spec in FIXTURE_OUTPUTS:
                assert got[spec.key].shape == want[spec.key].shape
                np.testing.assert_allclose(got[spec.key], want[spec.key], rtol=0,
                                           atol=OUTPUT_TOLERANCE, err_msg=spec.key)

            # Person boxes given: the same crops, so the joints must agree.
            data = jpeg_bytes(seed=0)
            options = PredictOptions(boxes=[Box(x=100, y=50, w=80, h=120),
                                            Box(x=10, y=20, w=100, h=150)])
            a = await local.predict(data, "image/jpeg", options)
            b = await remote.predict(data, "image/jpeg", options)
            assert b.model.backend == "triton" and len(b.persons) == len(a.persons) == 2
            for pa, pb in zip(a.persons, b.persons, strict=True):
                np.testing.assert_allclose(pb.pose.normalised, pa.pose.normalised,
                                           rtol=0, atol=COORD_TOLERANCE)
            # Auto-crop: pass 1 gives the same box. Pass 2's crop then moves by a thousandth of
            # a pixel, which flips uint8 crop pixels; an untrained network is not smooth in its
            # input, so its joints are not compared.
            data = jpeg_bytes(seed=1)
            a = await local.predict(data, "image/jpeg", PredictOptions())
            b = await remote.predict(data, "image/jpeg", PredictOptions())
            assert dataclasses.asdict(b.persons[0].box) == pytest.approx(
                dataclasses.asdict(a.persons[0].box), abs=BOX_TOLERANCE_PX)
        finally:
            await remote.stop()
            await local.stop()

    run(compare())


def _embedded_and_triton(local: LocalBackend, triton: TritonServer, model: str, seed: int,
                         check=None) -> tuple[dict, dict]:
    """The same random crops through `local` and through Triton's `model`: (want, got).

    `check(local)` runs once the embedded backend has loaded its model."""
    async def both() -> tuple[dict, dict]:
        remote = TritonBackend(triton.grpc_url, model)
        await local.start()
        await remote.start()
        try:
            if check is not None:
                check(local)
            images = np.random.default_rng(seed).integers(0, 256, (3, *INPUT.dims), np.uint8)
            return await local.infer(images), await remote.infer(images)
        finally:
            await remote.stop()
            await local.stop()

    return run(both())


def test_float16_weights_serve_alike_embedded_and_in_triton(triton, float16_repository):
    """Both load paths fold the float16 weights' casts and compute the same float32 function."""
    def loaded_as_float32(local: LocalBackend) -> None:
        assert local.info().card["weight_storage"]["dtype"] == "float16"
        assert float16_constants(local._model.module) == 0  # cast to float32 once, at load

    want, got = _embedded_and_triton(LocalBackend(float16_repository, MODEL_NAME, threads=1),
                                     triton, FLOAT16_MODEL, 1, loaded_as_float32)
    for spec in FIXTURE_OUTPUTS:
        np.testing.assert_allclose(got[spec.key], want[spec.key], rtol=0,
                                   atol=OUTPUT_TOLERANCE, err_msg=spec.key)


def test_onnx_config_matches_the_production_config(model_repository, tmp_path):
    production = parse_config(model_repository / MODEL_NAME / "config.pbtxt")
    onnx_dir = model_repository / onnx_model_name(MODEL_NAME)
    config = parse_config(onnx_dir / "config.pbtxt")
    assert config.name == f"{MODEL_NAME}-onnx" and config.platform == "onnxruntime_onnx"
    assert config.default_model_filename == "model.onnx"
    for field in ("input", "output"):
        assert list(getattr(config, field)) == list(getattr(production, field))
    assert config.max_batch_size == production.max_batch_size
    assert config.dynamic_batching == production.dynamic_batching
    assert list(config.instance_group) == list(production.instance_group)
    assert list(config.model_warmup) == list(production.model_warmup)
    assert not config.optimization.HasField("execution_accelerators")
    # The version folder is the torch model's own (a relative link): one model.onnx, stored once.
    assert (onnx_dir / "1").is_symlink() and os.readlink(onnx_dir / "1") == f"../{MODEL_NAME}/1"
    assert (onnx_dir / "1" / "model.onnx").samefile(model_repository / MODEL_NAME / "1" /
                                                    "model.onnx")

    cpu = ServingOptions(instance_kind="KIND_CPU", intra_op_threads=2)
    parsed = text_format.Parse(render_onnx_config("m", cpu, "openvino"),
                               model_config_pb2.ModelConfig())
    (accel,) = parsed.optimization.execution_accelerators.cpu_execution_accelerator
    assert accel.name == "openvino"
    assert parsed.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert parsed.parameters["intra_op_thread_count"].string_value == "2"
    for accelerator, precision in (("tensorrt", "FP32"), ("tensorrt-fp16", "FP16")):
        parsed = text_format.Parse(render_onnx_config("m", None, accelerator),
                                   model_config_pb2.ModelConfig())
        (accel,) = parsed.optimization.execution_accelerators.gpu_execution_accelerator
        assert (accel.name, dict(accel.parameters)) == ("tensorrt", {"precision_mode": precision})
    with pytest.raises(ValueError, match="the tensorrt accelerator runs on KIND_GPU instances"):
        render_onnx_config("m", cpu, "tensorrt")
    with pytest.raises(ValueError, match="the openvino accelerator runs on KIND_CPU instances"):
        render_onnx_config("m", None, "openvino")
    with pytest.raises(ValueError, match="accelerator must be one of"):
        render_onnx_config("m", None, "cuda")


def test_onnx_twin_serves_what_the_embedded_backend_computes(triton, model_repository):
    want, got = _embedded_and_triton(LocalBackend(model_repository, MODEL_NAME, threads=1),
                                     triton, ONNX_TWIN, 2)
    for spec in FIXTURE_OUTPUTS:
        # Two runtimes (torch, ONNX Runtime): each within the export's bound of the float64
        # model, so within twice that of each other (test_runtimes.py).
        np.testing.assert_allclose(got[spec.key], want[spec.key], rtol=0,
                                   atol=RUNTIME_TOLERANCE, err_msg=spec.key)
    log = triton.log_path.read_text(errors="replace")
    assert f'"{ONNX_TWIN}: onnxruntime intra-op threads 1"' in log


def test_twin_runs_with_the_configured_intra_op_threads(triton):
    log = triton.log_path.read_text(errors="replace")
    assert f'"{MODEL_NAME}: torch intra-op threads 1"' in log
    # Without the parameter torch keeps its own default, whatever it is here.
    assert re.search(rf'"{QUEUE_MODEL}: torch intra-op threads \d+"', log)


def test_triton_batches_concurrent_requests(triton):
    async def burst() -> None:
        backend = TritonBackend(triton.grpc_url, MODEL_NAME)
        await backend.start()
        try:
            image = np.zeros((1, *INPUT.dims), np.uint8)
            results = await asyncio.gather(*(backend.infer(image) for _ in range(16)))
            assert all(r["coords"].shape == (1, 17, 3) for r in results)
        finally:
            await backend.stop()

    before = [triton_metric(triton, n, MODEL_NAME) for n in COUNTERS]
    run(burst())
    deadline = time.monotonic() + 5  # Triton may count a batch just after answering it
    while True:
        count, executions = (triton_metric(triton, n, MODEL_NAME) - b
                             for n, b in zip(COUNTERS, before, strict=True))
        if count >= 16 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert count == 16
    assert count / executions > 1, f"{executions:g} executions for 16 requests: no batching"


def test_queue_full_is_429_with_retry_after_then_recovers(triton):
    settings = gateway_settings(triton, model_name=QUEUE_MODEL, max_batch_size=4)
    with rest_gateway(settings) as client, \
            ThreadPoolExecutor(1) as pool:
        # Another client's request parks in Triton's one-place queue, waiting for a batch.
        async def park() -> None:
            backend = TritonBackend(triton.grpc_url, QUEUE_MODEL)
            await backend.start()
            try:
                await backend.infer(np.zeros((1, *INPUT.dims), np.uint8))
            finally:
                await backend.stop()

        parked = pool.submit(run, park())
        deadline = time.monotonic() + 10
        while triton_metric(triton, "nv_inference_pending_request_count", QUEUE_MODEL) < 1:
            assert time.monotonic() < deadline and not parked.done(), "nothing parked in Triton"
            time.sleep(0.02)
        r = predict(client)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "overloaded"
        assert "queue" in r.json()["error"]["message"]
        assert int(r.headers["Retry-After"]) >= 1
        parked.result(timeout=30)

        r = predict(client)  # the queue has room again
        assert r.status_code == 200, r.text
        assert client.get("/health/ready").status_code == 200


def test_slow_answer_is_deadline_exceeded_and_unknown_model_unavailable(triton):
    async def check() -> None:
        # A lone request waits a second in tiny-pose-q1's queue for a batch: past 0.3 s.
        backend = TritonBackend(triton.grpc_url, QUEUE_MODEL, timeout_s=0.3)
        await backend.start()
        try:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded, match="0.3 s"):
                await backend.infer(np.zeros((1, *INPUT.dims), np.uint8))
            assert time.monotonic() - started < 0.9
        finally:
            await backend.stop()
        missing = TritonBackend(triton.grpc_url, "no-such-model", start_timeout_s=0.5)
        try:
            assert not await missing.ready()
            with pytest.raises(BackendUnavailable, match="no-such-model"):
                await missing.start()
        finally:
            await missing.stop()

    run(check())


def test_triton_down_is_503_fast_and_the_gateway_recovers(triton):
    settings = gateway_settings(triton, request_timeout_s=5, triton_timeout_s=5)
    with rest_gateway(settings) as client:
        assert predict(client).status_code == 200
        triton.stop()
        try:
            assert client.get("/health/ready").status_code == 503
            started = time.monotonic()
            r = predict(client, seed=1)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == BackendUnavailable.code
            assert time.monotonic() - started < settings.request_timeout_s
        finally:
            triton.start()
        deadline = time.monotonic() + 15
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "the gateway did not see Triton come back"
            time.sleep(0.2)
        r = predict(client, seed=2)
        assert r.status_code == 200, r.text
        assert r.json()["model"]["backend"] == "triton"


def test_triton_http_protocol_answers_like_grpc(triton):
    """Triton's HTTP/REST (KServe v2 JSON) endpoint serves the same model as its gRPC one."""
    images = np.random.default_rng(3).integers(0, 256, (2, *INPUT.dims), np.uint8)

    async def over_grpc() -> dict[str, np.ndarray]:
        backend = TritonBackend(triton.grpc_url, MODEL_NAME)
        await backend.start()
        try:
            return await backend.infer(images)
        finally:
            await backend.stop()

    want = run(over_grpc())
    with httpx.Client(base_url=triton.http_url, timeout=60) as client:
        assert client.get(f"/v2/models/{MODEL_NAME}/ready").status_code == 200
        meta = client.get(f"/v2/models/{MODEL_NAME}").json()
        assert [i["name"] for i in meta["inputs"]] == [INPUT.name]
        assert [o["name"] for o in meta["outputs"]] == [s.name for s in FIXTURE_OUTPUTS]
        body = {
            "inputs": [{"name": INPUT.name, "datatype": "UINT8", "shape": list(images.shape),
                        "data": images.ravel().tolist()}],
            "outputs": [{"name": s.name} for s in FIXTURE_OUTPUTS],
        }
        r = client.post(f"/v2/models/{MODEL_NAME}/infer", json=body)
        assert r.status_code == 200, r.text
        got = {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"])
               for o in r.json()["outputs"]}
        for spec in FIXTURE_OUTPUTS:
            assert got[spec.name].shape == want[spec.key].shape
            np.testing.assert_allclose(got[spec.name], want[spec.key], rtol=0,
                                       atol=OUTPUT_TOLERANCE, err_msg=spec.name)
        # A malformed request is Triton's 400 with a message, not a crash.
        bad = {"inputs": [{"name": "NOPE", "datatype": "UINT8", "shape": [1], "data": [0]}]}
        r = client.post(f"/v2/models/{MODEL_NAME}/infer", json=bad)
        assert r.status_code == 400 and "NOPE" in r.json()["error"]


def test_gateway_without_torch_serves_through_triton(triton, tmp_path):
    args = ["--backend", "triton", "--triton-url", triton.grpc_url, "--model-name", MODEL_NAME]
    with torch_free_gateway(args, tmp_path / "gateway.log") as client:
        r = predict(client)
        assert r.status_code == 200, r.text
        (person,) = r.json()["persons"]
        assert len(person["joints"]) == 17
        assert r.json()["model"]["backend"] == "triton"


def test_the_detector_on_triton_computes_what_the_embedded_one_does(triton):
    """The second model of the server: the person detector's twin (model.onnx under ONNX
    Runtime in the Python backend) against the embedded backend's ONNX Runtime."""
    from PIL import Image

    image = Image.open(PHOTO).convert("RGB")
    _, batch = window_batch(image, image.width, image.height)

    async def both() -> tuple[dict, dict]:
        local = LocalBackend(PRODUCTION, DETECTOR_NAME, runtime="onnxruntime", threads=1,
                             contract=DETECTOR_CONTRACT)
        remote = TritonBackend(triton.grpc_url, DETECTOR_NAME, contract=DETECTOR_CONTRACT)
        await local.start()
        await remote.start()
        try:
            return await local.infer(batch), await remote.infer(batch)
        finally:
            await local.stop()
            await remote.stop()

    local, remote = run(both())
    assert set(remote) == {"boxes", "scores"} and remote["boxes"].shape == (4, 2254, 12)
    for key in ("boxes", "scores"):
        # One ONNX Runtime build against another (the Triton venv's): float32 kernel noise,
        # relative to 1 + |value| as the export's check (training.export_detector).
        diff = np.abs(remote[key] - local[key]) / (1 + np.abs(local[key]))
        assert diff.max() <= 5e-4, key


def test_requests_without_boxes_find_people_with_tritons_detector(triton):
    with rest_gateway(gateway_settings(triton)) as client:
        body = client.post("/v1/predict", content=PHOTO.read_bytes(),
                           headers={"Content-Type": "image/jpeg"}).json()
        model = client.get("/v1/model").json()
    assert [p["box_source"] for p in body["persons"]] == ["detector", "detector"]
    assert min(p["detection_score"] for p in body["persons"]) >= 0.6
    assert model["detector"] == {"name": DETECTOR_NAME, "version": "1", "backend": "triton"}


def test_a_triton_without_the_detector_keeps_the_whole_image_pass(triton):
    settings = gateway_settings(triton, detector_model="no-such-detector")
    with rest_gateway(settings) as client:
        body = client.post("/v1/predict", content=PHOTO.read_bytes(),
                           headers={"Content-Type": "image/jpeg"}).json()
        model = client.get("/v1/model").json()
    assert [p["box_source"] for p in body["persons"]] == ["auto"]
    assert model["detector"] is None
