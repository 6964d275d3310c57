"""The gRPC server: pose.v1.PoseService (`servicer`), grpc.health.v1 and reflection on one port.

Health reports SERVING for "" and pose.v1.PoseService exactly while the backend is ready
(polled every READINESS_POLL_S), and NOT_SERVING from the start of a graceful stop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.grpc.servicer import SERVICE_NAME, PoseServicer, add_servicer

if TYPE_CHECKING:
    from service.gateway import Gateway

# Room for a request's other fields around an image of max_body_bytes; anything bigger is
# refused by gRPC itself with RESOURCE_EXHAUSTED.
MESSAGE_OVERHEAD_BYTES = 64 * 1024
READINESS_POLL_S = 1.0  # how often the health service asks the backend whether it is ready


class GrpcServer:
    """A grpc.aio server with pose.v1.PoseService, grpc.health.v1 and reflection."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.service = gateway.service
        self.settings = gateway.settings
        self.health = health.aio.HealthServicer()
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._watch: asyncio.Task | None = None
        self._serving: bool | None = None

    async def start(self) -> int:
        """Bind settings.host:settings.grpc_port and serve; return the bound port."""
        limit = self.settings.max_body_bytes + MESSAGE_OVERHEAD_BYTES
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit)])
        add_servicer(PoseServicer(self.gateway), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host  # an IPv6 address
        self.port = server.add_insecure_port(f"{host}:{self.settings.grpc_port}")
        await self._check_readiness()
        await server.start()
        self._server = server
        self._watch = asyncio.create_task(self._watch_readiness())
        return self.port

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new calls, give calls in flight `grace` seconds."""
        if self._watch is not None:
            self._watch.cancel()
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)

    async def _watch_readiness(self) -> None:
        while True:
            await asyncio.sleep(READINESS_POLL_S)
            await self._check_readiness()

    async def _check_readiness(self) -> None:
        """SERVING for "" and pose.v1.PoseService exactly while the backend is ready."""
        serving = await self.service.ready()
        if serving == self._serving:
            return
        self._serving = serving
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in (health.OVERALL_HEALTH, SERVICE_NAME):
            await self.health.set(name, status)
