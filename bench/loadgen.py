"""Load generator for the pose service: closed and open loop, REST, gRPC and Triton directly.

    python -m bench.loadgen --rest http://127.0.0.1:8080 --concurrency 1 2 4 8 --duration 10
    python -m bench.loadgen --grpc 127.0.0.1:50051 --rate 5 10 20 --duration 10
    python -m bench.loadgen --rest URL --metrics URL/metrics --images data/photos/*.jpg

Reports like Triton's perf_analyzer, one row per load level: throughput (images/s and
persons/s), latency p50/p90/p95/p99, errors by status, and, when the server's Prometheus
endpoints are given, the server-side split read from the difference of its metrics over the
level (the gateway's queue wait vs inference per batch, average batch size; Triton's queue vs
compute per request, items per execution).

- Closed loop (`--concurrency C`): C workers, each sends its next request when the previous one
  answers; throughput is what the server sustains at that concurrency.
- Open loop (`--rate R`): requests start on a fixed schedule of R per second whatever the
  server does, and latency counts from the scheduled start, so a server that falls behind shows
  it (no coordinated omission). Requests still in flight at the end are waited for.

Every request sends one image of the set, in turn, with `--persons` boxes (default: one box,
the whole image, so every target does the same work: one crop, one model pass per person).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from bench.report import markdown_table, write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = sorted((ROOT / "data" / "photos").glob("*.jpg"))
PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class Payload:
    """One request's content: the encoded image and the person boxes to send with it."""

    name: str
    data: bytes
    content_type: str
    size: tuple[int, int]  # width, height
    boxes: tuple[tuple[float, float, float, float], ...]  # x, y, w, h


def load_payloads(paths: Sequence[Path], persons: int = 1) -> list[Payload]:
    """Read images; each gets `persons` boxes: side-by-side vertical strips of the whole image."""
    if persons < 1:
        raise ValueError(f"--persons must be at least 1, got {persons}")
    payloads = []
    for path in paths:
        data = Path(path).read_bytes()
        with Image.open(path) as image:
            width, height = image.size
            kind = (image.format or "jpeg").lower()
        strip = width / persons
        boxes = tuple((i * strip, 0.0, strip, float(height)) for i in range(persons))
        payloads.append(Payload(Path(path).name, data, f"image/{kind}", (width, height), boxes))
    if not payloads:
        raise ValueError("no images: pass --images FILE ...")
    return payloads


# A sender returns (status, persons): status "200"/"OK" for success, else the error's status.
Sender = Callable[[Payload], Awaitable[tuple[str, int]]]


def rest_sender(client: httpx.AsyncClient) -> Sender:
    """POST /v1/predict with the boxes as a query parameter."""

    async def send(p: Payload) -> tuple[str, int]:
        try:
            r = await client.post("/v1/predict", content=p.data,
                                  headers={"Content-Type": p.content_type},
                                  params={"boxes": json.dumps([list(b) for b in p.boxes])})
        except httpx.TransportError as e:  # refused, reset, timed out: an error, not a crash
            return type(e).__name__, 0
        return str(r.status_code), len(r.json()["persons"]) if r.status_code == 200 else 0

    return send


def grpc_sender(channel: Any) -> Sender:
    """pose.v1 Predict over a grpc.aio channel."""
    import grpc

    from poseapi.grpc_gen.pose.v1 import pose_pb2, pose_pb2_grpc

    stub = pose_pb2_grpc.PoseServiceStub(channel)

    async def send(p: Payload) -> tuple[str, int]:
        request = pose_pb2.PredictRequest(
            image=p.data, content_type=p.content_type,
            boxes=[pose_pb2.Box(x=x, y=y, w=w, h=h) for x, y, w, h in p.boxes])
        try:
            response = await stub.Predict(request, timeout=60)
        except grpc.aio.AioRpcError as e:
            return e.code().name, 0
        return "OK", len(response.persons)

    return send


