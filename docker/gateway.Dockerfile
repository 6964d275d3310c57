# The MargiPose gateway (REST :8080, gRPC :50051) in front of Triton.
#
#   docker build -f docker/gateway.Dockerfile -t margipose-gateway .
#
# The project depends on torch (the embedded backend and the image geometry import it), so the
# image carries the CPU build from PyTorch's CPU index: no CUDA wheels, the GPU work is Triton's.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependency layers first: they change far less often than the source.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY posecontract/ posecontract/
COPY service/ service/
COPY training/ training/
RUN pip install ".[serve,triton]"

RUN useradd --system --uid 10001 --no-create-home gateway
USER gateway

ENV MARGIPOSE_HOST=0.0.0.0 \
    MARGIPOSE_BACKEND=triton
EXPOSE 8080 50051

# Ready = the model is reachable and warmed up (the backend's readiness, not just the process).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health/ready', timeout=2).status != 200)"]

CMD ["serve"]
