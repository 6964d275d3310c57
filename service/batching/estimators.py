"""What admission plans with: the cost of a batch, how late its plans run, how fast crops come.

Each is fitted online from what the batch loop reports; docs/batching.md says why each has the
form it has.
"""

from __future__ import annotations

import math

import numpy as np

EWMA_WEIGHT = 0.2  # weight of the newest batch in the batch-cost fit
EWMA_STEP = 1.5  # a batch's time counts as at most this factor off the fit's prediction
RATE_WINDOW_S = 2.0  # time constant of the decaying count behind `ArrivalRate`
LATENESS_QUANTILE = 0.9  # the quantile of (actual wait - expected wait) that admission plans for
LATENESS_STEP = 0.1  # step per observation, as a share of its expected wait (or of the lateness)


class BatchCost:
    """Seconds per batch of n crops as a + c * n: exponentially weighted least squares.

    Until batches of more than about one size have been seen there is no line, and every size
    costs the mean batch time. A time far off the line is clipped to EWMA_STEP times it.
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
            seconds = min(max(seconds, predicted / EWMA_STEP), predicted * EWMA_STEP)
        self._sums *= 1 - EWMA_WEIGHT
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
    """A running upper quantile (LATENESS_QUANTILE) of actual minus expected wait, in seconds.

    Stochastic approximation: up by q * step when a lateness exceeds it, down by (1 - q) * step
    otherwise, never below 0; the step is LATENESS_STEP of that request's expected wait or of
    the lateness itself, whichever is larger.
    """

    def __init__(self) -> None:
        self.seconds = 0.0

    def add(self, waited: float, expected: float) -> None:
        q, step = LATENESS_QUANTILE, LATENESS_STEP * max(expected, self.seconds)
        self.seconds = max(0.0, self.seconds + step * (q if waited - expected > self.seconds
                                                        else q - 1))


class ArrivalRate:
    """The recent rate of crops entering the queue: a count decaying over RATE_WINDOW_S."""

    def __init__(self) -> None:
        self._count = 0.0
        self._at = 0.0  # clock time the count was last brought up to date

    def add(self, k: int, now: float) -> None:
        self._count = self._count * math.exp(-(now - self._at) / RATE_WINDOW_S) + k
        self._at = now

    def per_second(self, now: float) -> float:
        return self._count * math.exp(-(now - self._at) / RATE_WINDOW_S) / RATE_WINDOW_S