def crops_for(payloads: Sequence[Payload]) -> dict[str, np.ndarray]:
    """The model input (N, 3, 256, 256) uint8 of each payload, cut as the gateway cuts a box."""
    from posecontract.geometry import Intrinsics, make_crop
    from posecontract.layout import INPUT_SIZE
    from service.core import CROP_MARGIN
    from service.imaging import crop_for_model, decode_image

    crops = {}
    for p in payloads:
        decoded = decode_image(p.data, content_type=p.content_type, max_bytes=len(p.data),
                               max_pixels=10**9, min_detail=None)
        camera = Intrinsics.from_fov(decoded.width, decoded.height, 60.0)
        items = []
        for x, y, w, h in p.boxes:
            crop = make_crop(camera, (x + w / 2, y + h / 2), CROP_MARGIN * max(w, h), INPUT_SIZE)
            items.append(crop_for_model(decoded, crop).transpose(2, 0, 1))
        crops[p.name] = np.ascontiguousarray(np.stack(items))
    return crops


def person_crop_payloads(payloads: Sequence[Payload], quality: int = 90) -> list[Payload]:
    """Each payload's first person as the model sees it: its 256x256 crop (as `crops_for` cuts
    it), JPEG-encoded, sent with one box over the whole crop. Requests of the size a person
    detector's crop has, which BlazePose and the raw model are timed on: the gateway's decode
    and crop then cost what they cost on such inputs, not on whole photos."""
    import io

    out = []
    for p in payloads:
        crop = crops_for([p])[p.name][0].transpose(1, 2, 0)
        buffer = io.BytesIO()
        Image.fromarray(crop).save(buffer, format="JPEG", quality=quality)
        side = float(crop.shape[0])
        out.append(Payload(f"{p.name} (crop)", buffer.getvalue(), "image/jpeg",
                           (crop.shape[1], crop.shape[0]), ((0.0, 0.0, side, side),)))
    return out


def triton_sender(client: Any, model: str, crops: dict[str, np.ndarray]) -> Sender:
    """Triton's own gRPC infer with the precomputed crops: serving without the gateway."""
    from tritonclient.grpc import InferInput, InferRequestedOutput
    from tritonclient.utils import InferenceServerException

    from posecontract.layout import INPUT, OUTPUTS

    outputs = [InferRequestedOutput(s.name) for s in OUTPUTS]

    async def send(p: Payload) -> tuple[str, int]:
        batch = crops[p.name]
        tensor = InferInput(INPUT.name, list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch)
        try:
            result = await client.infer(model, [tensor], outputs=outputs, client_timeout=60)
        except InferenceServerException as e:
            return str(e.status() or "error"), 0
        return "OK", int(result.as_numpy(OUTPUTS[0].name).shape[0])

    return send


@dataclass
class LevelResult:
    """What one load level measured."""

    mode: str  # "closed" or "open"
    level: float  # concurrency or requests/s
    duration_s: float
    latencies_s: list[float] = field(default_factory=list)  # successful requests only
    statuses: Counter = field(default_factory=Counter)
    persons: int = 0
    server: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    def summary(self) -> dict[str, Any]:
        errors = {k: v for k, v in self.statuses.items() if k not in ("200", "OK")}
        row = {
            "mode": self.mode, "level": self.level, "duration_s": round(self.duration_s, 3),
            "requests": sum(self.statuses.values()), "ok": self.ok, "errors": errors,
            "images_per_s": self.ok / self.duration_s, "persons_per_s": self.persons /
            self.duration_s,
        }
        lat = np.asarray(self.latencies_s) * 1000
        row["mean_ms"] = float(lat.mean()) if lat.size else math.nan
        for q in PERCENTILES:
            row[f"p{q}_ms"] = float(np.percentile(lat, q)) if lat.size else math.nan
        row.update(self.server)
        return row


async def closed_loop(send: Sender, payloads: Sequence[Payload], concurrency: int,
                      duration_s: float) -> LevelResult:
    """`concurrency` workers sending back to back for `duration_s`."""
    result = LevelResult("closed", concurrency, duration_s)
    began = time.perf_counter()
    stop_at = began + duration_s
    counter = iter(range(10**12))

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            p = payloads[next(counter) % len(payloads)]
            t0 = time.perf_counter()
            status, persons = await send(p)
            result.statuses[status] += 1
            if status in ("200", "OK"):
                result.latencies_s.append(time.perf_counter() - t0)
                result.persons += persons

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.duration_s = time.perf_counter() - began
    return result


@dataclass(frozen=True)
class RequestRecord:
    """One request of an open loop: its scheduled start and its end (time.perf_counter), and its
    status ("200"/"OK" for success). For runs cut into phases after the fact."""

    started: float
    ended: float
    status: str

    @property
    def ok(self) -> bool:
        return self.status in ("200", "OK")


