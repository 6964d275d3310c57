"""The service core in-process, for `margipose --local`: no server.

The only module of poseclient that uses the service (its core and the local backend, so torch),
and only when a `LocalService` is made: the service is imported then, not with this module, so
that the client installs and runs without the server's packages (tests/test_boundaries.py).
Without them, `--local` says which extras to install.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from poseclient.errors import ApiError, BadInput
from poseclient.options import Options
from poseclient.results import ModelDescription, PredictResult
from posecontract.detection import DETECTOR_NAME

T = TypeVar("T")
DEFAULT_MODEL = "margipose-lite"


def _own_versions(model_dir: Path) -> bool:
    """A model of its own: some version folder is not a link (`<name>-onnx` serves `<name>`'s
    folders through links: the same model, another Triton deployment)."""
    return any(v.name.isdigit() and v.is_dir() and not v.is_symlink()
               for v in model_dir.iterdir())


def pick_model(repository: Path) -> str:
    """The repository's only pose model, else margipose-lite if present; BadInput lists them.
    The person detector (and its ONNX twin) is not a pose model."""
    if not repository.is_dir():
        raise BadInput(f"Model repository {repository} is not a folder")
    names = sorted(d.name for d in repository.iterdir()
                   if (d / "config.pbtxt").is_file() and _own_versions(d)
                   and d.name not in (DETECTOR_NAME, f"{DETECTOR_NAME}-onnx"))
    if len(names) == 1:
        return names[0]
    if DEFAULT_MODEL in names:
        return DEFAULT_MODEL
    raise BadInput(f"Say which model of {repository} to use with --model: it holds "
                   f"{', '.join(names) or 'none'}")


def service_options(options: Options, timeout_s: float | None = None) -> Any:
    """The service's PredictOptions for the client's Options (and a deadline)."""
    from service.options import parse_options

    raw: dict = {"boxes": [dict(zip("xywh", b, strict=True)) for b in options.boxes],
                 "heatmaps": options.heatmaps, "root_depth_mm": options.root_depth_mm,
                 "timeout_s": timeout_s}
    if options.intrinsics is not None:
        k = options.intrinsics
        raw["intrinsics"] = {"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy}
    return parse_options(raw)


class LocalService:
    """A PoseService over the local TorchScript backend, run on a private event loop.

    Use as a context manager (start: load and warm up the model; exit: drain and stop).
    Failures come as ApiError with the service's code, status and message.
    """

    def __init__(self, model_repository: str | Path, model_name: str | None = None,
                 device: str = "cpu", timeout: float | None = None):
        try:
            import torch  # noqa: F401  (the local backend's; imported here to say so early)

            from service.backends import make_backend
            from service.core import PoseService
            from service.detector import make_detector
            from service.settings import Settings
        except ImportError as exc:
            raise BadInput(
                f"--local runs the model in this process and needs the server's packages "
                f"({exc}); install them with pip install 'margipose-serve[serve,local]'"
            ) from None
        repository = Path(model_repository)
        name = model_name or pick_model(repository)
        self.where = f"local model {name!r} in {repository}"
        self.timeout = timeout  # each call's deadline (None: the service's default, 30 s)
        # As the gateway builds it (service.gateway), without the servers.
        self.settings = Settings(model_repository=repository, model_name=name, device=device,
                                 grpc_port=0, max_batch_size=1)
        self.service = PoseService(self.settings, make_backend(self.settings),
                                   detector=make_detector(self.settings))
        self._loop = asyncio.new_event_loop()

    def __enter__(self) -> LocalService:
        try:
            self._run(self.service.start())
        except BaseException:
            self._loop.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._run(self.service.stop())
        finally:
            self._loop.close()

    def predict(self, image: bytes, options: Options) -> PredictResult:
        """The poses in an encoded image, as PredictResult."""
        from service.rest import encode

        response = self._run(self.service.predict(image, None,
                                                  service_options(options, self.timeout)))
        return PredictResult.from_json(encode.predict_response(response).model_dump(mode="json"))

    def render(self, image: bytes, options: Options, joint: str) -> bytes:
        """The PNG `/v1/render` would answer: the service's own renderer."""
        return self._run(self.service.render(image, None,
                                             service_options(options, self.timeout), joint))

    def model(self) -> ModelDescription:
        from service.rest import encode

        return ModelDescription.from_json(
            encode.model_description(self.service.model_description()))

    def _run(self, coro: Awaitable[T]) -> T:
        from service.errors import ServiceError

        try:
            return self._loop.run_until_complete(coro)
        except ServiceError as exc:
            raise ApiError(self.where, exc.message, code=exc.code, status=exc.http_status,
                           retry_after=exc.retry_after) from None

