"""One run over several processes (issue 13, part 2): 2 CPU processes with gloo, through ``--devices 2`` and through
torchrun; one run directory, the same weights everywhere, resume, a clean stop on SIGTERM, a killed process that
ends the run with a clear message, and the user mistakes refused before anything starts."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from imgclf.cli.main import main

from .conftest import write_class_folders

ARGS = ["--model", "cnn:8-m-16-m-fc16", "--batch-size", "8", "--workers", "0", "--no-plots", "--quiet",
        "--scheduler", "none"]


def imgclf(cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = os.environ | {"IMGCLF_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "imgclf", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """A 2-process run of 2 epochs through --devices, then resumed for a third (shared by the tests below)."""
    root = tmp_path_factory.mktemp("ddp")
    write_class_folders(root / "shapes")
    loud = [a for a in ARGS if a != "--quiet"]  # the per-epoch lines are the progress bar's
    first = imgclf(root, "train", "shapes", "--devices", "2", "--epochs", "2", "--name", "d2", *loud)
    resumed = imgclf(root, "train", "--resume", "--name", "d2", "--epochs", "3", "--devices", "2", "--quiet")
    return root, first, resumed


def test_two_processes_train_one_run_with_the_same_weights(two_process_run):
    root, first, _ = two_process_run
    assert first.returncode == 0, first.stderr
    assert [p.name for p in (root / "runs").iterdir()] == ["d2"]  # one run directory, written by rank 0
    log = (root / "runs" / "d2" / "train.log").read_text()
    assert log.count("training cnn:8-m-16-m-fc16") == 1  # one process logs
    assert "2 processes (gloo): global batch 8 = 2 x 4 per process" in log
    assert "the 2 processes end with identical weights" in log and "s  2 processes\n" in log
    assert "decoded images in disk store" in log  # built once, shared through the page cache
    state = torch.load(root / "runs" / "d2" / "last.pt", weights_only=True)
    assert state["processes"] == 2 and len(state["ranks"]) == 2


def test_a_two_process_run_resumes_with_as_many_processes(two_process_run):
    root, _, resumed = two_process_run
    assert resumed.returncode == 0, resumed.stderr
    rows = (root / "runs" / "d2" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    other = imgclf(root, "train", "--resume", "--name", "d2", "--epochs", "4")
    assert other.returncode == 2 and "trained by 2 process(es), this is 1; resume it with --devices 2" in \
        other.stderr and "Traceback" not in other.stderr


def test_torchrun_starts_the_same_run(tmp_path):
    write_class_folders(tmp_path / "shapes")
    env = os.environ | {"IMGCLF_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "imgclf", "train", "shapes", "--epochs", "1", "--name", "tr", *ARGS],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    log = (tmp_path / "runs" / "tr" / "train.log").read_text()
    assert "the 2 processes end with identical weights" in log and (tmp_path / "runs" / "tr" / "best.safetensors"
                                                                     ).exists()


def _launched(tmp_path: Path, epochs: str = "5000") -> tuple[subprocess.Popen, Path]:
    write_class_folders(tmp_path / "shapes")
    env = os.environ | {"IMGCLF_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "imgclf", "train", "shapes", "--devices", "2", "--epochs", epochs,
                             "--name", "long", *ARGS], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "runs" / "long" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    assert metrics.exists(), proc.communicate(timeout=5)
    return proc, tmp_path / "runs" / "long"


def _rank(launcher: int, rank: int) -> int:
    """The pid of the launcher's child with LOCAL_RANK=rank."""
    for proc in Path("/proc").iterdir():
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == launcher and f"LOCAL_RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except (OSError, ValueError, IndexError):
            continue
    raise AssertionError(f"no process of local rank {rank}")


def test_a_killed_process_ends_the_run_with_a_clear_message(tmp_path):
    proc, run = _launched(tmp_path)
    os.kill(_rank(proc.pid, 1), signal.SIGKILL)
    _, err = proc.communicate(timeout=90)  # the launcher stops the other process, no hang
    assert proc.returncode == 1
    assert "training process 1 of 2 was killed by SIGKILL; the launcher stopped the others" in err
    assert "Traceback" not in err
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] >= 1  # the last checkpoint survives


def test_sigterm_on_the_launcher_stops_every_process_after_a_checkpoint(tmp_path):
    proc, run = _launched(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "--resume --name long --project runs --devices 2" in err
    assert "Traceback" not in err
    state = torch.load(run / "last.pt", weights_only=True)
    assert len(state["ranks"]) == 2


def test_a_rendezvous_port_in_use_is_refused(tmp_path, monkeypatch, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("MASTER_PORT", str(busy.getsockname()[1]))
        assert main(["train", str(tmp_path), "--devices", "2", *ARGS]) == 2
    assert "is in use on this machine; unset MASTER_PORT" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--device", "cuda"], "no GPU is visible here"),
    (["--sync-bn"], "--sync-bn needs GPU processes"),
])
def test_gpu_options_without_gpus_are_refused_before_launching(tmp_path, capsys, extra, message):
    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    assert main(["train", str(tmp_path), "--devices", "2", *extra, *ARGS]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "runs").exists()
