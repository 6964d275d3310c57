"""The C allocator under the gateway: a cap on glibc's malloc arenas, set once per process.

glibc hands each new thread an arena of its own, up to 8 per core, and an arena keeps the pages
of freed chunks resident unless they sit at its top. The gateway frees large buffers on many
threads (request bodies and decoded images on the decode pool, a batch's activations on the
inference thread), so every arena comes to hold its own freed copy of the peak and the RSS
climbs under sustained load although nothing leaks (measured in BENCHMARKS.md, "Reliability":
most of the arenas' memory was free chunks). With fewer arenas, the threads reuse the memory
that the others freed.
"""

from __future__ import annotations

import ctypes
import platform

M_ARENA_MAX = -8  # mallopt's parameter number for the arena cap (glibc's malloc.h)


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at `arenas` (0: keep glibc's default); True if it took effect.

    Call it before the process starts its worker threads: a thread that already has an arena
    keeps it. Other C libraries (musl, macOS) have no such setting: False, nothing changed.
    """
    if arenas < 0:
        raise ValueError(f"arenas must be 0 (glibc's default) or a positive count, got {arenas}")
    if arenas == 0 or platform.libc_ver()[0] != "glibc":
        return False
    return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas))
