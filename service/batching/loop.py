"""The batch loop: person crops of concurrent requests, stacked into calls of an async `infer`.

Callers `submit` the crops of one request, shaped (k, 3, 256, 256) uint8, with an absolute
deadline on the loop's clock, and await their k output rows. One background task stacks queued
crops into batches of at most `max_batch_size`, waiting at most `max_wait_s` after the oldest
queued crop arrived, and awaits `infer` once per batch. Every request has one future; a batch's
rows are sliced back to their requests (a request may span batches and still gets its rows in
order), and a failed batch fans its error out to every waiter in it. Whether a request may
join the queue at all is `Admission`'s decision (`service.batching.admission`).

Errors raised by `submit` (see `service.errors`):

    InvalidRequest      more crops than the queue can ever hold (`max_queue`)
    Overloaded          refused by admission (no room, or it would finish past its deadline);
                        nothing enqueued; `retry_after` is the estimated time to drain the queue
    DeadlineExceeded    deadline passed while queued (crops dropped, never inferred) or during
                        inference (answered at the deadline; the batch goes on for the others)
    BackendUnavailable  not started or shutting down; or `infer` raised a non-ServiceError or
                        returned the wrong number of rows (logged; the client gets a safe message)
    ServiceError        raised by `infer` (Triton's queue full as Overloaded, say): passed through
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from posecontract.layout import INPUT
from service import errors
from service.batching.admission import Admission, Limits, Reservation

logger = logging.getLogger(__name__)

Infer = Callable[[np.ndarray], Awaitable[dict[str, np.ndarray]]]
BatchObserver = Callable[[int, list[float], float], None]


@dataclass(eq=False)
class _Request:
    items: np.ndarray  # (k, 3, H, W) uint8
    deadline: float
    arrival: float
    future: asyncio.Future[dict[str, np.ndarray]]
    taken: int = 0  # crops handed to batches so far, always a prefix of `items`
    queued: bool = True  # still in the queue with crops left to take
    rows: int = 0  # output rows received so far
    parts: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)  # (start, rows)

    @property
    def remaining(self) -> int:
        return len(self.items) - self.taken


@dataclass(frozen=True)
class _Slice:
    request: _Request
    start: int
    stop: int


class Batcher:
    """Batch the crops of concurrent requests into calls of an async `infer`, on one event loop.

    `infer` takes a stacked uint8 batch (N, 3, 256, 256) and returns arrays with leading dim N
    (`item_dims` other than (3, 256, 256): the person detector's windows); it must not block the
    event loop (backends run inference in a thread or remotely). `max_queue` bounds the crops
    waiting, not those in flight. Up to `max_concurrent_batches` batches run at
    once (more than one suits backends that pipeline, such as Triton or GPU streams); the next
    batch keeps collecting crops while all slots are busy. `on_batch(size, queue_wait_s, infer_s)`
    is called after every batch `infer` answered, with rows or an error, with one queue wait (from
    the request's arrival to the batch's start) per crop.
    """

    def __init__(self, infer: Infer, *, max_batch_size: int, max_wait_s: float, max_queue: int,
                 max_concurrent_batches: int = 1, name: str = "batcher",
                 on_batch: BatchObserver | None = None,
                 item_dims: tuple[int, ...] = INPUT.dims):
        try:
            self.limits = Limits(max_batch_size, max_wait_s, max_queue, max_concurrent_batches)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        self.name = name
        self.item_dims = tuple(item_dims)  # of one item: the pose crop's by default
        self._infer = infer
        self._on_batch = on_batch
        self._queue: deque[_Request] = deque()
        self.admission = Admission(self.limits, name=name,
                                   clock=lambda: asyncio.get_running_loop().time())
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(max_concurrent_batches)
        self._batches: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def queue_depth(self) -> int:
        """Crops waiting in the queue."""
        return self.admission.queued

    @property
    def reserved(self) -> int:
        """Crops admitted by `reserve` and not yet submitted."""
        return self.admission.reserved

    @property
    def in_flight(self) -> int:
        """Crops in batches that `infer` is running."""
        return self.admission.in_flight

    def reserve(self, k: int, deadline: float, passes: int = 1) -> Reservation:
        """Admit `k` crops (`passes` times in a row) before the costly work that precedes
        `submit` (decoding), and count them as coming until the reservation is released, just
        before `submit`. Raises Overloaded at once when they could not be done in time."""
        return self.admission.reserve(k, deadline, passes)

    def start(self) -> None:
        """Start the batching task on the running loop; `submit` is refused before."""
        if self._task is not None:
            raise RuntimeError(f"{self.name} was already started")
        self._task = asyncio.create_task(self._run(), name=f"{self.name}-batching")

    async def stop(self, drain: bool = True) -> None:
        """Refuse new requests, then finish queued and in-flight work (`drain`) or fail it.

        Without `drain`, queued and in-flight requests get BackendUnavailable and running `infer`
        calls are cancelled. With it, this waits as long as the backend takes (bound it with
        `asyncio.wait_for` if needed). Calling it again is harmless.
        """
        self._stopping = True
        self._wakeup.set()
        if self._task is None:
            return
        if drain:
            await self._task  # returns once the queue is empty
            await asyncio.gather(*self._batches)
            return
        error = errors.BackendUnavailable(f"{self.name} is shutting down")
        for request in list(self._queue):
            self._fail(request, error)
        self._task.cancel()
        for task in self._batches:
            task.cancel()  # `_run_batch` fails its waiters as it unwinds
        await asyncio.gather(self._task, *self._batches, return_exceptions=True)

    async def submit(self, items: np.ndarray, deadline: float) -> dict[str, np.ndarray]:
        """Infer `items` (k, 3, 256, 256) uint8 by `deadline` (absolute, `loop.time()` clock).

        Returns every output of `infer` with leading dim k, rows in the order of `items`. Raises
        the errors listed in the module docstring. If the caller is cancelled, its crops still
        queued are dropped and rows that come back later are discarded.
        """
        if items.dtype != np.uint8 or items.shape[1:] != self.item_dims or len(items) == 0:
            shape = ", ".join(map(str, self.item_dims))
            raise ValueError(f"items must be uint8 (k, {shape}) with k >= 1, "
                             f"got {items.dtype} {items.shape}")
        if self._task is None or self._stopping:
            state = "shutting down" if self._stopping else "not started"
            raise errors.BackendUnavailable(f"{self.name} is {state}")
        k = len(items)
        if k > self.limits.max_queue:
            raise errors.InvalidRequest(
                f"too many person crops ({k}); at most {self.limits.max_queue}")
        loop = asyncio.get_running_loop()
        now = loop.time()
        if deadline <= now:
            raise errors.DeadlineExceeded("the request deadline passed before it was queued")
        expected = self.admission.admit(k, deadline)
        request = _Request(items, deadline, now, loop.create_future())
        self._queue.append(request)
        self.admission.enqueued(k, now)
        self._wakeup.set()
        future = request.future
        try:
            done, _ = await asyncio.wait([future], timeout=deadline - now)
        finally:
            # However the wait ended (rows, error, deadline, caller cancelled), the request's
            # crops leave the queue and later rows for it find its future done.
            self._drop(request)
            if future.done():
                future.exception()  # marks an error that lost a race with cancellation as seen
            else:
                future.cancel()
        if expected and (not done or not future.exception()):
            # Answered, or still waiting at its deadline (then it would have waited longer).
            self.admission.lateness.add(loop.time() - now, expected)
        if not done:
            where = "in the queue" if request.taken == 0 else "during inference"
            raise errors.DeadlineExceeded(f"the request deadline passed {where}")
        return future.result()

    def _drop(self, request: _Request) -> None:
        """Take the request's untaken crops out of the queue; a no-op when it holds none."""
        if request.queued:
            request.queued = False
            self._queue.remove(request)
            self.admission.dequeued(request.remaining)
            self._wakeup.set()  # the oldest crop, and so the time to flush, may have changed

    def _fail(self, request: _Request, error: errors.ServiceError) -> None:
        self._drop(request)  # its other crops would only be inferred to be thrown away
        if not request.future.done():
            request.future.set_exception(error)

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()  # crops stay queued (droppable) until a slot is free
            batch = await self._collect()
            if not batch:
                return  # stopping, and the queue is empty
            size = sum(s.stop - s.start for s in batch)
            self.admission.batch_taken(size)
            task = asyncio.create_task(self._run_batch(batch, size))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _collect(self) -> list[_Slice]:
        """Wait for a batch to be due (full, oldest crop waited max_wait_s, stopping); take it."""
        loop = asyncio.get_running_loop()
        while True:
            timeout = None
            if self._queue:
                now = loop.time()
                flush_at = self._queue[0].arrival + self.limits.max_wait_s
                due = self.admission.queued >= self.limits.max_batch_size or now >= flush_at
                if due or self._stopping:
                    batch = self._take(now)
                    if batch:
                        return batch
                    continue  # every request looked at had expired
                timeout = flush_at - now
            elif self._stopping:
                return []
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                pass

    def _take(self, now: float) -> list[_Slice]:
        """Take up to max_batch_size crops in arrival order, skipping expired requests."""
        batch: list[_Slice] = []
        size = 0
        while self._queue and size < self.limits.max_batch_size:
            request = self._queue[0]
            if request.deadline <= now:
                # Its own timer in `submit` answers with DeadlineExceeded; do not infer it.
                self._drop(request)
                continue
            n = min(request.remaining, self.limits.max_batch_size - size)
            batch.append(_Slice(request, request.taken, request.taken + n))
            request.taken += n
            self.admission.dequeued(n)
            size += n
            if request.remaining == 0:
                self._queue.popleft()
                request.queued = False
        return batch

    async def _run_batch(self, batch: list[_Slice], size: int) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        running = self.admission.batch_started(size, start)
        error: errors.ServiceError | None = None  # one instance for every waiter of the batch
        try:
            x = np.concatenate([s.request.items[s.start : s.stop] for s in batch])  # (N, 3, H, W)
            outputs = await self._infer(x)
            wrong = {key: v.shape for key, v in outputs.items() if v.shape[:1] != (size,)}
            if wrong:
                raise ValueError(f"infer returned {wrong} for a batch of {size}")
        except asyncio.CancelledError:  # only `stop(drain=False)` cancels a batch
            error = errors.BackendUnavailable(f"{self.name} is shutting down")
            raise
        except errors.ServiceError as raised:
            error = raised
        except Exception as raised:
            logger.exception("%s: inference failed for a batch of %d crops", self.name, size)
            error = errors.BackendUnavailable(f"{self.name}: inference failed, please retry")
            error.__cause__ = raised
        finally:
            done = loop.time()
            infer_s = done - start
            self.admission.batch_finished(running, done, ok=error is None)
            self._slots.release()
            if error is not None:
                for s in batch:
                    self._fail(s.request, error)
        if error is None:
            self._deliver(batch, outputs)
        if self._on_batch is not None:
            waits = [start - s.request.arrival for s in batch for _ in range(s.start, s.stop)]
            try:
                self._on_batch(size, waits, infer_s)
            except Exception:
                # Metrics must never fail requests; a broken observer is a bug to see in the logs.
                logger.exception("%s: on_batch observer failed", self.name)

    def _deliver(self, batch: list[_Slice], outputs: dict[str, np.ndarray]) -> None:
        """Hand each request its rows; complete it once all its crops have come back."""
        offset = 0
        for s in batch:
            n = s.stop - s.start
            request = s.request
            if not request.future.done():  # else: cancelled, timed out or failed elsewhere
                rows = {key: v[offset : offset + n] for key, v in outputs.items()}
                request.parts.append((s.start, rows))
                request.rows += n
                if request.rows == len(request.items):
                    # With concurrent batches the parts may come back out of order.
                    parts = [rows for _, rows in sorted(request.parts, key=lambda p: p[0])]
                    request.future.set_result(
                        {key: np.concatenate([p[key] for p in parts]) for key in outputs}
                    )
            offset += n
