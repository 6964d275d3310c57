"""When to try a call again, and the deadline that bounds a call with all its retries."""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass

from poseclient.errors import ApiError


@dataclass(frozen=True)
class RetryPolicy:
    """Retry answers that say "later" (429, 503), honouring the service's Retry-After.

    Without a Retry-After the waits are `backoff_s`, then doubled each time. The client gives
    up (raising the last ApiError) after `max_attempts` calls, when the service asks for a wait
    longer than `max_wait_s`, or when the wait would pass the call's deadline.
    """

    max_attempts: int = 4
    backoff_s: float = 0.5
    max_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not (self.backoff_s >= 0 and self.max_wait_s >= 0):
            raise ValueError(f"backoff_s and max_wait_s must be >= 0, got {self.backoff_s} "
                             f"and {self.max_wait_s}")

    def wait_s(self, attempt: int, error: ApiError, remaining_s: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1` after `error`, or None to give up."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        if error.retry_after is not None:
            wait = error.retry_after
        else:
            wait = self.backoff_s * 2 ** (attempt - 1)
        if wait > self.max_wait_s or wait >= remaining_s:
            return None
        return wait


DEFAULT_RETRY = RetryPolicy()


class Deadline:
    """The end of a call: `timeout_s` from now, shared by all its attempts and waits."""

    def __init__(self, timeout_s: float):
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout_s}")
        self.timeout_s = timeout_s
        self._end = time.monotonic() + timeout_s

    def remaining(self) -> float:
        """Seconds left, never below zero."""
        return max(0.0, self._end - time.monotonic())


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After value: delay seconds or an HTTP date; None if unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None
