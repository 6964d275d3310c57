"""The local backend's runtimes: torch (model.pt), ONNX Runtime and OpenVINO (model.onnx)."""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pytest

from posecontract.layout import INPUT, OUTPUTS
from service.backends.local import LocalBackend
from service.backends.runtimes import open_runtime
from service.errors import BackendUnavailable
from service.settings import Settings
from tests.service.conftest import RunningServer, free_port, torch_free_gateway

from .conftest import MODEL_NAME, jpeg_bytes, run

# Each runtime's float32 outputs lie within the export's bound of the float64 model (10x eager
# float32's own error, 2-3e-5 on a small untrained model: training/export.py), so two runtimes
# differ by at most twice that.
RUNTIME_TOLERANCE = 1e-4
ONNX_RUNTIMES = ("onnxruntime", "openvino")


async def _infer(backend: LocalBackend, images: np.ndarray):
    await backend.start()
    try:
        return backend.info(), backend.threads, await backend.infer(images)
    finally:
        await backend.stop()


@pytest.fixture(scope="module")
def torch_outputs(model_repository):
    images = np.random.default_rng(0).integers(0, 256, (5, *INPUT.dims), np.uint8)
    info, _, outputs = run(_infer(LocalBackend(model_repository, MODEL_NAME, threads=1), images))
    return images, info, outputs


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_onnx_runtimes_compute_what_torch_computes(model_repository, torch_outputs, runtime):
    images, torch_info, want = torch_outputs
    backend = LocalBackend(model_repository, MODEL_NAME, threads=1, runtime=runtime,
                           warmup_batch_sizes=(1, 4))
    info, threads, got = run(_infer(backend, images))
    assert (info.name, info.version) == (torch_info.name, torch_info.version)
    assert info.card == torch_info.card and info.card["source"].startswith("test fixture")
    assert threads == 1
    for spec in OUTPUTS:
        assert got[spec.key].dtype == np.float32 and got[spec.key].shape == want[spec.key].shape
        np.testing.assert_allclose(got[spec.key], want[spec.key], rtol=0,
                                   atol=RUNTIME_TOLERANCE, err_msg=f"{runtime} {spec.key}")


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_consecutive_batches_do_not_share_buffers(model_repository, runtime):
    """A batch's outputs stay as they were after the next batch runs (OpenVINO reuses its)."""
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (2, *INPUT.dims), np.uint8) for _ in range(2))
    backend = LocalBackend(model_repository, MODEL_NAME, threads=1, runtime=runtime)

    async def both():
        await backend.start()
        try:
            first = await backend.infer(a)
            kept = {k: v.copy() for k, v in first.items()}
            await backend.infer(b)
            again = await backend.infer(a)
            return first, kept, again
        finally:
            await backend.stop()

    first, kept, again = run(both())
    for key in kept:
        np.testing.assert_array_equal(first[key], kept[key])
        np.testing.assert_allclose(again[key], kept[key], rtol=0, atol=1e-6)


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_gateway_serves_the_same_joints_with_each_runtime(model_repository, runtime):
    boxes = json.dumps([[100, 50, 80, 120]])
    answers = {}
    for name in ("torch", runtime):
        settings = Settings(model_repository=model_repository, model_name=MODEL_NAME,
                            runtime=name, torch_threads=1, port=free_port())
        with RunningServer(settings) as server, httpx.Client(base_url=server.url,
                                                             timeout=30) as client:
            r = client.post("/v1/predict", content=jpeg_bytes(seed=0),
                            headers={"Content-Type": "image/jpeg"}, params={"boxes": boxes})
            assert r.status_code == 200, r.text
            answers[name] = r.json()
    want, got = (np.array([j["normalised"] for j in answers[k]["persons"][0]["joints"]])
                 for k in ("torch", runtime))
    np.testing.assert_allclose(got, want, rtol=0, atol=RUNTIME_TOLERANCE)
    assert answers[runtime]["model"] == answers["torch"]["model"]


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_gateway_without_torch_serves_onnx(model_repository, tmp_path, runtime):
    args = ["--model-repository", str(model_repository), "--model-name", MODEL_NAME,
            "--runtime", runtime, "--torch-threads", "1"]
    with torch_free_gateway(args, tmp_path / "gateway.log") as client:
        r = client.post("/v1/predict", content=jpeg_bytes(seed=0),
                        headers={"Content-Type": "image/jpeg"},
                        params={"boxes": json.dumps([[100, 50, 80, 120]])})
        assert r.status_code == 200, r.text
        assert len(r.json()["persons"][0]["joints"]) == 17
    assert f"with {runtime} on cpu (1 intra-op threads)" in (tmp_path / "gateway.log").read_text()


def test_a_runtime_without_its_file_names_the_file(model_repository, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(model_repository, repo)
    (repo / MODEL_NAME / "1" / "model.onnx").unlink()
    backend = LocalBackend(repo, MODEL_NAME, runtime="onnxruntime")
    with pytest.raises(BackendUnavailable, match=f"Version 1 of '{MODEL_NAME}' has no model.onnx; "
                       "serve it with --runtime torch"):
        run(backend.start())
    run(backend.stop())
    # A newer version without model.onnx is not skipped for an older one that has it.
    shutil.copytree(model_repository / MODEL_NAME / "1", repo / MODEL_NAME / "2")
    (repo / MODEL_NAME / "1" / "model.pt").unlink()
    shutil.copyfile(model_repository / MODEL_NAME / "1" / "model.onnx",
                    repo / MODEL_NAME / "1" / "model.onnx")
    (repo / MODEL_NAME / "2" / "model.onnx").unlink()
    backend = LocalBackend(repo, MODEL_NAME, runtime="onnxruntime")
    with pytest.raises(BackendUnavailable, match="Version 2 .* has no model.onnx"):
        run(backend.start())
    run(backend.stop())
    backend = LocalBackend(repo, MODEL_NAME, version=3)
    with pytest.raises(BackendUnavailable, match=r"Version 3 of .* not found; have \[1, 2\]"):
        run(backend.start())
    run(backend.stop())


def test_runtime_errors_name_the_problem(model_repository, tmp_path):
    onnx_file = model_repository / MODEL_NAME / "1" / "model.onnx"
    with pytest.raises(BackendUnavailable, match="the openvino runtime runs on cpu"):
        open_runtime("openvino", onnx_file, "cuda", 1)
    with pytest.raises(BackendUnavailable, match="onnxruntime runs on cpu or cuda"):
        open_runtime("onnxruntime", onnx_file, "mps", 1)
    with pytest.raises(BackendUnavailable, match="choose one of torch, onnxruntime, openvino"):
        LocalBackend(model_repository, MODEL_NAME, runtime="tensorflow")
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx file")
    for runtime in ONNX_RUNTIMES:
        with pytest.raises(BackendUnavailable, match="Cannot load"):
            open_runtime(runtime, broken, "cpu", 1)
    with pytest.raises(ValueError, match="runtime"):
        Settings(runtime="tensorflow")
