"""Python clients of MargiPose Serve: REST (httpx) and gRPC, sync and async, typed results.

    from poseclient import RestClient

    with RestClient("http://127.0.0.1:8080") as client:
        result = client.predict("photo.jpg", heatmaps=True)
    person = result.persons[0]
    person.joints["left_wrist"].camera_mm     # (X, Y, Z) in mm
    person.as_array("relative_mm")            # (17, 3) numpy, skeleton order
    person.heatmap("left_wrist")              # (3, 32, 32): xy, zy, xz marginals

Every call has a deadline (`timeout`); 429 and 503 are retried, honouring Retry-After
(`RetryPolicy`). Errors: `poseclient.errors`. The `margipose` command line is `poseclient.cli`.
This package needs httpx, grpcio, protobuf and numpy (Pillow for PNG heatmaps), not torch.
"""

from poseclient.errors import ApiError, BadInput, CallTimeout, PoseClientError, Unreachable
from poseclient.grpc import AsyncGrpcClient, GrpcClient, Tracking
from poseclient.rest import AsyncRestClient, RestClient
from poseclient.results import (
    Box,
    FrameError,
    Joint,
    ModelDescription,
    ModelInfo,
    Person,
    PredictResult,
)
from poseclient.retry import RetryPolicy
from posecontract.geometry import Intrinsics

__all__ = [
    "ApiError", "AsyncGrpcClient", "AsyncRestClient", "BadInput", "Box", "CallTimeout",
    "FrameError",
    "GrpcClient", "Intrinsics", "Joint", "ModelDescription", "ModelInfo", "Person",
    "PoseClientError", "PredictResult", "RestClient", "RetryPolicy", "Tracking", "Unreachable",
]
