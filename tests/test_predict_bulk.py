"""Prediction over many files (issue 13, part 3): decoded in worker processes, rows streamed to the CSV in a stable
order, a killed run leaves a valid CSV, and --resume finishes it without repeating a file."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imgclf.cli.main import main

from .conftest import TINY_ARGS, write_class_folders


@pytest.fixture(scope="module")
def bulk(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bulk")
    data = write_class_folders(root / "train", 8)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["train", str(data), "--epochs", "1", "--name", "b", *TINY_ARGS]) == 0
    finally:
        os.chdir(cwd)
    return root / "runs" / "b", write_class_folders(root / "many", 400)


def _running(marker: str) -> list[int]:
    """Processes whose command line holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_worker_processes_predict_what_the_main_process_predicts(bulk, tmp_path):
    run, many = bulk
    for workers in ("0", "2"):
        assert main(["predict", str(run), str(many / "bar"), "--output", str(tmp_path / f"w{workers}.csv"),
                     "--workers", workers, "--batch-size", "16"]) == 0
    assert _rows(tmp_path / "w0.csv") == _rows(tmp_path / "w2.csv")
    assert len(_rows(tmp_path / "w0.csv")) == 401


def test_a_killed_bulk_prediction_leaves_a_valid_csv_and_resumes(bulk, tmp_path):
    run, many = bulk
    out = tmp_path / "preds.csv"
    command = [sys.executable, "-m", "imgclf", "predict", str(run), str(many), "--output", str(out),
               "--batch-size", "4", "--workers", "1"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while not out.exists() or len(out.read_text().splitlines()) < 40:  # rows are on disk before the end
        assert proc.poll() is None and time.monotonic() < deadline, "finished before it could be stopped"
        time.sleep(0.005)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10  # its decode workers notice and exit: nothing is left running
    while _running(str(out)):
        assert time.monotonic() < deadline, "decode workers outlived the killed prediction"
        time.sleep(0.1)
    partial = _rows(out)
    assert 40 <= len(partial) - 1 < 1200 and all(len(r) == len(partial[0]) for r in partial)
    assert main(["predict", str(run), str(many), "--output", str(out)]) == 2  # no silent overwrite
    assert main(["predict", str(run), str(many), "--output", str(out), "--resume"]) == 0
    rows = _rows(out)[1:]
    paths = [r[0] for r in rows]
    assert len(paths) == len(set(paths)) == 1200 and paths == sorted(paths)  # every file once, in a stable order
    assert all(r[1] in ("bar", "bright", "dark") for r in rows)
