"""Deployment tooling: the Prometheus config, and `make stack` (deploy/stack.py) without Docker."""
