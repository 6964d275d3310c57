"""The Triton backend: the model served by NVIDIA Triton, called with tritonclient's asyncio gRPC.

Tensors travel as binary gRPC payloads (heatmaps are 209 kB per person; never JSON). Every call
asks for the five outputs of `posecontract.layout.OUTPUTS`, and for `visibility` when the model's
metadata lists it (models with a visibility head). Readiness is Triton's model-ready for
this model, not the server's readiness (which goes false while any model loads).

Triton's failures become the service's errors (`service.errors`), which the batcher passes
through to the client:

    queue full ("exceeds maximum queue size")     Overloaded (429), retry_after = estimated drain
    client_timeout passed, queue timeout expired  DeadlineExceeded (504)
    cannot connect, server shutting down          BackendUnavailable (503)
    model unknown, unloaded or not ready          BackendUnavailable (503)
    request rejected as invalid                   ServiceError (500): a contract mismatch, logged
    anything else from Triton                     BackendUnavailable (503), logged

Recovery needs no gateway restart: the channel reconnects by itself with a backoff capped at a
second (gRPC's default grows to two minutes), and after a connection failure the next call opens
a fresh channel (at most one a second); the old one is closed once its calls have timed out.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import numpy as np
import tritonclient.grpc.aio as triton
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE
from tritonclient.utils import InferenceServerException

from posecontract.layout import POSE, ModelContract, TensorSpec
from service import errors
from service.backends.base import ModelInfo
from service.batching import MIN_RETRY_AFTER_S

log = logging.getLogger(__name__)

_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),  # a batch of 32 is 20 MB
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
_RECONNECT_INTERVAL_S = 1.0  # open at most one fresh channel a second while Triton is away
_READY_TIMEOUT_S = 2.0  # a readiness probe must answer quickly, whatever `timeout_s` is
_EWMA_WEIGHT = 0.2  # weight of the newest call in the running mean of call latency


def _triton_dtype(spec_dtype: str) -> str:
    return spec_dtype.removeprefix("TYPE_")  # config says TYPE_FP32, the protocol FP32


class TritonBackend:
    """Calls model `model_name` (version `model_version`, "" = Triton's choice) at `url`.

    `url` is Triton's gRPC address, `host:port` (no scheme). `timeout_s` bounds each call
    (gRPC deadline); `start_timeout_s` is how long `start` waits for the model to be ready.
    `contract` is the model's tensors: the pose model's by default, the person detector's for
    the detector (a second model on the same server, with a backend of its own).
    """

    kind = "triton"

    def __init__(self, url: str, model_name: str, model_version: str = "",
                 timeout_s: float = 30.0, *, start_timeout_s: float = 60.0,
                 contract: ModelContract = POSE):
        if "://" in url:
            raise ValueError(f"Triton's gRPC url is host:port without a scheme, got {url!r}")
        self.url, self.model_name, self.model_version = url, model_name, model_version
        self._timeout_s = timeout_s
        self._start_timeout_s = start_timeout_s
        self._client: triton.InferenceServerClient | None = None
        self._client_born = 0.0
        self._closing: set[asyncio.Task[None]] = set()
        self._info: ModelInfo | None = None
        self.contract = contract
        # The contract's outputs, with the optional ones the model serves.
        self._outputs: tuple[TensorSpec, ...] = contract.outputs
        self._max_batch_size = 0
        self._max_queue_size = 0
        self._latency_s: float | None = None  # running mean of successful calls

    # -- connection -------------------------------------------------------------------------

    def _connection(self) -> triton.InferenceServerClient:
        """The current client, opened on first use (inside the event loop that uses it)."""
        if self._client is None:
            self._client = triton.InferenceServerClient(self.url, channel_args=_CHANNEL_ARGS)
            self._client_born = time.monotonic()
        return self._client

    def _reconnect(self, client: triton.InferenceServerClient) -> None:
        """After a connection failure on `client`, let the next call open a fresh channel."""
        if client is not self._client or time.monotonic() - self._client_born < \
                _RECONNECT_INTERVAL_S:
            return
        self._client = None
        task = asyncio.get_running_loop().create_task(self._close_later(client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_later(self, client: triton.InferenceServerClient) -> None:
        # Closing a channel cancels its calls: wait until those still running have ended by
        # their deadline (or `stop` cancels the wait).
        try:
            await asyncio.sleep(self._timeout_s + 1)
        finally:
            await client.close()

    # -- protocol ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Wait for the model to be ready, then read and check its metadata and config."""
        deadline = time.monotonic() + self._start_timeout_s
        while not await self.ready():
            if time.monotonic() >= deadline:
                raise errors.BackendUnavailable(
                    f"Triton at {self.url} did not report model {self.model_name!r} ready "
                    f"within {self._start_timeout_s:g} s"
                )
            await asyncio.sleep(0.5)
        client = self._connection()
        try:
            server = await client.get_server_metadata(client_timeout=self._timeout_s)
            meta = await client.get_model_metadata(self.model_name, self.model_version,
                                                   client_timeout=self._timeout_s)
            config = (await client.get_model_config(self.model_name, self.model_version,
                                                    client_timeout=self._timeout_s)).config
        except InferenceServerException as exc:
            raise errors.BackendUnavailable(
                f"Cannot read model {self.model_name!r} from Triton at {self.url}: {exc}"
            ) from exc
        self._check_contract(meta)
        self._max_batch_size = config.max_batch_size
        self._max_queue_size = config.dynamic_batching.default_queue_policy.max_queue_size
        version = self.model_version or max(meta.versions, key=int)
        self._info = ModelInfo(self.model_name, version, {"triton": {
            "url": self.url,
            "server_version": server.version,
            "platform": meta.platform,
            "versions": list(meta.versions),
            "max_batch_size": config.max_batch_size,
            "max_queue_size": self._max_queue_size,
        }})
        log.info("Triton at %s serves %s version %s (%s, max batch %d)", self.url,
                 self.model_name, version, meta.platform, config.max_batch_size)

    async def present(self) -> bool:
        """Whether Triton's model repository holds this model at all (loaded or not): an
        optional model (the person detector) that is absent is left out, not waited for."""
        client = self._connection()
        try:
            index = await client.get_model_repository_index(client_timeout=self._timeout_s)
        except InferenceServerException as exc:
            raise errors.BackendUnavailable(
                f"Cannot read Triton's model repository at {self.url}: {exc}") from exc
        return any(m.name == self.model_name for m in index.models)

    def _check_contract(self, meta) -> None:
        """Raise BackendUnavailable unless Triton's tensors are those of the contract."""
        def table(tensors) -> dict[str, tuple[str, tuple[int, ...]]]:
            return {t.name: (t.datatype, tuple(t.shape)) for t in tensors}

        c = self.contract
        want_in = {c.input.name: (_triton_dtype(c.input.dtype), (-1, *c.input.dims))}
        want_out = {s.name: (_triton_dtype(s.dtype), (-1, *s.dims)) for s in c.outputs}
        optional = {s.name: (_triton_dtype(s.dtype), (-1, *s.dims)) for s in c.optional}
        got_in, got_out = table(meta.inputs), table(meta.outputs)
        if (got_in != want_in or any(got_out.get(k) != v for k, v in want_out.items())
                or any(got_out[k] != v for k, v in optional.items() if k in got_out)):
            raise errors.BackendUnavailable(
                f"Triton's model {self.model_name!r} does not follow the export contract: "
                f"inputs {got_in}, outputs {got_out}; expected inputs {want_in} and outputs "
                f"{want_out}, optionally {optional} (batch dimension first, -1)"
            )
        self._outputs = c.outputs + tuple(s for s in c.optional if s.name in got_out)

    async def stop(self) -> None:
        client, self._client = self._client, None
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        if client is not None:
            await client.close()

    async def ready(self) -> bool:
        client = self._connection()
        try:
            return await client.is_model_ready(self.model_name, self.model_version,
                                               client_timeout=_READY_TIMEOUT_S)
        except InferenceServerException as exc:
            if (exc.status() or "").endswith(("UNAVAILABLE", "DEADLINE_EXCEEDED")):
                self._reconnect(client)
            return False

    def info(self) -> ModelInfo:
        if self._info is None:
            raise errors.BackendUnavailable("The Triton backend has not been started")
        return self._info

    async def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 (N, *input dims) -> the contract's outputs; split if N exceeds Triton's batch
        limit."""
        if self._info is None:
            raise errors.BackendUnavailable("The Triton backend has not been started")
        step = self._max_batch_size or len(images)
        if len(images) <= step:
            return await self._infer(images)
        parts = await asyncio.gather(*(self._infer(images[i : i + step])
                                       for i in range(0, len(images), step)))
        return {s.key: np.concatenate([p[s.key] for p in parts]) for s in self._outputs}

    async def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        client = self._connection()
        spec = self.contract.input
        tensor = triton.InferInput(spec.name, list(images.shape), _triton_dtype(spec.dtype))
        tensor.set_data_from_numpy(np.ascontiguousarray(images))
        wanted = [triton.InferRequestedOutput(s.name) for s in self._outputs]
        start = time.monotonic()
        try:
            result = await client.infer(self.model_name, [tensor], self.model_version,
                                        outputs=wanted, client_timeout=self._timeout_s)
        except InferenceServerException as exc:
            raise self._error(exc, client) from exc
        took = time.monotonic() - start
        self._latency_s = took if self._latency_s is None else \
            self._latency_s + _EWMA_WEIGHT * (took - self._latency_s)
        return {s.key: result.as_numpy(s.name) for s in self._outputs}

    # -- errors -----------------------------------------------------------------------------

    def _retry_after(self) -> float:
        """Seconds for Triton to drain a full queue: its batches times the mean call latency."""
        if self._latency_s is None or not self._max_queue_size:
            return MIN_RETRY_AFTER_S
        batches = math.ceil(self._max_queue_size / max(self._max_batch_size, 1))
        return max(MIN_RETRY_AFTER_S, batches * self._latency_s)

    def _error(self, exc: InferenceServerException, client) -> errors.ServiceError:
        """The service error for a failed Triton call (see the module docstring)."""
        status = (exc.status() or "").removeprefix("StatusCode.")
        message = exc.message() or ""
        lowered = message.lower()
        name = self.model_name
        if "maximum queue size" in lowered:
            return errors.Overloaded(f"Triton's queue for {name!r} is full; retry later",
                                     retry_after=self._retry_after())
        if status == "DEADLINE_EXCEEDED":
            return errors.DeadlineExceeded(f"Triton did not answer within {self._timeout_s:g} s")
        if "timeout expired" in lowered:
            return errors.DeadlineExceeded(f"The request timed out in Triton's queue for {name!r}")
        if "unknown model" in lowered or "not ready" in lowered or status == "NOT_FOUND":
            return errors.BackendUnavailable(f"Triton does not serve model {name!r} now")
        if status == "UNAVAILABLE":
            self._reconnect(client)
            return errors.BackendUnavailable(f"Triton at {self.url} is unavailable")
        log.warning("Triton failed a batch for %s: [%s] %s", name, status, message)
        if status == "INVALID_ARGUMENT":
            return errors.ServiceError(f"Triton rejected the batch for {name!r} as invalid")
        return errors.BackendUnavailable(f"Triton failed the batch for {name!r} ({status})")
