"""Benchmarks of the MargiPose models; each module is a script run with `python -m bench.<name>`.

Results, with the machine and the exact command behind each, are collected in BENCHMARKS.md.
"""
