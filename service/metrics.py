"""Prometheus metrics of the gateway, on a registry of their own (one per app instance)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                    10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Request, stage, batching and model metrics.

    Requests are labelled by transport: REST with the URL path and HTTP status, gRPC with the
    full method name (`/pose.v1.PoseService/Predict`) and status code name (`OK`,
    `INVALID_ARGUMENT`, ...); each StreamPredict frame counts as one request.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("margipose_requests", "Requests by route, transport and status.",
                                ["route", "transport", "status"], registry=r)
        self.latency = Histogram("margipose_request_duration_seconds",
                                 "End-to-end request latency by route and transport.",
                                 ["route", "transport"], buckets=_LATENCY_BUCKETS, registry=r)
        self.stage = Histogram("margipose_stage_duration_seconds",
                               "Time per processing stage (decode, crop, detect, queue_wait, "
                               "inference, postprocess).", ["stage"],
                               buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("margipose_batch_size", "Person crops per backend batch.",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.persons = Histogram("margipose_persons_per_request", "Persons returned per request.",
                                 buckets=(0, 1, 2, 4, 8, 16), registry=r)
        self.in_flight = Gauge("margipose_in_flight_requests", "Requests being processed.",
                               registry=r)
        self.queue_depth = Gauge("margipose_queue_depth", "Person crops waiting for the backend.",
                                 registry=r)
        self.model = Info("margipose_model", "The model being served.", registry=r)
        self.streams = Gauge("margipose_open_streams", "StreamPredict calls open.", registry=r)
        self.tracks = Gauge("margipose_tracks", "People followed by open StreamPredict calls "
                            "(tracks alive).", registry=r)
        self.reframed = Counter("margipose_reframed_requests",
                                "Requests that ran a re-framing pass for a person seen in part.",
                                registry=r)

    def observe_batch(self, size: int, queue_waits: list[float], infer_s: float) -> None:
        """Batcher observer: batch size, each item's queue wait, the batch's inference time."""
        self.batch_size.observe(size)
        for wait in queue_waits:
            self.stage.labels("queue_wait").observe(wait)
        self.stage.labels("inference").observe(infer_s)

    def observe_timings(self, timings_ms: dict[str, float]) -> None:
        """Record a response's per-stage timings (decode, crop_*, postprocess)."""
        if "model_reframe" in timings_ms:
            self.reframed.inc()
        for name, ms in timings_ms.items():
            if name in ("decode", "postprocess", "detect"):
                self.stage.labels(name).observe(ms / 1000)
            elif name.startswith("crop_"):
                self.stage.labels("crop").observe(ms / 1000)

    def track_queue(self, depth: Callable[[], float]) -> None:
        """Read the queue depth from the batcher at scrape time."""
        self.queue_depth.set_function(depth)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
