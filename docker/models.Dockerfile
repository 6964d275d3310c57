# The model repository as an image, for Kubernetes (deploy/k8s): an init container copies
# /models into the volume Triton (GPU topology) or the gateway (CPU topology) reads. One tag per
# model release: a model update is a new tag rolled out (README, "Kubernetes").
#   docker build -f docker/models.Dockerfile -t margipose/models:0.1.0 .
# docker/models.Dockerfile.dockerignore lets model_repository/ into this build only.
FROM busybox:1.37
COPY model_repository/ /models/
USER 10001
# Nothing runs in it but `cp`: no service to check.
HEALTHCHECK NONE
