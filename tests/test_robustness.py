"""Robustness: the dataset doctor over a gallery of bad and odd files, training and prediction that survive it
without touching a file, the bad-file limit, and runs killed or stopped mid-epoch that resume exactly."""
import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import imgclf
from imgclf.cli.main import main
from imgclf.errors import UserError
from imgclf.training.callbacks import Callback

from .conftest import EXPECTED, TINY, TINY_ARGS, write_class_folders, write_gallery


def fingerprints(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    return write_gallery(tmp_path / "gallery", plain_per_class=20)


def test_check_reports_every_kind_of_file_and_the_leak(gallery, tmp_path, capsys):
    before = fingerprints(gallery)
    report, clean = tmp_path / "report.json", tmp_path / "clean.csv"
    assert main(["check", str(gallery), "--quiet", "--output", str(report), "--fix", str(clean)]) == 1
    printed = capsys.readouterr().out
    assert "LEAKAGE: 1 image(s)" in printed and "4 unreadable" in printed
    files = {Path(f["path"]).name: f for f in json.loads(report.read_text())["files"]}
    for name, (status, words) in EXPECTED.items():
        found = files[name]
        assert found["status"] == status, name
        assert words in " ".join([found["reason"] or "", *found["notes"]]), name
    leak = json.loads(report.read_text())["leakage"]
    assert [Path(x["other"]).name for x in leak] == ["leaked.png"]
    with clean.open() as f:
        rows = list(csv.DictReader(f))
    names = {Path(r["path"]).name for r in rows}
    assert "leaked.png" not in names and not names & {"empty.jpg", "truncated.jpg", "text.png", "bomb.png"}
    assert {"cmyk.jpg", "rotated.jpg", "UPPER.JPG"} <= names
    assert fingerprints(gallery) == before  # nothing written into the data


def test_train_and_predict_survive_the_gallery_without_touching_a_file(gallery, run_cwd, capsys):
    before = fingerprints(gallery)
    assert main(["train", str(gallery), *TINY_ARGS, "--epochs", "1", "--name", "g", "--img-size", "16"]) == 0
    with (run_cwd / "runs/g/skipped.csv").open() as f:
        skipped = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(f)}
    assert set(skipped) == {"empty.jpg", "truncated.jpg", "text.png", "bomb.png"}
    assert "decompression bomb" in skipped["bomb.png"] and skipped["empty.jpg"] == "empty file"
    log = (run_cwd / "runs/g/train.log").read_text()
    assert "warning: 1 validation/test image(s) are exact copies of training images" in log and "leaked.png" in log
    capsys.readouterr()
    assert main(["predict", "runs/g", str(gallery / "train" / "cat"), "--output", "p.json"]) == 0
    predictions = {Path(p["path"]).name: p for p in json.loads((run_cwd / "p.json").read_text())}
    assert predictions["truncated.jpg"]["error"] and predictions["cmyk.jpg"]["labels"][0] in ("cat", "dog")
    assert ".DS_Store" not in predictions and "notes.txt" not in predictions
    assert all(p["labels"] for name, p in predictions.items() if EXPECTED.get(name, ("ok",))[0] != "unreadable")
    assert main(["evaluate", "runs/g", str(gallery)]) == 0
    assert fingerprints(gallery) == before


def test_too_many_bad_files_stop_before_training(tmp_path, run_cwd, capsys):
    gallery = write_gallery(tmp_path / "mostly-bad", plain_per_class=3)
    assert main(["train", str(gallery), *TINY_ARGS, "--epochs", "1", "--img-size", "16"]) == 2
    err = capsys.readouterr().err
    assert "cannot be read, more than --max-bad-fraction 0.1" in err and "imgclf check" in err
    assert not any((run_cwd / "runs").iterdir())  # no empty run directory left behind
    assert main(["train", str(gallery), *TINY_ARGS, "--epochs", "1", "--img-size", "16",
                 "--max-bad-fraction", "0.5"]) == 0


# ---- interrupted runs ------------------------------------------------------------------------------------------
RUN_ARGS = ["--model", "cnn:16-16-m-32-fc32", "--batch-size", "4", "--epochs", "2", "--img-size", "16",
            "--deterministic", "--workers", "0", "--quiet", "--project", "runs"]


def _train(data: Path, cwd: Path, name: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "imgclf", "train", str(data), *RUN_ARGS, "--name", name, *extra],
                            cwd=cwd, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})


