"""Files and processes an unlucky user meets: workers whose parent was killed, FIFOs and devices among the images,
huge files, names that a spreadsheet would run as formulas, and names with line separators in a resumed CSV."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import psutil
from hypothesis import given, strategies as st
from PIL import Image

from imgclf.cli.main import main
from imgclf.data.check import inspect_file
from imgclf.data.sources import load_source
from imgclf.files import FORMULA_START, _is_number, read_cell, safe_cell

from .conftest import TINY_ARGS, write_class_folders

ORPHAN = """
import time
from imgclf.data.tensors import parallel_imap
def slow(x):
    time.sleep(0.02)
    return bytes(1 << 20)
if __name__ == "__main__":
    for i, _ in enumerate(parallel_imap(slow, list(range(100000)), workers=2)):
        if i == 64:
            print("ready", flush=True)
"""


def _alive(processes: list[psutil.Process]) -> list[int]:
    out = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_decode_workers_die_with_a_killed_parent():
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        workers = psutil.Process(parent.pid).children(recursive=True)
        assert len(workers) == 2
    finally:
        parent.kill()
        parent.wait()
    deadline = time.time() + 5
    while _alive(workers) and time.time() < deadline:
        time.sleep(0.1)
    left = _alive(workers)
    for pid in left:
        os.kill(pid, 9)
    assert not left, f"workers {left} outlived their killed parent"


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """The command line in a process of its own, so that a hang fails the test instead of hanging the suite."""
    return subprocess.run([sys.executable, "-m", "imgclf", *args], capture_output=True, text=True, timeout=timeout)


# ---- 7. files that are not images --------------------------------------------------------------------------------

def test_fifos_devices_and_huge_files_are_skipped_unread(tmp_path):
    data = write_class_folders(tmp_path / "data", 6)
    os.mkfifo(data / "bar" / "pipe.png")
    (data / "bright" / "zero.png").symlink_to("/dev/zero")
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as f:  # sparse: 3 GB that take no disk
        f.truncate(3 << 30)
    (data / "dark" / "huge.png").symlink_to(huge)
    started = time.time()
    done = cli("check", str(data), "--output", str(tmp_path / "report.json"), timeout=120)
    assert time.time() - started < 100 and "Traceback" not in done.stderr, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    reasons = {Path(f["path"]).name: f["reason"] or "" for f in report["files"]}
    assert "not a regular file" in reasons["pipe.png"] and "not a regular file" in reasons["zero.png"]
    assert "over the 1 GB" in reasons["huge.png"]
    trained = cli("train", str(data), "--epochs", "1", "--project", str(tmp_path / "runs"), *TINY_ARGS, timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert "not a regular file" in trained.stderr and "Traceback" not in trained.stderr


def test_the_doctor_hashes_in_chunks(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    image.write_bytes(image.read_bytes() + bytes(5 << 20))  # a PNG with 5 MB of trailing bytes
    tracemalloc.start()
    try:
        found = inspect_file(image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert peak < 3 << 20, f"{peak / 2**20:.1f} MB held to hash a 5 MB file"


# ---- 8, 9. formula cells, and names a line splitter would cut ------------------------------------------------------

@given(st.text(max_size=12))
def test_safe_cells_read_back_exactly(text):
    escaped = safe_cell(text)
    assert read_cell(escaped) == text
    assert not (isinstance(escaped, str) and escaped[:1] in FORMULA_START) or _is_number(escaped)


def test_formula_names_are_escaped_in_every_csv_and_read_back(tmp_path):
    data = write_class_folders(tmp_path / "data", 8, classes=("=1+2", "@SUM(A1)", "-cmd"))
    run = tmp_path / "runs" / "f"
    assert main(["train", str(data), "--epochs", "1", "--project", str(tmp_path / "runs"), "--name", "f",
                 *TINY_ARGS]) == 0
    with (run / "confusion_matrix.csv").open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header[1:] == ["'-cmd", "'=1+2", "'@SUM(A1)"]
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run), str(data), "--output", str(out), "--top-k", "1"]) == 0
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["label"][:1] == "'" for r in rows)
    assert main(["predict", str(run), str(data), "--output", str(out), "--top-k", "1", "--resume"]) == 0
    with out.open(newline="", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == len(rows)  # nothing predicted twice
    clean = tmp_path / "clean.csv"
    main(["check", str(data), "--fix", str(clean)])
    assert sorted(load_source(str(clean)).classes) == ["-cmd", "=1+2", "@SUM(A1)"]


def test_a_resumed_csv_keeps_names_with_line_separators_whole(tmp_path):
    data = write_class_folders(tmp_path / "data", 6)
    run = tmp_path / "runs" / "u"
    assert main(["train", str(data), "--epochs", "1", "--project", str(tmp_path / "runs"), "--name", "u",
                 *TINY_ARGS]) == 0
    odd = data / "bar" / "a\u2028b\nc.png"
    (data / "bar" / "000.png").rename(odd)
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run), str(data), "--output", str(out)]) == 0
    for _ in range(2):
        assert main(["predict", str(run), str(data), "--output", str(out), "--resume"]) == 0
    with out.open(newline="", encoding="utf-8") as f:
        paths = [r["path"] for r in csv.DictReader(f)]
    assert len(paths) == len(set(paths)) == 18 and str(odd) in paths
