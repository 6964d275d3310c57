"""Errors of the service, each carrying its HTTP status and gRPC code.

    ServiceError                      500 INTERNAL
    +-- InvalidRequest                422 INVALID_ARGUMENT   bad boxes, intrinsics, options
    |   +-- InvalidImage              422 INVALID_ARGUMENT   corrupt or truncated image
    +-- PayloadTooLarge               413 RESOURCE_EXHAUSTED body over the byte limit
    |   +-- ImageTooLarge             413 RESOURCE_EXHAUSTED too many pixels (decompression bomb)
    +-- UnsupportedMediaType          415 INVALID_ARGUMENT   not an image format we decode
    +-- Unauthenticated               401 UNAUTHENTICATED    missing or wrong bearer token
    +-- Overloaded                    429 RESOURCE_EXHAUSTED queue full (has retry_after)
    |   +-- RateLimited               429 RESOURCE_EXHAUSTED per-client rate limit
    +-- DeadlineExceeded              504 DEADLINE_EXCEEDED  request deadline passed
    +-- RequestTimeout                408 DEADLINE_EXCEEDED  body not received in time
    +-- BackendUnavailable            503 UNAVAILABLE        model not ready or backend down

Messages name the bad value and what is allowed; they are safe to show to clients.
"""

from __future__ import annotations

import math

import grpc


class ServiceError(Exception):
    """Base class: a failure with a client-facing message, HTTP status and gRPC code."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL
    code = "internal"

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def retry_after_header(self) -> str | None:
        """`retry_after` in whole seconds, rounded up so that clients never come back too early:
        HTTP's Retry-After header and gRPC's `retry-after` trailer."""
        if self.retry_after is None:
            return None
        return str(max(1, math.ceil(self.retry_after)))

    def to_dict(self) -> dict:
        body: dict = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body


class InvalidRequest(ServiceError):
    http_status = 422
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    code = "invalid_request"


class InvalidImage(InvalidRequest):
    code = "invalid_image"


class PayloadTooLarge(ServiceError):
    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    code = "payload_too_large"


class ImageTooLarge(PayloadTooLarge):
    code = "image_too_large"


class UnsupportedMediaType(ServiceError):
    http_status = 415
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    code = "unsupported_media_type"


class Unauthenticated(ServiceError):
    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    code = "unauthenticated"


class Overloaded(ServiceError):
    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    code = "overloaded"


class RateLimited(Overloaded):
    code = "rate_limited"


class DeadlineExceeded(ServiceError):
    http_status = 504
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    code = "deadline_exceeded"


class RequestTimeout(ServiceError):
    """The client took longer than `body_timeout_s` to send its body (a slow upload)."""

    http_status = 408
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    code = "request_timeout"


class BackendUnavailable(ServiceError):
    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    code = "backend_unavailable"
