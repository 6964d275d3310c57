"""`serve`: run the MargiPose gateway (REST) on the embedded TorchScript backend.

    serve --model-repository model_repository --model-name margipose-lite --port 8080

Every flag has an environment variable twin with the MARGIPOSE_ prefix (see Settings); flags
win over the environment.
"""

from __future__ import annotations

import argparse
import typing

import uvicorn

from service import logs
from service.access import Access, Authenticator, RateLimiter, load_tokens
from service.backends.local import LocalBackend
from service.core import PoseService
from service.metrics import Metrics
from service.rest import create_app
from service.settings import Settings


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Serve MargiPose over REST.")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        many = "+" if typing.get_origin(field.annotation) is list else None
        p.add_argument(flag, default=None, nargs=many,
                       help=(field.description or "").strip() or None)
    return p


def build(settings: Settings) -> tuple:
    """Assemble backend, metrics, core and app from settings."""
    backend = LocalBackend(settings.model_repository, settings.model_name,
                           settings.model_version, settings.device, settings.torch_threads,
                           warmup_batch_sizes=(1, settings.max_batch_size))
    metrics = Metrics()
    service = PoseService(settings, backend, observer=metrics.observe_batch)
    access = Access(
        Authenticator(load_tokens(settings.auth_tokens, settings.auth_token_file)),
        RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst),
    )
    return create_app(service, metrics, access), service, metrics


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    settings = Settings(**{k: v for k, v in vars(args).items() if v is not None})
    logs.configure(settings.log_level)
    app, _, _ = build(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=30)


if __name__ == "__main__":
    main()
