"""What this process may use of the machine: its CPUs and its memory, one rule each, for every part of imgclf.

A laptop, a container and a Slurm job differ here: ``taskset`` and Slurm pin a process to some cores (its CPU
affinity), Docker and Kubernetes give it a CPU quota and a memory limit (cgroups) without hiding the host's cores
or memory from ``os.cpu_count()`` and ``/proc/meminfo``. Reading the machine's figures there starts too many workers
and threads (each then waits for the others) and plans batches for memory the process will be killed for using.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_quota(root: Path = CGROUP) -> float | None:
    """The CPUs a cgroup quota allows (``docker --cpus 1.5`` gives 1.5), or None where there is no quota."""
    v2 = _read(root / "cpu.max")  # cgroup v2: "max 100000" or "150000 100000"
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return None if quota == "max" or not period else int(quota) / int(period)
    quota, period = _read(root / "cpu" / "cpu.cfs_quota_us"), _read(root / "cpu" / "cpu.cfs_period_us")  # v1
    if quota is None or period is None or int(quota) <= 0:
        return None
    return int(quota) / int(period)


def usable_cpus() -> int:
    """The cores this process may run on: its affinity (taskset, Slurm, a container's cpuset), capped by a cgroup
    CPU quota rounded up (1.5 CPUs keep two threads busy part of the time)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    quota = cpu_quota()
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def default_workers() -> int:
    """Augmentation worker processes beside the training threads: one is enough for 2 cores, at most 4."""
    return max(1, min(4, usable_cpus() - 1))


def decode_workers() -> int:
    """Worker processes that only decode images (the store, bulk prediction): one per usable core, at most 8; none
    on a single core, where a worker would take turns with this process and only add the copying between them."""
    cores = usable_cpus()
    return 0 if cores == 1 else min(8, cores)


def threads_per_process(processes: int = 1) -> int:
    """Compute threads for each of ``processes`` processes sharing this process' cores (torch's, onnxruntime's)."""
    return max(1, usable_cpus() // max(1, processes))


def memory_limit(root: Path = CGROUP) -> int | None:
    """Bytes of the cgroup memory limit less what the cgroup uses now, or None where there is no limit."""
    for limit_file, usage_file in (("memory.max", "memory.current"),  # cgroup v2
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):  # v1
        limit = _read(root / limit_file)
        if limit is None:
            continue
        # v1 says "no limit" with a huge number (a page-rounded 2**63), v2 with "max"
        if limit == "max" or int(limit) >= 2 ** 60:
            return None
        return max(0, int(limit) - int(_read(root / usage_file) or 0))
    return None


def available_memory() -> int:
    """Bytes of memory this process can use now: Linux' MemAvailable (elsewhere the free pages), or what is left
    under a cgroup memory limit where that is less."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        pass
    if free is None:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit = memory_limit()
    return free if limit is None else min(free, limit)
