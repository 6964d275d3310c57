"""Peer models run beside ours for benchmarks and as teachers (MediaPipe BlazePose)."""