def _final_weights(cwd: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(cwd / "runs" / name / "last.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def long_data(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A data set with a few hundred steps per epoch, and the weights of an uninterrupted run on it."""
    root = tmp_path_factory.mktemp("interrupt")
    data = write_class_folders(root / "shapes", per_class=300)  # epoch 2 lasts ~0.7 s on a fast day
    reference = _train(data, root, "whole")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    return data, _final_weights(root, "whole")


def _stop_mid_epoch(proc: subprocess.Popen, run: Path, sig: int, group: bool = False) -> None:
    """Wait until epoch 1 is on disk, let epoch 2 get going, then send ``sig`` (to the whole process group when
    ``group``)."""
    deadline = time.monotonic() + 120
    while not (run / "metrics.csv").exists() or len((run / "metrics.csv").read_text().splitlines()) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before it could be stopped"
        time.sleep(0.02)
    # A tenth of epoch 1's time on (epoch 1 includes the warm-up: later epochs took a quarter of it): past its
    # checkpoint, well before epoch 2 ends, however fast the machine is.
    header, first = (run / "metrics.csv").read_text().splitlines()[:2]
    time.sleep(0.05 + 0.1 * float(dict(zip(header.split(","), first.split(",")))["time"]))
    assert proc.poll() is None
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_run_stopped_mid_epoch_resumes_to_the_same_weights(long_data, tmp_path, sig):
    data, reference = long_data
    proc = _train(data, tmp_path, "cut")
    _stop_mid_epoch(proc, tmp_path / "runs" / "cut", sig)
    code = proc.wait(timeout=120)
    err = proc.stderr.read()
    if sig == signal.SIGTERM:  # finishes the step, saves, says how to resume
        assert code == 128 + signal.SIGTERM and re.search(r"during epoch [2-9], after step \d+ of", err), err
        assert "imgclf train --resume --name cut" in err
        assert torch.load(tmp_path / "runs/cut/last.pt", weights_only=True)["step"] > 0
    else:
        assert code == -signal.SIGKILL
    resumed = _train(data, tmp_path, "cut", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    final = _final_weights(tmp_path, "cut")
    assert all(torch.equal(final[k], reference[k]) for k in reference)


class _OutOfMemory(Callback):
    def on_batch_end(self, trainer, step, logs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_suggests_a_smaller_batch(image_folder, run_cwd):
    with pytest.raises(UserError, match=r"out of GPU memory at --batch-size 8; try --batch-size 4"):
        imgclf.train(str(image_folder), epochs=1, callbacks=[_OutOfMemory()], **TINY)


def test_a_resized_recompressed_copy_in_test_is_a_near_duplicate_leak(tmp_path):
    from PIL import Image
    from skimage import data

    from imgclf.data.check import check, near_pairs

    photo = Image.fromarray(data.astronaut())
    for folder in ("train/astro", "train/cat", "test/astro", "test/cat"):
        (tmp_path / folder).mkdir(parents=True)
    photo.resize((128, 128)).save(tmp_path / "train/astro/astro.png")
    Image.fromarray(data.chelsea()).resize((96, 64)).save(tmp_path / "train/cat/cat.png")
    photo.resize((100, 100)).save(tmp_path / "test/astro/copy.jpg", quality=70)  # another size, lossy: not equal
    Image.fromarray(data.rocket()).resize((64, 96)).save(tmp_path / "test/cat/rocket.png")
    report = check(str(tmp_path), quiet=True)
    assert not report.duplicates
    assert [(Path(report.files[i].path).name, Path(report.files[j].path).name) for i, j, _ in report.leaks] == \
        [("astro.png", "copy.jpg")]
    assert near_pairs(["ffffffffffffffff", "fffffffffffffff0", "0000000000000000"], 4) == [(0, 1, 4)]


def test_sigterm_to_the_whole_process_group_checkpoints_like_sigterm_to_the_trainer(long_data, tmp_path):
    """What timeout, systemd, Slurm and Kubernetes do: SIGTERM to every process, DataLoader workers included."""
    data, _ = long_data
    args = list(RUN_ARGS)
    args[args.index("--workers") + 1] = "1"  # an augmentation worker process that gets the signal too
    proc = subprocess.Popen([sys.executable, "-m", "imgclf", "train", str(data), *args, "--name", "group"],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    run = tmp_path / "runs" / "group"
    _stop_mid_epoch(proc, run, signal.SIGTERM, group=True)  # epoch 2 under way, its workers running
    code = proc.wait(timeout=120)
    err = proc.stderr.read()
    assert code == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "imgclf train --resume --name group" in err
    assert "DataLoader worker" not in err and "Traceback" not in err
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] >= 1
