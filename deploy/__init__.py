"""Deployment tooling: the Prometheus config, `make stack` (deploy/stack.py) without Docker, the
real Triton server for tests (triton_server.py), and the checks run against a deployment: the
bad-input corpus (badinput.py, `python -m bench.badinput`) and the fault proxy the reliability
suite puts in front of Triton (faultproxy.py)."""
