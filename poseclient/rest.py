"""REST clients (httpx), sync and async: predict, render, model, ready.

Every call has a deadline (`timeout`, default the client's) that bounds all its attempts and
waits; the remaining time also travels as the request's `timeout_s`, so the service drops work
nobody waits for. Answers 429 and 503 are retried as `RetryPolicy` says, honouring Retry-After.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import httpx

from poseclient.errors import ApiError, CallTimeout, Unreachable
from poseclient.options import ImageInput, make_options, query_params, read_image
from poseclient.results import ModelDescription, PredictResult
from poseclient.retry import DEFAULT_RETRY, Deadline, RetryPolicy, parse_retry_after
from posecontract.geometry import Intrinsics

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 30.0
Boxes = list[list[float]] | list[tuple[float, float, float, float]] | None


def _api_error(response: httpx.Response) -> ApiError:
    """The service's error answer, with its own message when the body carries one."""
    where = f"{response.request.method} {response.request.url.copy_with(query=None)}"
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
        body_retry = error.get("retry_after")
    except (ValueError, KeyError, TypeError):  # not our JSON: a proxy's page, say
        code, message, body_retry = response.reason_phrase or "error", response.text[:200], None
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if retry_after is None and isinstance(body_retry, int | float):
        retry_after = float(body_retry)
    return ApiError(where, message, code=code, status=response.status_code,
                    retry_after=retry_after, request_id=response.headers.get("x-request-id"))


class _Base:
    """What the sync and async clients share: settings and the shape of each request."""

    def __init__(self, url: str, token: str | None, timeout: float, retry: RetryPolicy):
        Deadline(timeout)  # checks it
        self.url, self.timeout, self.retry = url.rstrip("/"), timeout, retry
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _predict_args(self, image: ImageInput, content_type: str | None, params: dict[str, str]
                      ) -> dict[str, Any]:
        return {"content": read_image(image), "params": params,
                "headers": {"Content-Type": content_type or "application/octet-stream"}}

    @staticmethod
    def _params(boxes: Boxes, intrinsics: Intrinsics | tuple[float, ...] | None,
                root_depth_mm: float | None, heatmaps: bool | str) -> dict[str, str]:
        return query_params(make_options(boxes, intrinsics, root_depth_mm, heatmaps))

    def _deadline(self, timeout: float | None) -> Deadline:
        return Deadline(self.timeout if timeout is None else timeout)

    @staticmethod
    def _attempt(kwargs: Mapping[str, Any], deadline: Deadline) -> dict[str, Any]:
        """One attempt's request arguments: what is left of the deadline, here and there."""
        kw = dict(kwargs, timeout=deadline.remaining())
        if "params" in kw:  # the server's deadline too, so it drops work nobody waits for
            kw["params"] = kw["params"] | {"timeout_s": f"{max(kw['timeout'], 1e-3):.3f}"}
        return kw

    def _failure(self, exc: httpx.TransportError, method: str, path: str, deadline: Deadline
                 ) -> Exception:
        """The error to raise when no answer came."""
        where = f"{method} {self.url}{path}"
        if isinstance(exc, httpx.TimeoutException):
            return CallTimeout(where, deadline.timeout_s)
        return Unreachable(where, str(exc) or type(exc).__name__)

    def _wait(self, response: httpx.Response, attempt: int, deadline: Deadline, retry: bool
              ) -> float:
        """Seconds to wait before trying again after an error answer; raise it otherwise."""
        error = _api_error(response)
        wait = self.retry.wait_s(attempt, error, deadline.remaining()) if retry else None
        if wait is None:
            raise error
        return wait


