"""The batcher's own logic, against a fake async backend that records every batch it sees.

Each crop carries its id in every pixel, and the fake answers with that id, so a test can tell
which crops went into which batch and whether every caller got back its own rows, in order.
Timing bounds are loose (shared, noisy machines) but each one fails if the behaviour is wrong.
"""

import asyncio
import contextlib

import numpy as np
import pytest

from service.batching import ADMISSION_SHARE, RATE_WINDOW_S, BatchCost, Batcher, Lateness
from service.errors import BackendUnavailable, DeadlineExceeded, InvalidRequest, Overloaded


class FakeBackend:
    """Record each batch's crop ids; answer `id` and `twice` per crop after `delay` or `gate`."""

    def __init__(self, delay: float = 0.0, per_crop: float = 0.0, serial: bool = False):
        self.delay, self.per_crop = delay, per_crop  # a batch of n takes delay + n * per_crop
        # serial: concurrent calls run one after another, as on one model instance
        self.lock = asyncio.Lock() if serial else contextlib.nullcontext()
        self.gate: asyncio.Event | None = None  # when set, each batch waits for it to open
        self.error: Exception | None = None
        self.batches: list[list[int]] = []

    async def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        ids = x[:, 0, 0, 0].astype(np.int64)  # (N,)
        self.batches.append(ids.tolist())
        async with self.lock:
            await asyncio.sleep(self.delay + self.per_crop * len(ids))
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return {"id": ids, "twice": np.stack([ids, ids], axis=1) * 2.0}  # (N,), (N, 2)

    def seen(self) -> set[int]:
        return {i for batch in self.batches for i in batch}


def run(main, timeout: float = 10.0) -> None:
    """Run a test's coroutine function; a hang fails the test instead of stalling the suite."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await main()

    asyncio.run(bounded())


def crops(*ids: int) -> np.ndarray:
    """Crops (k, 3, 256, 256) whose every pixel is the crop's id."""
    return np.broadcast_to(np.array(ids, np.uint8)[:, None, None, None], (len(ids), 3, 256, 256))


