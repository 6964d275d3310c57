"""The CPUs this process may use: its affinity and its cgroup's quota (a container's limit).

For the threads of CPU inference beside the gateway, in process (the local backend) or in a
Triton container of the stack (deploy/stack.py).
"""

import math
import os
from pathlib import Path


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup"), own: str | None = None
                     ) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (`docker --cpus`, a Kubernetes CPU
    limit), or None when unlimited or unknown. cgroup v2 (`cpu.max`, in the process's own
    group `own`, read from /proc/self/cgroup, then at the root) or v1 (`cpu/cpu.cfs_*_us`)."""
    if own is None:
        try:
            own = next((line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines()
                        if line.startswith("0::")), "/")
        except OSError:
            own = "/"
    for folder in dict.fromkeys((root / own.strip("/"), root)):  # own group first, no repeat
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        return None if quota == "max" else int(quota) / int(period)
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def spare_cpu_threads() -> int:
    """Intra-op threads for CPU inference that shares the machine with a gateway: one fewer
    than the CPUs this process may run on (its affinity, and its cgroup's quota rounded up),
    at least 1.

    The gateway's own work (HTTP, JPEG decoding, cropping, the event loop) needs a core. Torch
    threads that take every core spin at each parallel region's barrier whenever one of them
    is descheduled, so on 2 vCPUs two threads served the same throughput as one at twice the
    latency, and stalled for seconds when a neighbour took the CPU (BENCHMARKS.md). In a
    container the quota, not the host's cores, is what there is to share.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus - 1)