async def open_loop(send: Sender, payloads: Sequence[Payload], rate: float,
                    duration_s: float, *, stop: asyncio.Event | None = None,
                    on_result: Callable[[RequestRecord], None] | None = None) -> LevelResult:
    """Start requests at `rate` per second for `duration_s`; latency from the scheduled start.

    `stop`, when set, ends the schedule early (`duration_s` may then be `math.inf`: run until
    it is set); `on_result` is told each request's `RequestRecord` as it ends. Requests are
    started as their time comes, not created up front, so a long run costs no memory ahead."""
    if rate <= 0:
        raise ValueError(f"--rate must be positive, got {rate}")
    result = LevelResult("open", rate, duration_s)
    began = time.perf_counter()
    count = max(1, int(rate * duration_s)) if math.isfinite(duration_s) else None

    async def one(i: int, scheduled: float) -> None:
        status, persons = await send(payloads[i % len(payloads)])
        ended = time.perf_counter()
        result.statuses[status] += 1
        if status in ("200", "OK"):
            result.latencies_s.append(ended - scheduled)
            result.persons += persons
        if on_result is not None:
            on_result(RequestRecord(scheduled, ended, status))

    tasks: set[asyncio.Task[None]] = set()
    failed: list[BaseException] = []  # a sender's bug still surfaces, as with one gather

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failed.append(task.exception())

    i = 0
    while (count is None or i < count) and not (stop is not None and stop.is_set()):
        scheduled = began + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            if stop is None:
                await asyncio.sleep(delay)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break  # stopped before this request's time
                except TimeoutError:
                    pass
        task = asyncio.create_task(one(i, scheduled))
        tasks.add(task)
        task.add_done_callback(done)
        i += 1
    await asyncio.gather(*tasks)
    if failed:
        raise failed[0]
    # Throughput over the whole run, including the tail that drained after the schedule ended.
    result.duration_s = time.perf_counter() - began
    return result


# ------------------------------------------------------------------ server-side metrics


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text endpoint, keyed by (name, sorted labels)."""
    return parse_samples(httpx.get(url, timeout=10).text)


def parse_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, keyed by (name, sorted labels)."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples named `name` (or `name_total`) whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items()
               if n in (name, name + "_total") and set(labels.items()) <= set(ls))


def _predict_total(samples: dict, suffix: str) -> float:
    """The gateway's request-duration `suffix` (_sum or _count) over its predict routes (REST
    /v1/predict, gRPC Predict), whatever the transport: not health checks or scrapes."""
    name = "margipose_request_duration_seconds" + suffix
    return sum(v for (n, ls), v in samples.items()
               if n == name and "predict" in dict(ls).get("route", "").lower())


def server_split(before: dict, after: dict) -> dict[str, float]:
    """Per-level server figures from two scrapes (gateway and/or Triton samples merged)."""
    def delta(name: str, **labels: str) -> float:
        return _total(after, name, **labels) - _total(before, name, **labels)

    out: dict[str, float] = {}
    batches = delta("margipose_batch_size_count")
    if batches > 0:
        out["gw_avg_batch"] = delta("margipose_batch_size_sum") / batches
        waits = delta("margipose_stage_duration_seconds_count", stage="queue_wait")
        if waits > 0:
            out["gw_queue_wait_ms"] = 1000 * delta("margipose_stage_duration_seconds_sum",
                                                   stage="queue_wait") / waits
        out["gw_inference_ms_per_batch"] = 1000 * delta(
            "margipose_stage_duration_seconds_sum", stage="inference") / batches
        # Per request (decode, postprocess, request) or per crop (crop: one per person here).
        for stage in ("decode", "crop", "postprocess"):
            n = delta("margipose_stage_duration_seconds_count", stage=stage)
            if n > 0:
                out[f"gw_{stage}_ms"] = 1000 * delta("margipose_stage_duration_seconds_sum",
                                                     stage=stage) / n
        requests = _predict_total(after, "_count") - _predict_total(before, "_count")
        if requests > 0:
            out["gw_request_ms"] = 1000 * (_predict_total(after, "_sum")
                                           - _predict_total(before, "_sum")) / requests
    executions = delta("nv_inference_exec_count")
    if executions > 0:
        requests = delta("nv_inference_request_success")
        out["triton_avg_batch"] = delta("nv_inference_count") / executions
        if requests > 0:
            out["triton_queue_ms"] = delta("nv_inference_queue_duration_us") / requests / 1000
            out["triton_compute_ms"] = delta("nv_inference_compute_infer_duration_us") \
                / requests / 1000
    return out


async def run_levels(send: Sender, payloads: Sequence[Payload], *, concurrency: Sequence[int],
                     rates: Sequence[float], duration_s: float, warmup_s: float,
                     metrics_urls: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Warm up, then every closed-loop level and every open-loop level, each with its split."""
    if warmup_s > 0:
        await closed_loop(send, payloads, 1, warmup_s)
    levels: list[tuple[str, float]] = [("closed", c) for c in concurrency] + \
        [("open", r) for r in rates]
    rows = []
    for mode, level in levels:
        before = _scrape_all(metrics_urls)
        if mode == "closed":
            result = await closed_loop(send, payloads, int(level), duration_s)
        else:
            result = await open_loop(send, payloads, level, duration_s)
        result.server = server_split(before, _scrape_all(metrics_urls))
        rows.append(result.summary())
    return rows


