"""Errors of the client library.

    PoseClientError          anything this library raises on purpose
    +-- BadInput             a local input (image, video file) that cannot be read
    +-- Unreachable          no answer at all: refused, unknown host, connection dropped
    +-- CallTimeout          the call's own deadline passed before an answer came
    +-- ApiError             the service answered with an error (REST 4xx/5xx, a gRPC status);
                             `retryable` for 429 and 503 (gRPC RESOURCE_EXHAUSTED with a
                             retry-after, UNAVAILABLE), which the clients retry on their own

Every message names where the call went (URL or gRPC target and method) and the cause.
"""

from __future__ import annotations


class PoseClientError(Exception):
    """Base class of the client's errors."""


class BadInput(PoseClientError):
    """A local file that cannot be read as what it should be; the message says why."""


class Unreachable(PoseClientError):
    """The service could not be reached; `where` is the URL or gRPC target."""

    def __init__(self, where: str, cause: str):
        super().__init__(f"cannot reach {where}: {cause}")
        self.where, self.cause = where, cause


class CallTimeout(PoseClientError):
    """The call's deadline (`timeout`, retries included) passed on the client side."""

    def __init__(self, where: str, timeout_s: float):
        super().__init__(f"{where} did not answer within {timeout_s:g} s")
        self.where, self.timeout_s = where, timeout_s


class ApiError(PoseClientError):
    """An error answer of the service, with its message.

    `status` is the HTTP status (None over gRPC); `code` the service's error code
    (`invalid_request`, `overloaded`, ...) over REST, the gRPC status name
    (`INVALID_ARGUMENT`, ...) over gRPC; `retry_after` the seconds the service asked to wait.
    """

    def __init__(self, where: str, message: str, *, code: str, status: int | None = None,
                 retry_after: float | None = None, request_id: str | None = None):
        answer = f"{status} {code}" if status is not None else code
        super().__init__(f"{where} answered {answer}: {message}")
        self.where, self.message, self.code, self.status = where, message, code, status
        self.retry_after, self.request_id = retry_after, request_id

    @property
    def retryable(self) -> bool:
        """Whether trying again later may succeed: overloaded, rate limited or not ready."""
        if self.status is not None:
            return self.status in (429, 503)
        # RESOURCE_EXHAUSTED is also a too-large request, which comes without a retry-after.
        return self.code == "UNAVAILABLE" or (
            self.code == "RESOURCE_EXHAUSTED" and self.retry_after is not None
        )
