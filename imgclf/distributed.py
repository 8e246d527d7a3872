"""One training run over several processes: PyTorch's own launcher (torch.distributed.run, the engine behind
``torchrun``) starts them, torch.distributed connects them, DistributedDataParallel keeps their weights equal.

``imgclf train DATA --devices N`` launches N processes on this machine (one per GPU with NCCL, or N CPU processes
with gloo); ``torchrun --nnodes M --nproc-per-node N -m imgclf train DATA`` spans machines with torchrun's own
rendezvous. Either way each process finds its place in the environment torchrun sets (RANK, LOCAL_RANK,
WORLD_SIZE); this module reads it, sets the process group up and tears it down, and offers the few collective
steps the trainer needs. With one process every function here is a no-op, so single-process code calls them freely.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .errors import UserError, warn
from .resources import threads_per_process, usable_cpus

# How long a collective may wait for the others (the longest is the barrier while local rank 0 decodes the data
# set once for its machine); a process that dies is noticed by the launcher long before, which stops the rest.
TIMEOUT = datetime.timedelta(minutes=float(os.environ.get("IMGCLF_DIST_TIMEOUT_MIN", "60")))


def launched() -> bool:
    """True inside a process started by torchrun / ``--devices`` (WORLD_SIZE is set)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's global rank (from the environment once the group is gone: rank 0 evaluates after it)."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if dist.is_initialized() else 0


def is_main() -> bool:
    """Global rank 0: the one process that writes the run directory, logs and prints."""
    return rank() == 0


def setup(device: str = "auto") -> torch.device:
    """Join the process group torchrun described and return this process's device: ``cuda:LOCAL_RANK`` with NCCL
    when there are GPUs (and ``device`` allows them), else the CPU with gloo."""
    local = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise UserError(f"process {local} on this machine has no GPU of its own ({torch.cuda.device_count()} "
                            f"GPU(s) here); start at most that many processes per machine")
        torch.cuda.set_device(local)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT,
                            device_id=torch.device("cuda", local) if use_cuda else None)
    return torch.device("cuda", local) if use_cuda else torch.device("cpu")


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def local_main_first() -> Iterator[None]:
    """Local rank 0 runs the block first (it decodes the data set into the machine's disk store, computes the
    backbone features); the other processes of every machine wait, then run it and find the work done."""
    first = local_rank() == 0
    if not first:
        barrier()
    yield
    if first:
        barrier()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Each value summed over every process (float64, so counts stay exact)."""
    if not dist.is_initialized():
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_process(flag: bool) -> bool:
    """True on every process when it is true on any one (e.g. a stop signal that reached one of them)."""
    return all_reduce_sum([float(flag)])[0] > 0 if dist.is_initialized() else flag


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process (a picklable value, e.g. the run directory's name)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# ---- what the trainer needs from the group --------------------------------------------------------------------------
def parallel(model: nn.Module, device: torch.device, sync_bn: bool, find_unused: bool) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel (the model itself for one process). ``find_unused`` for
    fine-tuning, whose frozen backbone gives no gradients in the first epochs."""
    if world_size() == 1:
        return model
    if sync_bn:
        if device.type != "cuda":
            raise UserError("--sync-bn needs GPU processes (SyncBatchNorm runs on CUDA); leave it out on the CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                               find_unused_parameters=find_unused)


def average_buffers(model: nn.Module) -> None:
    """Batch-norm running statistics averaged over the processes (timm's ``distribute_bn``): each process updated
    them on its own shard since DDP last copied rank 0's, so validation and the checkpoint would otherwise see
    rank 0's alone."""
    if world_size() == 1:
        return
    for name, buffer in model.named_buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer.data)
            buffer.data.div_(world_size())


