"""Admission: whether k more crops can be inferred before a deadline, given the work ahead.

`Admission` owns what stands between a new crop and the backend: the crops queued, reserved
(admitted before a costly step, not yet submitted) and in flight, the batches in flight with
the backend time each has accrued, and the estimators (`service.batching.estimators`). The
batch loop tells it what happens (`enqueued`, `dequeued`, `batch_taken`, `batch_started`,
`batch_finished`); callers ask it (`admit`, `reserve`, `expected_done_s`, `arrival_rate`,
`retry_after`). docs/batching.md gives the rules and their reasons.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from service import errors
from service.batching.estimators import ArrivalRate, BatchCost, Lateness

MIN_RETRY_AFTER_S = 0.1  # floor of the 429 hint, so that clients do not retry in a tight loop
# Share of a request's remaining deadline that its expected wait may fill before it is refused:
# the rest is for decoding, post-processing, encoding the answer and the estimate's own error.
ADMISSION_SHARE = 0.8


@dataclass(frozen=True)
class Limits:
    """The batcher's bounds, shared by the loop and admission."""

    max_batch_size: int
    max_wait_s: float
    max_queue: int
    max_concurrent_batches: int = 1

    def __post_init__(self) -> None:
        if min(self.max_batch_size, self.max_queue, self.max_concurrent_batches) < 1 \
                or self.max_wait_s < 0:
            raise ValueError(f"max_batch_size, max_queue, max_concurrent_batches must be >= 1 "
                             f"and max_wait_s >= 0, got {self.max_batch_size}, "
                             f"{self.max_queue}, {self.max_concurrent_batches}, "
                             f"{self.max_wait_s}")


@dataclass(eq=False)
class InFlight:
    """A batch the backend is running: its size and the backend time it has accrued so far."""

    size: int
    accrued: float = 0.0


class Reservation:
    """Crops admitted by `Admission.reserve`, counted as coming until `release` (idempotent)."""

    def __init__(self, admission: Admission, k: int):
        self._admission, self._k = admission, k

    def release(self) -> None:
        if self._k:
            self._admission.unreserve(self._k)
            self._k = 0


