"""Service settings: one pydantic-settings class, environment prefix `MARGIPOSE_`.

Built once in `service.__main__` (flags override the environment) and passed in; nothing reads
the environment at import time.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from posecontract.detection import DEFAULT_MIN_SCORE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MARGIPOSE_", extra="forbid", use_attribute_docstrings=True
    )

    host: str = "127.0.0.1"
    """Interface the REST and gRPC servers bind to."""
    port: int = 8080
    """REST port."""
    grpc_port: int = Field(50051, ge=0, le=65535)
    """gRPC port (pose.v1.PoseService, grpc.health.v1, reflection); 0 runs no gRPC server."""
    shutdown_grace_s: float = Field(30.0, ge=0)
    """On SIGTERM/SIGINT, how long both servers let requests in flight finish."""

    backend: Literal["local", "triton"] = "local"
    """`local` runs the exported TorchScript model in-process; `triton` calls a Triton server."""
    model_repository: Path = Path("model_repository")
    """Triton-layout model repository the local backend loads from."""
    model_name: str = "margipose-lite"
    """Model to serve (a folder of the repository, or the Triton model name)."""
    model_version: int | None = None
    """Version to serve; None means the highest version present."""
    runtime: Literal["torch", "onnxruntime", "openvino"] = "torch"
    """Runtime of the local backend: `torch` runs the version's model.pt; `onnxruntime` and
    `openvino` run its model.onnx (no torch needed)."""
    device: str = "cpu"
    """Device of the local backend: `cpu`, `cuda` or `cuda:N` (torch and onnxruntime with its
    CUDA provider; openvino runs on cpu)."""
    torch_threads: int = 0
    """Intra-op threads of the local backend's runtime, whichever it is (0: on CPU, one fewer than
    the CPUs the process may use, affinity and cgroup quota, at least 1, so that decoding and the
    event loop keep a core; else the runtime's default)."""

    detector_model: str = "person-detector"
    """Person detector for requests without boxes (a folder of the repository, or the Triton
    model name): every person scoring at least `detector_min_score`, up to `max_persons`. Empty
    turns it off; the local backend also goes without it when the repository has no such model
    (logged). Without a detector, a request without boxes gets one person from a whole-image
    pass."""
    detector_min_score: float = Field(DEFAULT_MIN_SCORE, ge=0, le=1)
    """Lowest detection score (0-1) a person needs to be answered (chosen on the real2d train
    split: BENCHMARKS.md, Person detection)."""
    detector_tiles: bool = True
    """Besides the whole picture, look at squares of an elongated picture (a 16:9 frame: three),
    where people are seen at up to twice the detector's resolution. Off: the whole picture
    only (faster, misses small people)."""

    max_batch_size: int = 16
    """Most person crops sent to the backend in one batch."""
    max_batch_wait_ms: float = 5.0
    """How long the first crop of a batch waits for others to join."""
    max_concurrent_batches: int = Field(1, ge=1)
    """Batches in flight at the backend at once (1 for the local backend; 2-4 let Triton
    overlap transfers and compute)."""
    triton_url: str = "127.0.0.1:8001"
    """Triton's gRPC address (host:port, no scheme) for the `triton` backend."""
    triton_timeout_s: float = Field(30.0, gt=0)
    """Client-side timeout of one Triton inference call."""
    triton_start_timeout_s: float = Field(60.0, ge=0)
    """How long start-up waits for Triton's model to become ready."""
    max_queue: int = 256
    """Most person crops waiting for the backend; beyond it requests get 429."""
    request_timeout_s: float = 30.0
    """Default deadline of a request; clients may ask for less (504 when it passes)."""

    max_body_bytes: int = 20 * 1024 * 1024
    """Largest accepted request body (413 beyond)."""
    keep_alive_s: int = Field(75, ge=1)
    """How long an idle REST keep-alive connection stays open. Longer than the idle timeouts of
    clients and load balancers (httpx and requests pools: 5 s), so that they, not the server,
    close idle connections: a request sent on a connection the server is closing fails."""
    body_timeout_s: float = Field(60.0, gt=0)
    """Longest a REST client may take to send its request body, from the end of its headers;
    a slower upload (slow-loris) gets 408 and its connection is closed."""
    max_image_pixels: int = 50_000_000
    """Largest accepted image in pixels, checked before decoding (413 beyond)."""
    max_persons: int = 16
    """Most person boxes in one request (422 beyond)."""
    default_fov_degrees: float = Field(60.0, ge=1, le=179)
    """Diagonal field of view assumed when a request gives no intrinsics (echoed back)."""
    reframe_partial: bool = True
    """Run one more pass for a person seen only in part (a head-and-shoulders box, a body cut by
    the frame), on the crop where the whole body would be (posecontract.framing); only models
    with the visibility head. Off: one pass per box, whatever it shows."""
    root_depth_prior: Literal["knee_neck"] = "knee_neck"
    """How root depth is inferred when a request gives none: 920 mm knee-neck length."""

    auth_tokens: list[str] = []
    """Bearer tokens accepted on predict and model routes; empty (and no file) = no auth."""
    auth_token_file: Path | None = None
    """File with one bearer token per line (# comments allowed), added to auth_tokens."""
    rate_limit_rps: float = Field(0.0, ge=0)
    """Requests per second allowed per client (token, else address); 0 disables the limit."""
    rate_limit_burst: int = Field(10, ge=1)
    """Requests a client may send at once before the per-second rate applies."""

    malloc_arena_max: int = Field(2, ge=0)
    """glibc malloc arenas of the whole process, set at start-up (0: glibc's default, 8 per
    core). One arena per decode or inference thread each keeps its own freed peak resident."""

    log_level: str = "info"
    """Logging level."""
