"""`serve`: run the MargiPose gateway (REST and gRPC) on the embedded TorchScript backend.

    serve --model-repository model_repository --model-name margipose-lite --port 8080 \
          --grpc-port 50051

Every flag has an environment variable twin with the MARGIPOSE_ prefix (see Settings); flags
win over the environment. Both servers run in one process and one event loop around one
PoseService (`service.gateway.Gateway`). SIGTERM or SIGINT: both stop accepting, requests in
flight get `shutdown_grace_s` to finish, then the service stops (draining its batcher).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import typing

from service import allocator, logs
from service.gateway import Gateway
from service.settings import Settings


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Serve MargiPose over REST and gRPC.")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        many = "+" if typing.get_origin(field.annotation) is list else None
        p.add_argument(flag, default=None, nargs=many,
                       help=(field.description or "").strip() or None)
    return p


async def _serve_until_signalled(gateway: Gateway) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gateway.stop)
    await gateway.serve()


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    settings = Settings(**{k: v for k, v in vars(args).items() if v is not None})
    # Before any worker thread exists (decode pool, torch, gRPC), or they keep their own arenas.
    allocator.limit_malloc_arenas(settings.malloc_arena_max)
    logs.configure(settings.log_level)
    asyncio.run(_serve_until_signalled(Gateway(settings)))


if __name__ == "__main__":
    main()
