"""The load generator and the serving suite: their arithmetic, and seconds-long real runs."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import math
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from bench import loadgen, naive_server, serving
from service.settings import Settings
from tests.conftest import MODEL_NAME
from tests.service.conftest import RunningServer, free_port

PHOTOS = sorted((Path(__file__).resolve().parents[2] / "data" / "photos").glob("*.jpg"))


def sample(name: str, value: float, **labels: str):
    return (name, tuple(sorted(labels.items()))), value


def test_server_split_reads_the_difference_of_two_scrapes():
    before = dict([
        sample("margipose_batch_size_count", 10), sample("margipose_batch_size_sum", 20),
        sample("margipose_stage_duration_seconds_count", 20, stage="queue_wait"),
        sample("margipose_stage_duration_seconds_sum", 1.0, stage="queue_wait"),
        sample("margipose_stage_duration_seconds_sum", 3.0, stage="inference"),
        sample("nv_inference_exec_count", 5), sample("nv_inference_count", 5),
        sample("nv_inference_request_success", 5),
        sample("nv_inference_queue_duration_us", 1000),
        sample("nv_inference_compute_infer_duration_us", 50_000),
        sample("margipose_stage_duration_seconds_count", 10, stage="crop"),
        sample("margipose_stage_duration_seconds_sum", 0.05, stage="crop"),
        sample("margipose_request_duration_seconds_count", 10, route="/v1/predict",
               transport="rest"),
        sample("margipose_request_duration_seconds_sum", 0.9, route="/v1/predict",
               transport="rest"),
        sample("margipose_request_duration_seconds_count", 3, route="/health/ready",
               transport="rest"),
        sample("margipose_request_duration_seconds_sum", 0.01, route="/health/ready",
               transport="rest"),
    ])
    after = dict([
        sample("margipose_batch_size_count", 14), sample("margipose_batch_size_sum", 32),
        sample("margipose_stage_duration_seconds_count", 32, stage="queue_wait"),
        sample("margipose_stage_duration_seconds_sum", 1.6, stage="queue_wait"),
        sample("margipose_stage_duration_seconds_sum", 5.0, stage="inference"),
        sample("nv_inference_exec_count", 9), sample("nv_inference_count", 17),
        sample("nv_inference_request_success", 17),
        sample("nv_inference_queue_duration_us", 7000),
        sample("nv_inference_compute_infer_duration_us", 170_000),
        sample("margipose_stage_duration_seconds_count", 22, stage="crop"),
        sample("margipose_stage_duration_seconds_sum", 0.11, stage="crop"),
        sample("margipose_request_duration_seconds_count", 16, route="/v1/predict",
               transport="rest"),
        sample("margipose_request_duration_seconds_sum", 1.5, route="/v1/predict",
               transport="rest"),
        sample("margipose_request_duration_seconds_count", 5, route="/pose.v1.Pose/Predict",
               transport="grpc"),
        sample("margipose_request_duration_seconds_sum", 0.5, route="/pose.v1.Pose/Predict",
               transport="grpc"),
        sample("margipose_request_duration_seconds_count", 9, route="/health/ready",
               transport="rest"),
        sample("margipose_request_duration_seconds_sum", 5.0, route="/health/ready",
               transport="rest"),
    ])
    split = loadgen.server_split(before, after)
    assert split["gw_avg_batch"] == pytest.approx(12 / 4)
    assert split["gw_queue_wait_ms"] == pytest.approx(1000 * 0.6 / 12)
    assert split["gw_inference_ms_per_batch"] == pytest.approx(1000 * 2.0 / 4)
    assert split["gw_crop_ms"] == pytest.approx(1000 * 0.06 / 12)
    # Predict calls of both transports (6 REST + 5 gRPC, 1.1 s), not the health checks.
    assert split["gw_request_ms"] == pytest.approx(1000 * 1.1 / 11)
    assert "gw_postprocess_ms" not in split  # no samples: no figure
    assert split["triton_avg_batch"] == pytest.approx(12 / 4)
    assert split["triton_queue_ms"] == pytest.approx(6000 / 12 / 1000)
    assert split["triton_compute_ms"] == pytest.approx(120_000 / 12 / 1000)
    assert loadgen.server_split(before, before) == {}  # nothing happened: no made-up figures


def test_levels_summarise_latency_and_errors():
    calls = itertools.count()

    async def flaky(p: loadgen.Payload) -> tuple[str, int]:
        """Every fourth request is refused."""
        await asyncio.sleep(0.01)
        return ("429", 0) if next(calls) % 4 == 3 else ("200", 2)

    payloads = loadgen.load_payloads(PHOTOS[:1], persons=2)
    assert len(payloads[0].boxes) == 2 and payloads[0].boxes[1][0] == payloads[0].size[0] / 2

    closed = asyncio.run(loadgen.closed_loop(flaky, payloads, 2, 0.3)).summary()
    assert closed["requests"] == closed["ok"] + closed["errors"]["429"]
    assert closed["persons_per_s"] == pytest.approx(2 * closed["images_per_s"])
    assert closed["p50_ms"] >= 10 and closed["p99_ms"] >= closed["p50_ms"]

    opened = asyncio.run(loadgen.open_loop(flaky, payloads, 40, 0.5)).summary()
    assert opened["requests"] == 20  # the schedule, whatever the answers


def test_open_loop_runs_until_stopped_and_reports_each_request():
    async def slow(p: loadgen.Payload) -> tuple[str, int]:
        await asyncio.sleep(0.05)
        return "OK", 1

    records: list[loadgen.RequestRecord] = []

    async def run() -> loadgen.LevelResult:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.3, stop.set)
        return await loadgen.open_loop(slow, loadgen.load_payloads(PHOTOS[:1]), 50, math.inf,
                                       stop=stop, on_result=records.append)

    result = asyncio.run(run())
    # About 0.3 s at 50/s; every one started was waited for and reported.
    assert 10 <= len(records) <= 20 and sum(result.statuses.values()) == len(records)
    assert all(r.ok and r.ended - r.started >= 0.05 for r in records)
    assert [r.started for r in records] == sorted(r.started for r in records)


@pytest.fixture(scope="module")
def gateway(model_repository):
    settings = Settings(model_repository=model_repository, model_name=MODEL_NAME,
                        port=free_port(), grpc_port=free_port(), max_batch_size=8)
    with RunningServer(settings) as running:
        yield running


def test_loadgen_smoke_over_rest_and_grpc(gateway, tmp_path, capsys):
    """Seconds-long closed and open loops against the real gateway, with the server split."""
    metrics = gateway.url + "/metrics"
    for target in (["--rest", gateway.url], ["--grpc", gateway.grpc_target]):
        out = tmp_path / "rows.json"
        args = loadgen.get_args_parser().parse_args([
            *target, "--metrics", metrics, "--images", *map(str, PHOTOS[:2]),
            "--concurrency", "1", "2", "--rate", "2", "--duration", "1.5", "--warmup", "0.5",
            "--json", str(out)])
        loadgen.main(args)
        rows = json.loads(out.read_text())["rows"]
        assert [(r["mode"], r["level"]) for r in rows] == [("closed", 1), ("closed", 2),
                                                          ("open", 2.0)]
        for r in rows:
            assert r["ok"] > 0 and r["errors"] == {}, r
            assert r["persons_per_s"] == pytest.approx(r["images_per_s"])
            assert r["gw_avg_batch"] >= 1 and r["gw_inference_ms_per_batch"] > 0, r
        assert "| rest |" in capsys.readouterr().out or target[0] == "--grpc"


def test_naive_baseline_answers_the_same_request(model_repository):
    app = naive_server.create_app(str(model_repository / MODEL_NAME / "1" / "model.pt"), 2)
    payload = loadgen.load_payloads(PHOTOS[:1], persons=2)[0]

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://naive") as client:
            return await loadgen.rest_sender(client)(payload)

    assert asyncio.run(call()) == ("200", 2)


def test_serving_suite_smoke(model_repository, tmp_path):
    """The side-by-side suite end to end on the tiny model: raw, naive and the gateway."""
    args = serving.get_args_parser().parse_args([
        "--model-name", MODEL_NAME, "--model-repository", str(model_repository),
        "--targets", "raw", "naive", "gateway-local-rest", "gateway-local-grpc",
        "--runtimes", "torch", "onnxruntime",
        "--images", str(PHOTOS[0]), "--concurrency", "1", "2", "--duration", "1",
        "--warmup", "0.3", "--raw-batch-sizes", "1", "2", "--raw-seconds", "0.3",
        "--json", str(tmp_path / "serving.json")])
    result = serving.main(args)
    assert [(r["runtime"], r["batch"]) for r in result["raw"]] == [
        ("torch", 1), ("torch", 2), ("onnxruntime", 1), ("onnxruntime", 2)]
    assert {(r["target"], r.get("runtime")) for r in result["rows"]} == {
        ("naive", None), *((t, rt) for t in ("gateway-local-rest", "gateway-local-grpc")
                           for rt in ("torch", "onnxruntime"))}
    for r in result["rows"]:
        assert r["ok"] > 0 and r["errors"] == {} and r["server_cpu_ms_per_request"] > 0, r
    derived = result["derived"]
    for target in ("gateway-local-rest", "gateway-local-grpc"):
        for runtime in ("torch", "onnxruntime"):
            d = derived[f"{target}[{runtime}]"]
            assert d["efficiency_vs_raw"] > 0
            assert "overhead_ms_c1" in d and "cpu_ms_outside_inference" in d
            stages = d["stages_ms_c1"]
            for stage in serving.STAGES:
                assert stages[stage] >= 0, (target, runtime, stages)
            assert stages["inference"] > 0 and stages["decode"] > 0 and stages["crop"] > 0
            # The stages lie inside the gateway's clock, which lies inside the client's.
            assert stages["gateway_other"] >= 0 and stages["outside_gateway"] >= 0, stages
    assert "outside_gateway" in serving.report(result)
    assert json.loads((tmp_path / "serving.json").read_text())["derived"] == derived


def test_grpc_sender_reports_status_codes_not_exceptions():
    async def call() -> tuple[str, int]:
        # Nothing listens there: the sender returns the gRPC status instead of raising.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
            payload = loadgen.load_payloads(PHOTOS[:1])[0]
            return await loadgen.grpc_sender(channel)(payload)

    assert asyncio.run(call()) == ("UNAVAILABLE", 0)


def test_serving_suite_runs_the_blazepose_peer_beside_the_raw_model(model_repository, tmp_path):
    """BlazePose full and heavy (one and two processes) as rows of the same run."""
    import os

    from peers.blazepose_client import BlazePoseUnavailable, find_venv

    try:
        find_venv()
    except BlazePoseUnavailable as exc:
        if os.environ.get("MARGIPOSE_REQUIRE_BLAZEPOSE") == "1":
            pytest.fail(f"MARGIPOSE_REQUIRE_BLAZEPOSE=1 but {exc}")
        pytest.skip(str(exc))
    args = serving.get_args_parser().parse_args([
        "--model-name", MODEL_NAME, "--model-repository", str(model_repository),
        "--targets", "raw", "blazepose", "--duration", "1", "--raw-batch-sizes", "1",
        "--raw-seconds", "0.3"])
    result = serving.main(args)
    assert result["skipped"] == {}
    rows = {(r["model"], r["processes"]): r for r in result["blazepose"]}
    assert set(rows) == {(m, n) for m in ("blazepose-full", "blazepose-heavy") for n in (1, 2)}
    assert all(r["images_per_s"] > 0 and r["cpu_ms_per_image"] > 0 for r in rows.values())
    # Heavy costs more CPU per image than full.
    assert rows["blazepose-heavy", 1]["cpu_ms_per_image"] > rows["blazepose-full", 1][
        "cpu_ms_per_image"]
    assert result["derived"]["blazepose-full"]["efficiency_vs_raw"] > 0
    assert "blazepose-heavy" in serving.report(result)


def test_person_crop_payloads_are_the_crops_the_gateway_would_cut():
    payloads = loadgen.load_payloads(PHOTOS[:2])
    crops = loadgen.person_crop_payloads(payloads)
    for p, c in zip(payloads, crops, strict=True):
        assert c.size == (256, 256) and c.boxes == ((0.0, 0.0, 256.0, 256.0),)
        assert c.content_type == "image/jpeg" and len(c.data) < len(p.data)
        with Image.open(io.BytesIO(c.data)) as image:
            got = np.asarray(image.convert("RGB"), dtype=float)
        want = loadgen.crops_for([p])[p.name][0].transpose(1, 2, 0).astype(float)
        assert np.abs(got - want).mean() < 3  # JPEG quality 90
