"""What this process may use of the machine: its CPUs and its memory, one rule each, for every part of imgclf.

A laptop, a container and a Slurm job differ here: ``taskset`` and Slurm pin a process to some cores (its CPU
affinity), Docker and Kubernetes give it a CPU quota and a memory limit (cgroups) without hiding the host's cores
or memory from ``os.cpu_count()`` and ``/proc/meminfo``. Reading the machine's figures there starts too many workers
and threads (each then waits for the others) and plans batches for memory the process will be killed for using.
How much a block of work takes is measured here too (:class:`PeakMemory`), for training's and prediction's batches.
torch is imported only where a CUDA device is named: the ONNX prediction path runs without it.
"""
from __future__ import annotations

import ctypes
import functools
import gc
import math
import os
from pathlib import Path
from typing import Any

CGROUP = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _groups(controller: str, root: Path, table: Path) -> list[Path]:
    """The folders of this process's cgroup for ``controller`` (v1) or of its unified cgroup (v2, ``""``), from its
    own up to the root: a limit may be set on any of them. /proc/self/cgroup names the process's group; in a
    container with its own cgroup namespace that is "/", the root of what the container sees."""
    own = "/"
    for line in (_read(table) or "").splitlines():
        _, names, path = line.split(":", 2)
        if (controller in names.split(",")) if controller else names == "":
            own = path
    base = root / controller if controller else root
    folder = base / own.lstrip("/")
    if not folder.is_dir():  # the path is the host's view: not mounted here
        return [base]
    return [folder, *[p for p in folder.parents if p.is_relative_to(base)]]


def cpu_quota(root: Path = CGROUP, table: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPUs a cgroup quota allows (``docker --cpus 1.5`` gives 1.5), or None where there is no quota."""
    quotas = []
    for folder in _groups("", root, table):  # cgroup v2: cpu.max holds "max 100000" or "150000 100000"
        quota, _, period = (_read(folder / "cpu.max") or "max").partition(" ")
        if quota != "max" and period:
            quotas.append(int(quota) / int(period))
    for folder in _groups("cpu", root, table):  # v1
        quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
        if quota is not None and period is not None and int(quota) > 0:
            quotas.append(int(quota) / int(period))
    return min(quotas, default=None)


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


def memory_limit(root: Path = CGROUP, table: Path = Path("/proc/self/cgroup")) -> int | None:
    """Bytes left under the tightest cgroup memory limit of this process (the limit less what the group uses now),
    or None where there is no limit."""
    room = []
    for controller, limit_file, usage_file in (("", "memory.max", "memory.current"),  # cgroup v2
                                                ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes")):  # v1
        for folder in _groups(controller, root, table):
            limit = _read(folder / limit_file)
            # no limit: "max" (v2), or a huge number (v1: a page-rounded 2**63)
            if limit is not None and limit != "max" and int(limit) < 2 ** 60:
                room.append(max(0, int(limit) - int(_read(folder / usage_file) or 0)))
    return min(room, default=None)


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


def device_memory(device: Any) -> int:
    """Bytes a block of work on ``device`` (a ``torch.device`` or its type, "cpu") may take: a CUDA device's free
    memory, else :func:`available_memory`."""
    if getattr(device, "type", device) == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    return available_memory()


def inference_batch(shape: tuple[int, ...], budget: int = 1 << 25) -> int:
    """Images per forward pass without gradients, at most ``budget`` bytes of input as float32 (32 MB): 256 small
    images, 55 photos at 224 px. The ceiling before the pass is measured (imgclf.inference.batching)."""
    return max(1, min(256, budget // (4 * math.prod(shape))))


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


class PeakMemory:
    """The peak memory of a block of work on ``device`` (a ``torch.device`` or "cpu"), above what was in use before
    it: CUDA's allocator statistics, or on Linux the process's peak resident size (reset through
    /proc/self/clear_refs).

    On the CPU, glibc would serve the block's tensors from its heap, where freed memory is reused only when it
    happens to fit and is not always handed back: the resident size would then follow the heap's fragmentation,
    not the tensors. So during the block every allocation from 64 KB on is a mapping of its own, returned to the
    system when freed; after it, the threshold is set to 32 MB, where glibc's own adjustment ends up anyway."""

    def __init__(self, device: Any) -> None:
        self.device, self.kind = device, getattr(device, "type", device)

    @staticmethod
    def available(device: Any) -> bool:
        """Whether the memory of work on ``device`` can be measured here (CUDA, or the CPU on Linux with glibc)."""
        kind = getattr(device, "type", device)
        return kind == "cuda" or (kind == "cpu" and Path("/proc/self/clear_refs").exists() and _glibc() is not None)

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.kind == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            libc = _glibc()
            libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
            libc.malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident size to the current one
            self.start = _status("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.kind == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.start
        else:
            self.peak = _status("VmHWM") - self.start
            _glibc().mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """glibc, whose allocator the measurement steers (None elsewhere: musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")
