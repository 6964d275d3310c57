"""gRPC (grpc.aio): pose.v1.PoseService (`servicer`), the server around it (`server`) and the
encoder of the core's results to its messages (`encode`)."""

from service.grpc.server import MESSAGE_OVERHEAD_BYTES, GrpcServer
from service.grpc.servicer import (
    GET_MODEL,
    PREDICT,
    STREAM_PREDICT,
    Undecodable,
    lenient,
    options_from_request,
    peer_host,
)

__all__ = ["GET_MODEL", "MESSAGE_OVERHEAD_BYTES", "PREDICT", "STREAM_PREDICT", "GrpcServer",
           "Undecodable", "lenient", "options_from_request", "peer_host"]