def after(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def until(condition, timeout: float = 2.0) -> None:
    """Yield to the loop until `condition()` holds; fail after `timeout`."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def running(backend: FakeBackend, **options):
    settings = {"max_batch_size": 8, "max_wait_s": 0.01, "max_queue": 64} | options
    batcher = Batcher(backend, **settings)
    batcher.start()
    try:
        yield batcher
    finally:
        await batcher.stop(drain=False)


@contextlib.asynccontextmanager
async def measured(delay: float, **options):
    """A running batcher that has timed one single-crop batch of a backend taking `delay`.

    Yields (backend, batcher, crop): `crop` is the batcher's own estimate for one crop on the
    idle backend, which later expectations are measured in.
    """
    backend = FakeBackend(delay=delay)
    async with running(backend, **({"max_wait_s": 0} | options)) as batcher:
        assert batcher.admission.expected_done_s(1) is None  # nothing timed yet
        assert await ids_of(batcher, 0) == [0]
        yield backend, batcher, batcher.admission.expected_done_s(1)


async def ids_of(batcher: Batcher, *ids: int, timeout: float = 5.0) -> list[int]:
    out = await batcher.submit(crops(*ids), after(timeout))
    assert out["twice"].tolist() == [[2.0 * i, 2.0 * i] for i in ids]
    return out["id"].tolist()


def test_concurrent_requests_share_one_batch_without_waiting_when_full():
    async def main():
        backend = FakeBackend()
        async with running(backend, max_batch_size=8, max_wait_s=1.0) as batcher:
            t0 = after(0)
            results = await asyncio.gather(*(ids_of(batcher, i) for i in range(8)))
            assert after(0) - t0 < 0.5  # a full batch does not wait out max_wait_s
        assert results == [[i] for i in range(8)]
        assert [sorted(b) for b in backend.batches] == [list(range(8))]

    run(main)


def test_max_batch_size_is_respected():
    async def main():
        backend = FakeBackend()
        async with running(backend, max_batch_size=8) as batcher:
            results = await asyncio.gather(*(ids_of(batcher, i) for i in range(20)))
        assert results == [[i] for i in range(20)]
        assert [len(b) for b in backend.batches] == [8, 8, 4]

    run(main)


def test_multi_crop_requests_get_their_own_rows_in_order_across_batches():
    async def main():
        backend = FakeBackend()
        requests = [(0, 1, 2), (3, 4, 5, 6, 7), (8, 9, 10, 11)]
        async with running(backend, max_batch_size=4) as batcher:
            results = await asyncio.gather(*(ids_of(batcher, *r) for r in requests))
        assert results == [list(r) for r in requests]
        assert all(len(b) <= 4 for b in backend.batches)
        assert backend.batches[:2] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # request 1 spans two

    run(main)


def test_a_lone_request_is_served_after_max_wait():
    async def main():
        backend = FakeBackend()
        async with running(backend, max_batch_size=8, max_wait_s=0.2) as batcher:
            t0 = after(0)
            assert await ids_of(batcher, 7) == [7]
            assert 0.18 <= after(0) - t0 < 1.0

    run(main)


def test_full_queue_rejects_at_once_with_retry_after_and_enqueues_nothing():
    async def main():
        backend = FakeBackend()
        backend.gate = asyncio.Event()
        async with running(backend, max_batch_size=2, max_wait_s=0, max_queue=4) as batcher:
            first = asyncio.create_task(ids_of(batcher, 0, 1))
            await until(lambda: batcher.in_flight == 2)  # blocked in the backend
            second = asyncio.create_task(ids_of(batcher, 2, 3, 4))
            await until(lambda: batcher.queue_depth == 3)
            with pytest.raises(Overloaded) as rejected:
                await batcher.submit(crops(5, 6), after(5))
            assert rejected.value.retry_after >= 0.1
            assert rejected.value.http_status == 429
            assert batcher.queue_depth == 3
            third = asyncio.create_task(ids_of(batcher, 7))  # one crop still fits
            with pytest.raises(InvalidRequest):  # never fits: retrying would not help
                await batcher.submit(crops(*range(8, 13)), after(5))
            backend.gate.set()
            assert await asyncio.gather(first, second, third) == [[0, 1], [2, 3, 4], [7]]
        assert backend.seen() == {0, 1, 2, 3, 4, 7}

    run(main)


def test_deadline_passing_in_the_queue_drops_the_request_unseen():
    async def main():
        backend = FakeBackend()
        backend.gate = asyncio.Event()
        async with running(backend, max_batch_size=1) as batcher:
            first = asyncio.create_task(ids_of(batcher, 0))
            await until(lambda: batcher.in_flight == 1)
            t0 = after(0)
            with pytest.raises(DeadlineExceeded, match="in the queue"):
                await batcher.submit(crops(1, 2), after(0.1))
            assert after(0) - t0 < 0.3
            assert batcher.queue_depth == 0
            backend.gate.set()
            assert await first == [0]
            assert await ids_of(batcher, 3) == [3]
        assert backend.seen() == {0, 3}

    run(main)


def test_deadline_during_inference_answers_promptly_and_spares_the_batch():
    async def main():
        backend = FakeBackend(delay=0.6)
        async with running(backend, max_batch_size=2, max_wait_s=0.5) as batcher:
            t0 = after(0)
            late = asyncio.create_task(batcher.submit(crops(0), t0 + 0.1))
            fine = asyncio.create_task(ids_of(batcher, 1))
            with pytest.raises(DeadlineExceeded, match="during inference"):
                await late
            assert after(0) - t0 < 0.3
            assert await fine == [1]
        assert backend.batches == [[0, 1]]

    run(main)


def test_backend_error_fans_out_to_every_waiter_and_the_batcher_recovers():
    async def main():
        backend = FakeBackend()
        async with running(backend, max_batch_size=3, max_wait_s=0.5) as batcher:
            backend.error = RuntimeError("CUDA out of memory at 0xdeadbeef")
            errors = await asyncio.gather(
                *(batcher.submit(crops(i), after(5)) for i in range(3)), return_exceptions=True
            )
            assert all(isinstance(e, BackendUnavailable) for e in errors)
            assert errors[0] is errors[1] is errors[2]
            assert "deadbeef" not in errors[0].message  # backend details stay in the logs

            backend.error = Overloaded("triton queue is full", retry_after=2.0)
            errors = await asyncio.gather(
                *(batcher.submit(crops(i), after(5)) for i in range(3)), return_exceptions=True
            )
            assert all(e is backend.error for e in errors)  # service errors pass through

            backend.error = None
            assert await asyncio.gather(ids_of(batcher, 7), ids_of(batcher, 8)) == [[7], [8]]
            assert batcher.queue_depth == batcher.in_flight == 0
        assert [len(b) for b in backend.batches] == [3, 3, 2]

    run(main)


def test_cancelled_callers_free_their_slots_and_spare_the_others():
    async def main():
        backend = FakeBackend()
        backend.gate = asyncio.Event()
        async with running(backend, max_batch_size=2, max_wait_s=0, max_queue=4) as batcher:
            in_flight = asyncio.create_task(ids_of(batcher, 0))
            neighbour = asyncio.create_task(ids_of(batcher, 1))
            await until(lambda: batcher.in_flight == 2)
            queued = asyncio.create_task(ids_of(batcher, 2, 3, 4, 5))
            await until(lambda: batcher.queue_depth == 4)
            queued.cancel()
            in_flight.cancel()
            for task in (queued, in_flight):
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert batcher.queue_depth == 0
            backend.gate.set()
            assert await neighbour == [1]
            assert await ids_of(batcher, 6, 7, 8, 9) == [6, 7, 8, 9]
            assert batcher.queue_depth == batcher.in_flight == 0
        assert backend.seen() == {0, 1, 6, 7, 8, 9}

    run(main)


@pytest.mark.parametrize("concurrent", [1, 2])
def test_max_concurrent_batches_bounds_the_batches_in_flight(concurrent):
    async def main():
        backend = FakeBackend()
        backend.gate = asyncio.Event()
        options = {"max_batch_size": 1, "max_wait_s": 0, "max_concurrent_batches": concurrent}
        async with running(backend, **options) as batcher:
            tasks = [asyncio.create_task(ids_of(batcher, i)) for i in range(3)]
            await until(lambda: batcher.in_flight == concurrent)
            await asyncio.sleep(0.05)
            assert batcher.in_flight == concurrent
            assert batcher.queue_depth == 3 - concurrent
            backend.gate.set()
            assert await asyncio.gather(*tasks) == [[0], [1], [2]]

    run(main)


def test_stop_with_drain_finishes_queued_work_and_refuses_new_requests():
    async def main():
        backend = FakeBackend()
        backend.gate = asyncio.Event()
        batcher = Batcher(backend, max_batch_size=2, max_wait_s=1.0, max_queue=8)
        batcher.start()
        tasks = [asyncio.create_task(ids_of(batcher, i, i + 10)) for i in range(3)]
        await until(lambda: batcher.in_flight == 2)
        stopping = asyncio.create_task(batcher.stop(drain=True))
        await asyncio.sleep(0.01)
        with pytest.raises(BackendUnavailable, match="shutting down"):
            await batcher.submit(crops(9), after(5))
        backend.gate.set()
        await stopping
        assert await asyncio.gather(*tasks) == [[i, i + 10] for i in range(3)]
        assert len(backend.batches) == 3

    run(main)


def test_stop_without_drain_fails_queued_and_in_flight_work():
    async def main():
        backend = FakeBackend()
        backend.gate = asyncio.Event()  # never opens
        batcher = Batcher(backend, max_batch_size=1, max_wait_s=0, max_queue=8)
        batcher.start()
        tasks = [asyncio.create_task(batcher.submit(crops(i), after(5))) for i in range(3)]
        await until(lambda: batcher.in_flight == 1 and batcher.queue_depth == 2)
        async with asyncio.timeout(1.0):
            await batcher.stop(drain=False)
        errors = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(e, BackendUnavailable) for e in errors), errors
        assert batcher.queue_depth == batcher.in_flight == 0
        assert backend.batches == [[0]]

    run(main)


def test_on_batch_observer_sees_sizes_queue_waits_and_inference_time():
    async def main():
        backend = FakeBackend(delay=0.05)
        seen: list[tuple[int, list[float], float]] = []
        def observe(size: int, queue_wait_s: list[float], infer_s: float) -> None:
            seen.append((size, queue_wait_s, infer_s))

        async with running(backend, max_batch_size=4, max_wait_s=0.01, on_batch=observe) as b:
            await asyncio.gather(ids_of(b, 0, 1, 2), ids_of(b, 3, 4, 5))
        assert [size for size, _, _ in seen] == [4, 2]
        assert all(len(waits) == size for size, waits, _ in seen)
        assert all(0 <= w < 1.0 for _, waits, _ in seen for w in waits)
        assert seen[1][1][0] > seen[0][1][0]  # the second batch's crops waited for the first
        assert all(0.04 <= infer_s < 1.0 for _, _, infer_s in seen)

    run(main)


def test_rows_come_back_in_order_when_concurrent_batches_finish_out_of_order():
    async def first_batch_slowest(x: np.ndarray) -> dict[str, np.ndarray]:
        ids = x[:, 0, 0, 0].astype(np.int64)
        await asyncio.sleep(0.1 if ids[0] == 0 else 0.0)
        return {"id": ids}

    async def main():
        options = {"max_batch_size": 2, "max_wait_s": 0, "max_concurrent_batches": 2}
        async with running(first_batch_slowest, **options) as batcher:
            out = await batcher.submit(crops(0, 1, 2, 3), after(5))
        assert out["id"].tolist() == [0, 1, 2, 3]

    run(main)


def test_work_that_would_miss_its_deadline_behind_the_queue_is_refused_at_once():
    async def main():
        async with measured(0.2, max_batch_size=1) as (backend, batcher, crop):
            assert 0.19 <= crop < 0.5

            def allowing(seconds: float) -> float:  # a deadline that leaves `seconds` to wait
                return after(seconds / ADMISSION_SHARE)

            backend.delay, backend.gate = 0.0, asyncio.Event()
            waiting = [asyncio.create_task(ids_of(batcher, i)) for i in (1, 2, 3)]
            await until(lambda: batcher.in_flight == 1 and batcher.queue_depth == 2)
            # Behind one batch in flight and two queued: done in 3 to 4 crops' time.
            assert 3 * crop - 0.01 <= batcher.admission.expected_done_s(1) <= 4 * crop + 0.01
            t0 = after(0)
            with pytest.raises(Overloaded, match="later than the request's deadline") as refused:
                await batcher.submit(crops(4), allowing(2 * crop))
            assert after(0) - t0 < 0.05  # refused at once, not at its deadline
            assert refused.value.retry_after >= 3 * crop - 0.01
            assert batcher.queue_depth == 2  # nothing was enqueued
            # Room in a longer deadline; a request over several passes needs room for each.
            batcher.admission.admit(1, allowing(10 * crop))
            with pytest.raises(Overloaded):
                batcher.admission.admit(1, allowing(10 * crop), passes=4)
            # A deadline too short even for an idle backend is not overload: it waits, and ends
            # with DeadlineExceeded.
            with pytest.raises(DeadlineExceeded):
                await batcher.submit(crops(5), allowing(crop / 2))
            backend.gate.set()
            assert await asyncio.gather(*waiting) == [[1], [2], [3]]
            # Drained: the deadline refused above is admitted and met.
            backend.gate = None
            assert await asyncio.wait_for(batcher.submit(crops(6), allowing(2 * crop)), 2.0)
        assert backend.seen() == {0, 1, 2, 3, 6}

    run(main)


@pytest.mark.parametrize("side_by_side", [True, False])
def test_expected_wait_learns_whether_concurrent_batches_run_side_by_side(side_by_side):
    async def main():
        # Two slots; a backend that runs both calls at once (GPU streams, two model instances)
        # or one at a time (one Triton instance behind the gateway's concurrent calls).
        backend = FakeBackend(delay=0.2, serial=not side_by_side)
        options = {"max_batch_size": 2, "max_wait_s": 0, "max_concurrent_batches": 2}
        async with running(backend, **options) as batcher:
            assert await ids_of(batcher, 0, 1) == [0, 1]  # alone: 0.2 s for a batch of 2
            assert batcher.admission.expected_done_s(2) == pytest.approx(0.2, abs=0.05)
            for _ in range(12):  # pairs of batches in flight together
                await asyncio.gather(ids_of(batcher, 2, 3), ids_of(batcher, 4, 5))
            # Ten crops are five batches of two: 0.5 s when two run at once, 1 s in turn.
            expected = 0.5 if side_by_side else 1.0
            assert batcher.admission.expected_done_s(10) == pytest.approx(expected, rel=0.2)
            # Work in flight counts what is left of it: while a pair runs, the time to the end
            # of both, then the new crops.
            pair = asyncio.gather(ids_of(batcher, 2, 3), ids_of(batcher, 4, 5))
            await until(lambda: batcher.in_flight == 4)
            assert batcher.admission.expected_done_s(2) == pytest.approx(1.5 * expected / 2.5,
                                                                        rel=0.25)
            await pair

    run(main)


def test_lateness_tracks_an_upper_quantile_of_how_late_waits_run():
    rng = np.random.default_rng(0)
    late = Lateness()
    for x in rng.uniform(0.0, 0.5, 3000):  # expected 1 s, waited 1 to 1.5 s
        late.add(1.0 + x, 1.0)
    assert late.seconds == pytest.approx(0.45, abs=0.06)  # the 90th percentile of the lateness
    # Short waits on time: a large lateness decays by its own scale, about 1 % a request.
    for _ in range(70):
        late.add(0.01, 0.01)
    assert late.seconds == pytest.approx(0.45 / 2, rel=0.15)
    for _ in range(3000):  # then the estimate runs early: the lateness falls to 0, no lower
        late.add(0.5, 1.0)
    assert late.seconds == 0.0
    # A stall behind a short queue (expected 10 ms, waited 1 s) moves it by a share of 10 ms.
    late.add(1.0, 0.01)
    assert 0 < late.seconds < 0.01


def test_admission_plans_for_the_lateness_seen_but_never_refuses_an_idle_backend():
    async def main():
        async with measured(0.1, max_batch_size=1) as (backend, batcher, crop):

            def allowing(crops_wait: float) -> float:  # a deadline with room for that wait
                return after(crops_wait * crop / ADMISSION_SHARE)

            backend.delay, backend.gate = 0.0, asyncio.Event()
            waiting = [asyncio.create_task(ids_of(batcher, i)) for i in (1, 2, 3)]
            await until(lambda: batcher.in_flight == 1 and batcher.queue_depth == 2)
            # One crop in flight and two queued: 3 to 4 crops' wait, which 5.5 allow ...
            assert 3 * crop - 0.01 <= batcher.admission.admit(1, allowing(5.5)) <= 4 * crop + 0.01
            # ... but not once waits have been running 2.75 crops late.
            batcher.admission.lateness.seconds = 2.75 * crop
            with pytest.raises(Overloaded, match="would be done in about"):
                batcher.admission.admit(1, allowing(5.5))
            # Lateness counts for at most half of the time allowed: 9 crops' room admits.
            batcher.admission.lateness.seconds = 100.0
            batcher.admission.admit(1, allowing(9))
            with pytest.raises(Overloaded):
                batcher.admission.admit(1, allowing(5.5))
            backend.gate.set()
            assert await asyncio.gather(*waiting) == [[1], [2], [3]]
            # Idle: admitted whatever the lateness, so that a new measurement can bring it down
            # (its wait alone plus half of a room of 1.5 times that would be refused if it were
            # not idle). The gated batches above changed the cost: measure it again.
            backend.gate = None
            alone = batcher.admission.expected_done_s(1)
            batcher.admission.admit(1, after(1.5 * alone / ADMISSION_SHARE))  # does not raise
            assert await ids_of(batcher, 4) == [4]
            assert batcher.admission.lateness.seconds < 100.0

    run(main)


def test_reserved_crops_count_ahead_until_released():
    async def main():
        async with measured(0.1, max_batch_size=1) as (_, batcher, crop):
            reservation = batcher.reserve(3, after(5))
            assert batcher.reserved == 3
            assert batcher.admission.expected_done_s(1) == pytest.approx(4 * crop)
            # Three requests decoding side by side: the third is refused against the first two.
            deadline = after(7.5 * crop / ADMISSION_SHARE)  # room for 7.5 crops' wait
            second = batcher.reserve(3, deadline)
            with pytest.raises(Overloaded):
                batcher.reserve(3, deadline)
            assert batcher.reserved == 6  # a refusal reserves nothing
            reservation.release()
            reservation.release()  # idempotent
            second.release()
            assert batcher.reserved == 0
            assert batcher.admission.expected_done_s(1) == pytest.approx(crop)

    run(main)


def test_a_batch_waiting_for_a_slot_is_costed_with_the_crops_that_will_join_it():
    async def main():
        backend = FakeBackend(per_crop=0.05)  # the cost is all per crop, as on a CPU
        async with running(backend, max_batch_size=8, max_wait_s=0) as batcher:
            assert await ids_of(batcher, 0) == [0]
            assert await ids_of(batcher, 1, 2, 3, 4) == [1, 2, 3, 4]  # two sizes: a + c n
            backend.gate = asyncio.Event()
            busy = asyncio.create_task(ids_of(batcher, *range(5, 13)))  # a 0.4 s batch
            await until(lambda: batcher.in_flight == 8)
            rate = batcher.admission.arrival_rate()  # 13 crops just queued, counted over the window
            assert rate == pytest.approx(13 / RATE_WINDOW_S, rel=0.1)
            # One more crop starts its batch when the full one ends (~0.4 s from now); the crops
            # arriving at `rate` until then join it, so it is costed as 1 + 0.4 * rate crops.
            expected = batcher.admission.expected_done_s(1)
            assert expected == pytest.approx(0.4 + 0.05 * (1 + 0.4 * rate), abs=0.06)
            assert expected > 0.4 + 0.05 + 0.06  # more than the queued crop alone
            await asyncio.sleep(0.3)
            assert batcher.admission.arrival_rate() < rate * 0.9  # the count decays
            backend.gate.set()
            assert await busy == list(range(5, 13))

    run(main)


def test_batch_cost_fits_a_fixed_and_a_per_crop_part():
    per_call = BatchCost()  # Triton: a round trip per call, little per crop
    per_crop = BatchCost()  # CPU inference: all per crop
    assert per_call.predict(1) is None
    for n in (1, 4, 2, 8, 1, 3):
        per_call.add(n, 0.10 + 0.002 * n)
        per_crop.add(n, 0.05 * n)
    assert per_call.predict(16) == pytest.approx(0.10 + 0.002 * 16)
    assert per_crop.predict(16) == pytest.approx(0.05 * 16)
    # One size seen so far: other sizes cost the same until seen (optimistic, not 16x).
    single = BatchCost()
    for _ in range(3):
        single.add(1, 0.1)
    assert single.predict(16) == pytest.approx(0.1)
    # A lone stall moves the fit by a bounded step; a lasting slowdown takes over.
    per_crop.add(8, 40.0)
    assert per_crop.predict(8) < 0.05 * 8 * 1.5
    for _ in range(20):
        per_crop.add(8, 0.8)
    assert per_crop.predict(8) == pytest.approx(0.8, rel=0.05)


def test_a_fixed_cost_per_call_does_not_keep_the_batches_small():
    async def main():
        backend = FakeBackend(delay=0.3)  # every call costs 0.3 s whatever its size
        async with running(backend, max_batch_size=8, max_wait_s=0) as batcher:
            assert await ids_of(batcher, 0) == [0]
            # Eight requests with 1 s each: eight single-crop batches would take 2.4 s, one
            # batch of eight takes 0.3 s; all are admitted, and share a batch.
            results = await asyncio.gather(*(batcher.submit(crops(i), after(1.0))
                                              for i in range(1, 9)))
            assert [r["id"].tolist() for r in results] == [[i] for i in range(1, 9)]
        assert [len(b) for b in backend.batches] == [1, 8]

    run(main)


def test_reserved_crops_take_room_in_the_queue_bound():
    async def main():
        async with measured(0.01, max_batch_size=1, max_queue=8) as (_, batcher, _crop):
            held = batcher.reserve(6, after(5))
            with pytest.raises(Overloaded, match="6 of 8 crops waiting or coming"):
                batcher.reserve(3, after(5))  # refused before its (costly) decode
            # What is already decoded is judged by the queue alone, which has room.
            assert await ids_of(batcher, 1, 2, 3) == [1, 2, 3]
            held.release()
            batcher.reserve(3, after(5)).release()

    run(main)
