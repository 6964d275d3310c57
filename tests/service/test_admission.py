"""Admission and its estimators on their own: a fake clock, no event loop, no batch loop."""

import math

import pytest

from service.batching import (
    ADMISSION_SHARE,
    MIN_RETRY_AFTER_S,
    RATE_WINDOW_S,
    Admission,
    ArrivalRate,
    Limits,
)
from service.errors import Overloaded


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _admission(clock: Clock, max_queue: int = 8) -> Admission:
    return Admission(Limits(max_batch_size=4, max_wait_s=0.05, max_queue=max_queue),
                     name="test", clock=clock)


def _measure(admission: Admission, clock: Clock, size: int, seconds: float) -> None:
    """One batch of `size` through the backend, taking `seconds`."""
    admission.enqueued(size, clock.now)
    admission.dequeued(size)
    admission.batch_taken(size)
    batch = admission.batch_started(size, clock.now)
    clock.now += seconds
    admission.batch_finished(batch, clock.now, ok=True)


def test_arrival_rate_decays_over_its_window():
    rate = ArrivalRate()
    rate.add(10, 0.0)
    assert rate.per_second(0.0) == pytest.approx(10 / RATE_WINDOW_S)
    assert rate.per_second(RATE_WINDOW_S) == pytest.approx(10 / RATE_WINDOW_S / math.e)
    rate.add(5, RATE_WINDOW_S)
    assert rate.per_second(RATE_WINDOW_S) == pytest.approx((10 / math.e + 5) / RATE_WINDOW_S)


def test_no_room_is_refused_with_a_retry_hint_before_any_measurement():
    clock = Clock()
    admission = _admission(clock, max_queue=8)
    admission.enqueued(6, clock.now)
    assert admission.admit(2, clock.now + 10) is None  # fits; nothing measured yet
    with pytest.raises(Overloaded, match="6 of 8 crops waiting or coming, no room for 3") as e:
        admission.admit(3, clock.now + 10)
    # Unmeasured: max_wait_s per round of batches, ceil((6 + 3) / 4) = 3 rounds.
    assert e.value.retry_after == pytest.approx(max(MIN_RETRY_AFTER_S, 3 * 0.05))


def test_reserved_crops_take_room_and_are_released_once():
    clock = Clock()
    admission = _admission(clock, max_queue=4)
    reservation = admission.reserve(3, clock.now + 10)
    assert admission.reserved == 3
    with pytest.raises(Overloaded):
        admission.reserve(2, clock.now + 10)
    reservation.release()
    reservation.release()
    assert admission.reserved == 0
    admission.reserve(4, clock.now + 10)


def test_expected_wait_counts_the_work_ahead_and_late_requests_are_refused():
    clock = Clock()
    admission = _admission(clock)
    _measure(admission, clock, 1, 0.1)
    _measure(admission, clock, 4, 0.4)  # 0.1 s per crop, nothing per call
    assert admission.expected_done_s(4) == pytest.approx(0.4)
    # Idle: even a deadline too short for the work is admitted (it is not overload).
    assert admission.admit(4, clock.now + 0.1) == pytest.approx(0.4)
    admission.enqueued(4, clock.now)  # one full batch queued ahead
    # No arrivals for a long while: the batches ahead do not grow while they wait.
    clock.now += 100 * RATE_WINDOW_S
    assert admission.expected_done_s(4) == pytest.approx(0.8)
    # Admitted while the deadline's share covers the expected wait, refused when it does not.
    assert admission.admit(4, clock.now + 0.85 / ADMISSION_SHARE) == pytest.approx(0.8)
    with pytest.raises(Overloaded, match="later than the request's deadline allows") as e:
        admission.admit(4, clock.now + 0.7 / ADMISSION_SHARE)
    assert e.value.retry_after == pytest.approx(0.8)


def test_a_batch_in_flight_counts_less_what_it_has_accrued():
    clock = Clock()
    admission = _admission(clock)
    _measure(admission, clock, 1, 0.1)
    _measure(admission, clock, 4, 0.4)
    clock.now += 100 * RATE_WINDOW_S
    admission.batch_taken(4)
    batch = admission.batch_started(4, clock.now)
    clock.now += 0.3
    assert admission.expected_done_s(1) == pytest.approx(0.1 + 0.1)  # 0.1 s left, then one crop
    admission.batch_finished(batch, clock.now, ok=False)  # an error: no cost sample
    assert admission.in_flight == 0
    assert admission.expected_done_s(1) == pytest.approx(0.1)