class RestClient(_Base):
    """A blocking client of the REST API; use as a context manager or call `close()`.

        with RestClient("http://127.0.0.1:8080") as client:
            result = client.predict("photo.jpg", boxes=[[120, 40, 200, 420]])
            result.persons[0].joints["left_wrist"].camera_mm
    """

    def __init__(self, url: str = DEFAULT_URL, *, token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, retry: RetryPolicy = DEFAULT_RETRY,
                 transport: httpx.BaseTransport | None = None):
        super().__init__(url, token, timeout, retry)
        self._http = httpx.Client(base_url=self.url, headers=self.headers, transport=transport)

    def predict(self, image: ImageInput, *, boxes: Boxes = None,
                intrinsics: Intrinsics | tuple[float, ...] | None = None,
                root_depth_mm: float | None = None, heatmaps: bool | str = False,
                content_type: str | None = None, timeout: float | None = None) -> PredictResult:
        """POST /v1/predict: the poses in `image` (bytes or a path)."""
        params = self._params(boxes, intrinsics, root_depth_mm, heatmaps)
        r = self._call("POST", "/v1/predict", timeout, self._predict_args(image, content_type,
                                                                          params))
        return PredictResult.from_json(r.json(), r.headers.get("x-request-id"))

    def render(self, image: ImageInput, *, joint: str = "left_wrist", boxes: Boxes = None,
               intrinsics: Intrinsics | tuple[float, ...] | None = None,
               root_depth_mm: float | None = None, content_type: str | None = None,
               timeout: float | None = None) -> bytes:
        """POST /v1/render: a PNG of the 2D skeletons, the 3D view and `joint`'s heatmaps."""
        params = self._params(boxes, intrinsics, root_depth_mm, False) | {"joint": joint}
        r = self._call("POST", "/v1/render", timeout, self._predict_args(image, content_type,
                                                                         params))
        return r.content

    def model(self, *, timeout: float | None = None) -> ModelDescription:
        """GET /v1/model: the served model's skeleton, input size, name, version and card."""
        return ModelDescription.from_json(self._call("GET", "/v1/model", timeout, {}).json())

    def ready(self, *, timeout: float | None = None) -> bool:
        """GET /health/ready: whether the model is loaded and warmed up (no retries)."""
        try:
            self._call("GET", "/health/ready", timeout, {}, retry=False)
        except ApiError:
            return False
        return True

    def _call(self, method: str, path: str, timeout: float | None, kwargs: Mapping[str, Any],
              retry: bool = True) -> httpx.Response:
        deadline = self._deadline(timeout)
        attempt = 1
        while True:
            try:
                response = self._http.request(method, path, **self._attempt(kwargs, deadline))
            except httpx.TransportError as exc:
                raise self._failure(exc, method, path, deadline) from None
            if response.is_success:
                return response
            time.sleep(self._wait(response, attempt, deadline, retry))
            attempt += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRestClient(_Base):
    """The asyncio twin of RestClient: the same methods, awaited; `async with` or `aclose()`."""

    def __init__(self, url: str = DEFAULT_URL, *, token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, retry: RetryPolicy = DEFAULT_RETRY,
                 transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(url, token, timeout, retry)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self.headers,
                                       transport=transport)

    async def predict(self, image: ImageInput, *, boxes: Boxes = None,
                      intrinsics: Intrinsics | tuple[float, ...] | None = None,
                      root_depth_mm: float | None = None, heatmaps: bool | str = False,
                      content_type: str | None = None, timeout: float | None = None
                      ) -> PredictResult:
        """POST /v1/predict: the poses in `image` (bytes or a path)."""
        params = self._params(boxes, intrinsics, root_depth_mm, heatmaps)
        r = await self._call("POST", "/v1/predict", timeout,
                             self._predict_args(image, content_type, params))
        return PredictResult.from_json(r.json(), r.headers.get("x-request-id"))

    async def render(self, image: ImageInput, *, joint: str = "left_wrist", boxes: Boxes = None,
                     intrinsics: Intrinsics | tuple[float, ...] | None = None,
                     root_depth_mm: float | None = None, content_type: str | None = None,
                     timeout: float | None = None) -> bytes:
        """POST /v1/render: a PNG of the 2D skeletons, the 3D view and `joint`'s heatmaps."""
        params = self._params(boxes, intrinsics, root_depth_mm, False) | {"joint": joint}
        r = await self._call("POST", "/v1/render", timeout,
                             self._predict_args(image, content_type, params))
        return r.content

    async def model(self, *, timeout: float | None = None) -> ModelDescription:
        """GET /v1/model: the served model's skeleton, input size, name, version and card."""
        return ModelDescription.from_json((await self._call("GET", "/v1/model", timeout, {}))
                                          .json())

    async def ready(self, *, timeout: float | None = None) -> bool:
        """GET /health/ready: whether the model is loaded and warmed up (no retries)."""
        try:
            await self._call("GET", "/health/ready", timeout, {}, retry=False)
        except ApiError:
            return False
        return True

    async def _call(self, method: str, path: str, timeout: float | None,
                    kwargs: Mapping[str, Any], retry: bool = True) -> httpx.Response:
        deadline = self._deadline(timeout)
        attempt = 1
        while True:
            try:
                response = await self._http.request(method, path,
                                                    **self._attempt(kwargs, deadline))
            except httpx.TransportError as exc:
                raise self._failure(exc, method, path, deadline) from None
            if response.is_success:
                return response
            await asyncio.sleep(self._wait(response, attempt, deadline, retry))
            attempt += 1

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