class Admission:
    """The work ahead of a new crop, and the decision to take it or refuse it (Overloaded)."""

    def __init__(self, limits: Limits, *, name: str, clock: Callable[[], float]):
        self.limits = limits
        self.name = name
        self._clock = clock
        self.queued = 0    # crops waiting in the loop's queue
        self.reserved = 0  # crops admitted by `reserve`, not yet submitted
        self.in_flight = 0  # crops in batches the backend is running
        self._running: set[InFlight] = set()
        self._accrued_at = 0.0  # clock time the accruals were last brought up to date
        self.cost = BatchCost()
        self.lateness = Lateness()
        self.arrivals = ArrivalRate()

    # What the batch loop reports.

    def enqueued(self, k: int, now: float) -> None:
        self.queued += k
        self.arrivals.add(k, now)

    def dequeued(self, k: int) -> None:
        """`k` queued crops left the queue: taken into a batch, or dropped."""
        self.queued -= k

    def batch_taken(self, size: int) -> None:
        """A batch of `size` crops left the queue for the backend: they count as in flight."""
        self.in_flight += size

    def batch_started(self, size: int, now: float) -> InFlight:
        """The backend call of a taken batch begins: from now on it accrues backend time."""
        self._accrue(now)
        batch = InFlight(size)
        self._running.add(batch)
        return batch

    def batch_finished(self, batch: InFlight, now: float, ok: bool) -> None:
        """The backend answered `batch`: with rows (`ok`, its accrued time is a cost sample)
        or with an error."""
        self._accrue(now)
        self._running.remove(batch)
        self.in_flight -= batch.size
        if ok:
            self.cost.add(batch.size, batch.accrued)

    def unreserve(self, k: int) -> None:
        self.reserved -= k

    # What callers ask.

    def admit(self, k: int, deadline: float, passes: int = 1, *, reserving: bool = False
              ) -> float | None:
        """Raise Overloaded if `k` crops, queued now, cannot be inferred before `deadline`
        (`passes` times in a row); else return `expected_done_s(k)` (None before a batch was
        timed). No check for k = 0 or k > max_queue (the loop refuses that as InvalidRequest).
        """
        if k == 0 or k > self.limits.max_queue:
            return None
        coming = self.queued + (self.reserved if reserving else 0)
        if coming + k > self.limits.max_queue:
            raise errors.Overloaded(f"{self.name} is busy: {coming} of {self.limits.max_queue} "
                                    f"crops waiting or coming, no room for {k} more",
                                    retry_after=self.retry_after(k))
        expected = self.expected_done_s(k)
        if expected is None:
            return None
        allowed = ADMISSION_SHARE * (deadline - self._clock())
        planned = passes * expected + min(passes * self.lateness.seconds, allowed / 2)
        idle = not (self.queued or self.reserved or self.in_flight)
        if planned > allowed and not idle and passes * self._alone_s(k) <= allowed:
            raise errors.Overloaded(
                f"{self.name} is busy: {self.queued} crops waiting and {self.in_flight} in "
                f"flight; {k} more would be done in about {planned:.2f} s, later than "
                f"the request's deadline allows ({allowed:.2f} s)",
                retry_after=max(MIN_RETRY_AFTER_S, expected))
        return expected

    def reserve(self, k: int, deadline: float, passes: int = 1) -> Reservation:
        """`admit`, then count the `k` crops as coming until the reservation is released."""
        self.admit(k, deadline, passes, reserving=True)
        self.reserved += k
        return Reservation(self, k)

    def expected_done_s(self, k: int) -> float | None:
        """Estimated seconds from now until `k` crops queued behind the present work are done:
        the batches in flight (less what they accrued), then the queued and reserved crops,
        then the `k`, in batches of at most max_batch_size that keep collecting the crops that
        arrive while they wait. None until a batch has been timed."""
        cost = self.cost.predict
        if cost(1) is None:
            return None
        now = self._clock()
        self._accrue(now)
        t = 0.0  # seconds from now until the backend is through the work counted so far
        for batch in self._running:
            t += max(0.0, (cost(batch.size) or 0.0) - batch.accrued)
        rate = self.arrivals.per_second(now)
        n = self.queued + self.reserved + k
        while n > 0:
            size = min(n, self.limits.max_batch_size)
            t += cost(min(self.limits.max_batch_size, size + rate * t)) or 0.0
            n -= size
        return t

    def arrival_rate(self) -> float:
        """Crops per second entering the queue lately."""
        return self.arrivals.per_second(self._clock())

    def retry_after(self, k: int) -> float:
        """Seconds until the queue, plus `k` crops, has drained: `expected_done_s(k)`, or before
        any batch was timed, max_wait_s per round of batches (at least MIN_RETRY_AFTER_S)."""
        expected = self.expected_done_s(k)
        if expected is None:
            batches = math.ceil((self.queued + k) / self.limits.max_batch_size)
            rounds = math.ceil(batches / self.limits.max_concurrent_batches)
            expected = rounds * self.limits.max_wait_s
        return max(MIN_RETRY_AFTER_S, expected)

    def _alone_s(self, k: int) -> float:
        """Estimated seconds to infer `k` crops on an idle backend (needs a measurement)."""
        full, rest = divmod(k, self.limits.max_batch_size)
        cost = self.cost.predict
        alone = full * (cost(self.limits.max_batch_size) or 0.0)
        return alone + ((cost(rest) or 0.0) if rest else 0.0)

    def _accrue(self, now: float) -> None:
        """Share the time since the last update equally among the batches in flight."""
        if self._running:
            share = (now - self._accrued_at) / len(self._running)
            for batch in self._running:
                batch.accrued += share
        self._accrued_at = now
