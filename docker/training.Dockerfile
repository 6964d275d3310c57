# Training and export on a CUDA PyTorch base (torch, CUDA and cuDNN come with the image).
#
#   docker build -f docker/training.Dockerfile -t margipose-train .
#   docker run --gpus all --shm-size 8g -v /data:/data:ro -v "$PWD/runs:/app/runs" \
#       margipose-train margipose-train --data-root /data --train mpi3d-trainval mpii-trainval
#   docker run --gpus all --shm-size 8g ... margipose-train \
#       torchrun --nproc_per_node=8 -m training.train --data-root /data ...
FROM pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN useradd --create-home --uid 10001 trainer
# Dependencies before source; torch is the base image's (the extras' torch>=2.4 is satisfied).
COPY pyproject.toml README.md ./
RUN mkdir posecontract training && touch posecontract/__init__.py training/__init__.py \
    && pip install ".[train]" && pip uninstall -y margipose-serve
COPY posecontract/ posecontract/
COPY training/ training/
RUN pip install --no-deps . && mkdir -p /app/runs && chown trainer /app/runs
USER 10001
# A trainer has no port to probe: healthy while Python and torch import.
HEALTHCHECK --interval=60s --timeout=20s --retries=3 CMD ["python", "-c", "import torch"]
CMD ["margipose-train", "--help"]