def same_weights(model: nn.Module) -> str:
    """A line for the log, after checking that every process ends with the same weights (a checksum each)."""
    with torch.no_grad():
        total = sum(float(p.detach().double().abs().sum()) + float(p.detach().double().sum())
                    for p in model.state_dict().values() if p.is_floating_point())
    sums = gather(total)
    if len(set(sums)) != 1:
        raise RuntimeError(f"the {len(sums)} processes ended with different weights (checksums {sums})")
    return f"the {len(sums)} processes end with identical weights (checksum {sums[0]:.6g})"


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another process went away (killed, crashed)."""
    text = str(exc)
    return isinstance(exc, dist.DistError) or any(
        k in text for k in ("gloo", "NCCL", "Connection reset", "Connection closed", "Broken pipe"))


# ---- the launcher: ``imgclf train --devices N`` -------------------------------------------------------------------
def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_devices(n: int, device: str, sync_bn: bool = False) -> None:
    """Refuse more GPU processes than GPUs, and GPU options without GPUs; warn when CPU processes outnumber the
    cores."""
    gpus = torch.cuda.device_count() if device in ("auto", "cuda") and torch.cuda.is_available() else 0
    if device == "cuda" and gpus == 0:
        raise UserError("--devices with --device cuda: no GPU is visible here; use --device cpu for CPU processes")
    if sync_bn and gpus == 0:
        raise UserError("--sync-bn needs GPU processes (SyncBatchNorm runs on CUDA); leave it out on the CPU")
    if gpus and n > gpus:
        raise UserError(f"--devices {n}: this machine has {gpus} GPU(s); use --devices {gpus} or fewer (or "
                        f"--device cpu for {n} CPU processes)")
    cores = usable_cpus()
    if not gpus and n > cores:
        warn(f"--devices {n}: more processes than the {cores} CPU core(s) this process may use; they will share them")


def launch(n: int, argv: list[str], device: str = "auto", sync_bn: bool = False) -> int:
    """Run ``imgclf ARGV`` (``train ...``) in ``n`` processes through torch.distributed.run
    (torchrun --standalone), and
    return the exit code: 0, the training processes' own code for a user error or a stop (each has said why), or 1
    with one line naming the process that failed (the launcher stops the others at once)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    check_devices(n, device, sync_bn)
    port = os.environ.get("MASTER_PORT")
    if port is not None and not _port_free(int(port)):
        raise UserError(f"port {port} (from $MASTER_PORT) is in use on this machine; unset MASTER_PORT to let "
                        f"imgclf choose a free one, or pick another")
    # torchrun --standalone: a c10d rendezvous on this machine, on a free port unless $MASTER_PORT names one.
    endpoint = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port or 0}", "--rdzv-id", uuid.uuid4().hex]
    # Each process gets its share of the cores rather than torchrun's default of one thread.
    gpus = device in ("auto", "cuda") and torch.cuda.is_available()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(1 if gpus else n)))
    # DDP's once-per-process notice that fine-tuning's unfrozen epochs leave no parameter unused (find_unused is for
    # the frozen ones) would print from every process; torch's C++ errors still show.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    args = get_args_parser().parse_args([*endpoint, "--nproc-per-node", str(n), "--max-restarts", "0",
                                         "--module", "imgclf", *argv])
    config, cmd, cmd_args = config_from_args(args)
    config.shutdown_timeout = 60  # time for a stopped run's rank 0 to finish writing its checkpoint
    for name in list(logging.root.manager.loggerDict):  # the agent's notices would bury the run's own messages
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    previous = signal.getsignal(signal.SIGINT)
    try:
        elastic_launch(config, cmd)(*cmd_args)
    except SignalException as exc:  # SIGTERM/SIGINT here: the agent stopped the processes, which saved and said so
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        rank_, failure = exc.get_first_failure()
        if failure.exitcode in (2, 130, 143) or failure.exitcode > 128:
            return failure.exitcode  # a user error or a stop: the process said why
        how = f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else \
            f"exited with code {failure.exitcode}"
        print(f"imgclf train: error: training process {rank_} of {n} {how}; the launcher stopped the others. The "
              f"run keeps its last checkpoint: continue with imgclf train --resume --name RUN --devices {n}",
              file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0
