# The MargiPose gateway (REST :8080, gRPC :50051). Two targets:
#
#   docker build -f docker/gateway.Dockerfile -t margipose-gateway .                 # default
#   docker build -f docker/gateway.Dockerfile --target gateway-torch -t margipose-gateway:torch .
#
# `gateway` (the last stage, so the default) fronts Triton: no torch, about 10x smaller.
# `gateway-torch` runs the embedded backend (MARGIPOSE_BACKEND=local) on the CPU build of torch;
# for the embedded backend on a GPU, set TORCH_INDEX to a CUDA index (e.g. .../whl/cu128).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MARGIPOSE_HOST=0.0.0.0
WORKDIR /app
RUN useradd --system --uid 10001 --no-create-home gateway
# Dependency layers first: pyproject.toml changes far less often than the source. The empty
# package directories let pip resolve and install the dependencies before the code is copied.
COPY pyproject.toml README.md ./
RUN mkdir posecontract poseapi service \
    && touch posecontract/__init__.py poseapi/__init__.py service/__init__.py

# The embedded backend: torch, and ONNX Runtime for MARGIPOSE_RUNTIME=onnxruntime (model.onnx,
# 2.6-2.9x faster than torch on CPU; deploy/k8s/overlays/cpu runs it).
FROM base AS gateway-torch
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX}" "torch==2.13.0" \
    && pip install ".[serve,local,onnx]" && pip uninstall -y margipose-serve
COPY posecontract/ posecontract/
COPY poseapi/ poseapi/
COPY service/ service/
RUN pip install --no-deps .
USER 10001
ENV MARGIPOSE_BACKEND=local \
    MARGIPOSE_MODEL_REPOSITORY=/models
EXPOSE 8080 50051
# Ready = the model is loaded and warmed up, not just the process.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health/ready', timeout=2).status != 200)"]
CMD ["serve"]

FROM base AS gateway
RUN pip install ".[serve,triton]" && pip uninstall -y margipose-serve
COPY posecontract/ posecontract/
COPY poseapi/ poseapi/
COPY service/ service/
RUN pip install --no-deps .
USER 10001
ENV MARGIPOSE_BACKEND=triton
EXPOSE 8080 50051
# Ready = Triton answers and the model is ready there (the backend's readiness).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health/ready', timeout=2).status != 200)"]
CMD ["serve"]
