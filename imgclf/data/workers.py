"""How every worker process imgclf starts behaves: it leaves the signals to its parent and dies with it.

SIGTERM to the whole process group (what timeout, systemd, Slurm and Kubernetes send) and Ctrl-C reach the workers
too; they ignore both, so the main process can finish its step, save a checkpoint and shut them down, instead of
dying on "DataLoader worker ... is killed by signal". And a worker whose parent was killed (SIGKILL, the OOM
killer) exits within half a second: otherwise it is reparented to PID 1 and can wait forever, holding its memory,
on a queue the dead parent will never read (a pipe whose other end its sibling workers still hold open).
"""
from __future__ import annotations

import os
import signal
import threading
import time


def start_worker(parent: int) -> None:
    """A worker's first act (``worker_init_fn``, a pool's ``initializer``); ``parent`` is the parent's PID."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)  # not sys.exit: that would wait for the queue threads, which may never finish

    threading.Thread(target=watch, name="imgclf-parent-watch", daemon=True).start()


class WorkerStart:
    """``start_worker`` for torch's DataLoader, whose ``worker_init_fn`` is called with the worker's id (a class
    rather than a closure, so that it pickles for the ``spawn`` start method)."""

    def __init__(self) -> None:
        self.parent = os.getpid()

    def __call__(self, _worker_id: int) -> None:
        start_worker(self.parent)