def _scrape_all(urls: Sequence[str]) -> dict:
    merged: dict = {}
    for url in urls:
        merged.update(scrape(url))
    return merged


def table(rows: Sequence[dict[str, Any]], label: str = "target") -> str:
    """A markdown table of load-level rows (each may carry a `target` name)."""
    header = [label, "load", "img/s", "persons/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms",
              "errors", "avg batch", "queue ms", "compute ms"]
    body = []
    for r in rows:
        load = f"c={int(r['level'])}" if r["mode"] == "closed" else f"{r['level']:g}/s"
        batch = r.get("gw_avg_batch", r.get("triton_avg_batch"))
        queue = r.get("gw_queue_wait_ms", r.get("triton_queue_ms"))
        compute = r.get("gw_inference_ms_per_batch", r.get("triton_compute_ms"))
        body.append([
            str(r.get("target", "")), load, f"{r['images_per_s']:.1f}",
            f"{r['persons_per_s']:.1f}",
            *(f"{r[f'p{q}_ms']:.0f}" for q in PERCENTILES),
            str(sum(r["errors"].values())) if r["errors"] else "0",
            "" if batch is None else f"{batch:.2f}",
            "" if queue is None else f"{queue:.1f}",
            "" if compute is None else f"{compute:.1f}",
        ])
    return markdown_table(header, body, text_columns=2)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--rest", metavar="URL", help="gateway REST base URL")
    target.add_argument("--grpc", metavar="HOST:PORT", help="gateway gRPC address")
    p.add_argument("--metrics", nargs="*", default=[], metavar="URL",
                   help="Prometheus endpoints to read the server-side split from")
    p.add_argument("--images", nargs="+", type=Path, default=DEFAULT_IMAGES)
    p.add_argument("--persons", type=int, default=1, help="boxes per request (default 1)")
    p.add_argument("--concurrency", type=int, nargs="*", default=[1, 2, 4, 8])
    p.add_argument("--rate", type=float, nargs="*", default=[], help="open-loop requests/s")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up at c=1")
    p.add_argument("--json", type=Path, help="write the rows here")
    return p


async def _main(args: argparse.Namespace) -> list[dict[str, Any]]:
    payloads = load_payloads(args.images, args.persons)
    levels = dict(concurrency=args.concurrency, rates=args.rate, duration_s=args.duration,
                  warmup_s=args.warmup, metrics_urls=args.metrics)
    if args.rest:
        limits = httpx.Limits(max_connections=max([*args.concurrency, 1]) + 64)
        async with httpx.AsyncClient(base_url=args.rest, timeout=120, limits=limits) as client:
            return await run_levels(rest_sender(client), payloads, **levels)
    import grpc

    async with grpc.aio.insecure_channel(args.grpc) as channel:
        return await run_levels(grpc_sender(channel), payloads, **levels)


def main(args: argparse.Namespace) -> None:
    rows = asyncio.run(_main(args))
    for r in rows:
        r["target"] = "rest" if args.rest else "grpc"
    print(table(rows))
    if args.json:
        write_json(args.json, {"rows": rows})


if __name__ == "__main__":
    main(get_args_parser().parse_args())
