"""Batching of person crops across concurrent requests.

Callers `submit` the crops of one request, shaped (k, 3, 256, 256) uint8, with an absolute
deadline on the loop's clock, and await their k output rows. One background task stacks queued
crops into batches of at most `max_batch_size`, waiting at most `max_wait_s` after the oldest
queued crop arrived, and awaits the async `infer` once per batch. Every request has one future;
a batch's rows are sliced back to their requests (a request may span batches and still gets its
rows in order), and a failed batch fans its error out to every waiter in it.

Errors raised by `submit` (see `service.errors`):

    InvalidRequest      more crops than the queue can ever hold (`max_queue`)
    Overloaded          no room for the crops in the queue, or the work already queued and in
                        flight would keep them past their deadline (`Batcher.admit`); nothing
                        enqueued; `retry_after` is the estimated time to drain the queue
    DeadlineExceeded    deadline passed while queued (crops dropped, never inferred) or during
                        inference (answered at the deadline; the batch goes on for the others)
    BackendUnavailable  not started or shutting down; or `infer` raised a non-ServiceError or
                        returned the wrong number of rows (logged; the client gets a safe message)
    ServiceError        raised by `infer` (Triton's queue full as Overloaded, say): passed through
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from posecontract.layout import INPUT
from service import errors

logger = logging.getLogger(__name__)

Infer = Callable[[np.ndarray], Awaitable[dict[str, np.ndarray]]]
BatchObserver = Callable[[int, list[float], float], None]

MIN_RETRY_AFTER_S = 0.1  # floor of the 429 hint, so that clients do not retry in a tight loop
_EWMA_WEIGHT = 0.2  # weight of the newest batch in the batch-cost fit
# A batch's time counts as at most this factor above (or below) the fit's prediction: a lone
# stall (a neighbour taking the cores) must not refuse the next requests, while a lasting
# slowdown still shows within a few batches.
_EWMA_STEP = 1.5
_RATE_WINDOW_S = 2.0  # time constant of the decaying count behind `Batcher.arrival_rate`
# Share of a request's remaining deadline that its expected wait may fill before it is refused:
# the rest is for decoding, post-processing, encoding the answer and the estimate's own error.
ADMISSION_SHARE = 0.8
# `Lateness`: the quantile of (actual wait - expected wait) that admission plans for, and its
# step per observation as a share of that observation's expected wait (or of the lateness).
_LATENESS_QUANTILE = 0.9
_LATENESS_STEP = 0.1


class BatchCost:
    """Seconds per batch of n crops as a + c * n, fitted to recent batches.

    Exponentially weighted least squares (the newest batch weighs _EWMA_WEIGHT). A fixed cost
    per call (a: Triton's round trip) and a cost per crop (c: CPU inference) both matter: a
    model of cost per crop alone makes small batches look dear, refuses the work that would
    have filled larger ones, and so keeps the batches small. While the batches seen have all
    had about one size, the cost of other sizes is unknown and taken to be that size's:
    optimistic for larger batches until they are seen.
    """

    def __init__(self) -> None:
        self._sums = np.zeros(5)  # weighted sums of 1, n, n^2, t, n t
        # (a, c) of the fit, or (mean t, 0) while there is no line; None before any batch.
        # Refitted once per batch, as admission predicts many times per request.
        self._fit: tuple[float, float] | None = None
        self._has_line = False

    def add(self, n: int, seconds: float) -> None:
        if self._has_line:  # while there is no line, a new size is news, not an outlier
            assert self._fit is not None
            predicted = self._fit[0] + self._fit[1] * n
            seconds = min(max(seconds, predicted / _EWMA_STEP), predicted * _EWMA_STEP)
        self._sums *= 1 - _EWMA_WEIGHT
        self._sums += (1.0, n, n * n, seconds, n * seconds)
        line = self._line()
        self._has_line = line is not None
        self._fit = line if line is not None else (float(self._sums[3] / self._sums[0]), 0.0)

    def _line(self) -> tuple[float, float] | None:
        """(a, c) once batches of more than about one size have been seen, else None."""
        w, sn, snn, st, snt = self._sums
        if w == 0:
            return None
        mean_n, mean_t = sn / w, st / w
        variance = snn / w - mean_n**2
        if variance < 0.25:
            return None
        c = (snt / w - mean_n * mean_t) / variance
        a = mean_t - c * mean_n
        if c < 0:  # noise: larger batches cannot be cheaper
            return float(mean_t), 0.0
        if a < 0:  # nor can a call cost less than nothing: the line through the origin
            return 0.0, float(snt / snn)
        return float(a), float(c)

    def predict(self, n: float) -> float | None:
        """Seconds for a batch of `n` crops; None before any batch was timed."""
        if self._fit is None:
            return None
        return self._fit[0] + self._fit[1] * n  # about one batch size so far: c = 0


class Lateness:
    """A running upper quantile of how much longer requests waited than `expected_done_s` said.

    The expected wait is a model and runs late: a backend that merges the gateway's concurrent
    calls makes a batch pay for the one behind it, a shared CPU stalls a batch now and then,
    and admission biases it low (while the estimate dips, requests are admitted up to the
    lower bound and stay queued when it comes back up). Each request answered, or still
    waiting at its deadline, feeds its lateness, actual - expected, in seconds; `seconds`
    tracks its _LATENESS_QUANTILE quantile by stochastic approximation (up by q * step when a
    lateness exceeds it, down by (1 - q) * step otherwise, never below 0), the step being
    _LATENESS_STEP of that request's expected wait or of the lateness itself, whichever is
    larger. Lateness is added, not multiplied: a stall behind a short queue (expected 0.1 s,
    waited 0.8 s) says the backend can stall, not that every queue takes eight times its
    estimate, and requests that waited for little move a small lateness little; a large one
    moves by its own scale, so that after a burst of stalls it decays within about a hundred
    requests (1 % each) rather than staying up while the queue is short.
    """

    def __init__(self) -> None:
        self.seconds = 0.0

    def add(self, waited: float, expected: float) -> None:
        q, step = _LATENESS_QUANTILE, _LATENESS_STEP * max(expected, self.seconds)
        self.seconds = max(0.0, self.seconds + step * (q if waited - expected > self.seconds
                                                        else q - 1))


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


@dataclass(eq=False)
class _InFlight:
    size: int
    accrued: float = 0.0  # backend time accrued so far (see `Batcher._accrue`)


@dataclass(frozen=True)
class _Slice:
    request: _Request
    start: int
    stop: int


class Reservation:
    """Crops admitted by `Batcher.reserve`, counted as coming until `release`."""

    def __init__(self, batcher: Batcher, k: int):
        self._batcher, self._k = batcher, k

    def release(self) -> None:
        if self._k:
            self._batcher._pending -= self._k
            self._k = 0


class Batcher:
    """Batch the crops of concurrent requests into calls of an async `infer`, on one event loop.

    `infer` takes a stacked uint8 batch (N, 3, 256, 256) and returns arrays with leading dim N; it
    must not block the event loop (backends run inference in a thread or remotely). `max_queue`
    bounds the crops waiting, not those in flight. Up to `max_concurrent_batches` batches run at
    once (more than one suits backends that pipeline, such as Triton or GPU streams); the next
    batch keeps collecting crops while all slots are busy. `on_batch(size, queue_wait_s, infer_s)`
    is called after every batch `infer` answered, with rows or an error, with one queue wait (from
    the request's arrival to the batch's start) per crop.
    """

    def __init__(self, infer: Infer, *, max_batch_size: int, max_wait_s: float, max_queue: int,
                 max_concurrent_batches: int = 1, name: str = "batcher",
                 on_batch: BatchObserver | None = None):
        if min(max_batch_size, max_queue, max_concurrent_batches) < 1 or max_wait_s < 0:
            raise ValueError(f"{name}: max_batch_size, max_queue, max_concurrent_batches must be "
                             f">= 1 and max_wait_s >= 0, got {max_batch_size}, {max_queue}, "
                             f"{max_concurrent_batches}, {max_wait_s}")
        self.name = name
        self._infer = infer
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._max_queue = max_queue
        self._max_concurrent = max_concurrent_batches
        self._on_batch = on_batch
        self._queue: deque[_Request] = deque()
        self._queued_items = 0
        self._pending = 0  # crops admitted by `reserve` that are not yet submitted
        self._in_flight = 0
        self._cost = BatchCost()
        self.lateness = Lateness()
        self._arrivals = 0.0  # crops queued, exponentially decayed (see `arrival_rate`)
        self._arrivals_at = 0.0  # loop time `_arrivals` was last brought up to date
        self._running: set[_InFlight] = set()  # batches in flight
        self._accrued_at = 0.0  # loop time the accruals were last brought up to date
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(max_concurrent_batches)
        self._batches: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def queue_depth(self) -> int:
        """Crops waiting in the queue."""
        return self._queued_items

    @property
    def reserved(self) -> int:
        """Crops admitted by `reserve` and not yet submitted."""
        return self._pending

    @property
    def in_flight(self) -> int:
        """Crops in batches that `infer` is running."""
        return self._in_flight

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
        if items.dtype != np.uint8 or items.shape[1:] != INPUT.dims or len(items) == 0:
            shape = ", ".join(map(str, INPUT.dims))
            raise ValueError(f"items must be uint8 (k, {shape}) with k >= 1, "
                             f"got {items.dtype} {items.shape}")
        if self._task is None or self._stopping:
            state = "shutting down" if self._stopping else "not started"
            raise errors.BackendUnavailable(f"{self.name} is {state}")
        k = len(items)
        if k > self._max_queue:
            raise errors.InvalidRequest(f"too many person crops ({k}); at most {self._max_queue}")
        loop = asyncio.get_running_loop()
        now = loop.time()
        if deadline <= now:
            raise errors.DeadlineExceeded("the request deadline passed before it was queued")
        expected = self.admit(k, deadline)
        request = _Request(items, deadline, now, loop.create_future())
        self._queue.append(request)
        self._queued_items += k
        self._count_arrival(k, now)
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
            self.lateness.add(loop.time() - now, expected)
        if not done:
            where = "in the queue" if request.taken == 0 else "during inference"
            raise errors.DeadlineExceeded(f"the request deadline passed {where}")
        return future.result()

    def admit(self, k: int, deadline: float, passes: int = 1, *, reserving: bool = False
              ) -> float | None:
        """Raise Overloaded if `k` crops, queued now, cannot be inferred before `deadline`.

        `submit` calls this; callers may also call it before costly work that precedes `submit`
        (decoding an image), so that a request the service cannot serve in time is refused at
        once rather than after that work. `passes` > 1 stands for a request that will submit
        `k` crops that many times in a row (each pass waits its turn again).

        Two refusals: the queue has no room for `k` more crops (`max_queue`; when `reserving`,
        the crops reserved and not yet submitted take room too), or the expected time to infer
        them behind the work already queued and in flight (`expected_done_s`, plus the
        `lateness` that estimate has recently shown, which may take at most half of the time
        allowed) exceeds ADMISSION_SHARE of the time left. The second applies only once a batch
        has been measured, never while the backend is idle (nothing queued, coming or in
        flight), and only when the crops alone on an idle backend would fit: a deadline too
        short for any load is not overload, and such requests go on to end with
        DeadlineExceeded. Neither check is made for k > max_queue (`submit` says
        InvalidRequest) or k = 0.

        Returns `expected_done_s(k)`: None before a batch has been timed.
        """
        if k == 0 or k > self._max_queue:
            return None
        coming = self._queued_items + (self._pending if reserving else 0)
        if coming + k > self._max_queue:
            raise errors.Overloaded(f"{self.name} is busy: {coming} of {self._max_queue} crops "
                                    f"waiting or coming, no room for {k} more",
                                    retry_after=self._retry_after(k))
        expected = self.expected_done_s(k)
        if expected is None:
            return None
        allowed = ADMISSION_SHARE * (deadline - asyncio.get_running_loop().time())
        planned = passes * expected + min(passes * self.lateness.seconds, allowed / 2)
        idle = not (self._queued_items or self._pending or self._in_flight)
        if planned > allowed and not idle and passes * self._alone_s(k) <= allowed:
            raise errors.Overloaded(
                f"{self.name} is busy: {self._queued_items} crops waiting and {self._in_flight} in "
                f"flight; {k} more would be done in about {planned:.2f} s, later than "
                f"the request's deadline allows ({allowed:.2f} s)",
                retry_after=max(MIN_RETRY_AFTER_S, expected))
        return expected

    def reserve(self, k: int, deadline: float, passes: int = 1) -> Reservation:
        """`admit`, then count the `k` crops as coming until the reservation is released.

        For callers that admit before costly work (decoding) and submit after: while that work
        runs, the crops count in `expected_done_s`, so that a burst of requests cannot all be
        admitted against the same short queue. Release it (idempotent) just before `submit`.
        """
        self.admit(k, deadline, passes, reserving=True)
        self._pending += k
        return Reservation(self, k)

    def expected_done_s(self, k: int) -> float | None:
        """Estimated seconds from now until `k` crops queued behind the present queue are done.

        The backend is modelled as working through batches one after another, each taking the
        `BatchCost` of its size. That cost is learnt from the backend time each batch accrued
        (see `_accrue`), not from its own start and end: batches that a backend runs side by
        side (several GPU streams or model instances) then cost less each, and those it runs in
        turn (one Triton model instance behind the gateway's concurrent calls) are not counted
        twice as fast. The batches in flight come first (each less the time it has accrued),
        then the queued crops and those reserved but not yet submitted, then the `k` new ones,
        in batches of at most `max_batch_size`. A batch that must wait keeps collecting the
        crops that arrive meanwhile (at the recent rate of queued crops), up to a full batch.
        None until a batch has been timed.
        """
        cost = self._cost.predict
        if cost(1) is None:
            return None
        self._accrue(asyncio.get_running_loop().time())
        t = 0.0  # seconds from now until the backend is through the work counted so far
        for batch in self._running:
            t += max(0.0, (cost(batch.size) or 0.0) - batch.accrued)
        rate = self.arrival_rate()
        n = self._queued_items + self._pending + k
        while n > 0:
            size = min(n, self._max_batch_size)
            t += cost(min(self._max_batch_size, size + rate * t)) or 0.0
            n -= size
        return t

    def arrival_rate(self) -> float:
        """Recent rate of crops entering the queue, per second (decaying over _RATE_WINDOW_S)."""
        age = asyncio.get_running_loop().time() - self._arrivals_at
        return self._arrivals * math.exp(-age / _RATE_WINDOW_S) / _RATE_WINDOW_S

    def _accrue(self, now: float) -> None:
        """Share the time since the last update equally among the batches in flight.

        While m batches are in flight each accrues 1/m of the elapsed time, so a batch's accrual
        at its end is its share of the time the backend was busy: all of it when alone, half
        when another ran beside it throughout. The accruals of all batches add up to the time
        the backend was busy, whatever it did in parallel or in turn.
        """
        if self._running:
            share = (now - self._accrued_at) / len(self._running)
            for batch in self._running:
                batch.accrued += share
        self._accrued_at = now

    def _count_arrival(self, k: int, now: float) -> None:
        self._arrivals = self._arrivals * math.exp(-(now - self._arrivals_at) / _RATE_WINDOW_S) + k
        self._arrivals_at = now

    def _alone_s(self, k: int) -> float:
        """Estimated seconds to infer `k` crops on an idle backend (needs a measurement)."""
        full, rest = divmod(k, self._max_batch_size)
        cost = self._cost.predict
        return full * (cost(self._max_batch_size) or 0.0) + ((cost(rest) or 0.0) if rest else 0.0)

    def _retry_after(self, k: int) -> float:
        """Estimate the seconds until the queue, plus `k` crops, has drained.

        `expected_done_s(k)` once a batch has been measured; before, max_wait_s per round of
        batches. Draining everything, rather than just making room for `k`, spreads out the
        retries of clients rejected together.
        """
        expected = self.expected_done_s(k)
        if expected is None:
            batches = math.ceil((self._queued_items + k) / self._max_batch_size)
            expected = math.ceil(batches / self._max_concurrent) * self._max_wait_s
        return max(MIN_RETRY_AFTER_S, expected)

    def _drop(self, request: _Request) -> None:
        """Take the request's untaken crops out of the queue; a no-op when it holds none."""
        if request.queued:
            request.queued = False
            self._queue.remove(request)
            self._queued_items -= request.remaining
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
            self._in_flight += size
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
                flush_at = self._queue[0].arrival + self._max_wait_s
                if self._queued_items >= self._max_batch_size or now >= flush_at or self._stopping:
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
        while self._queue and size < self._max_batch_size:
            request = self._queue[0]
            if request.deadline <= now:
                # Its own timer in `submit` answers with DeadlineExceeded; do not infer it.
                self._drop(request)
                continue
            n = min(request.remaining, self._max_batch_size - size)
            batch.append(_Slice(request, request.taken, request.taken + n))
            request.taken += n
            self._queued_items -= n
            size += n
            if request.remaining == 0:
                self._queue.popleft()
                request.queued = False
        return batch

    async def _run_batch(self, batch: list[_Slice], size: int) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        running = _InFlight(size)
        self._accrue(start)
        self._running.add(running)
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
            self._accrue(done)
            self._running.remove(running)
            self._in_flight -= size
            self._slots.release()
            if error is not None:
                for s in batch:
                    self._fail(s.request, error)
        if error is None:
            self._cost.add(size, running.accrued)
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
