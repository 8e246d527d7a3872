"""The decoded-image store (issue 13, part 1): RAM, disk and none give the same pixels; a disk store is reused, never
read when incomplete or damaged, and keeps memory flat; files decoded per batch survive a file broken after the scan."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgclf.cli.main import main
from imgclf.data.decode import Preprocess
from imgclf.data.loader import TensorImages
from imgclf.data.sources import Split
from imgclf.data.store import DiskRows, FileRows, cache_root
from imgclf.data.tensors import decode_split
from imgclf.errors import UserError

from .conftest import TINY_ARGS


def _files(folder: Path, n: int, size: int = 20, bad: tuple[int, ...] = (3,)) -> Split:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        if i in bad:
            path.write_bytes(b"broken")
        else:
            Image.fromarray(rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return Split(np.arange(n) % 3, paths=paths)


def test_ram_and_disk_hold_the_same_pixels_and_the_disk_store_is_reused(tmp_path, monkeypatch):
    split, pre = _files(tmp_path / "img", 40), Preprocess(3, 16)
    ram = decode_split(split, pre, workers=0, cache="ram")
    disk = decode_split(split, pre, workers=0, cache="disk")
    assert isinstance(disk.x, DiskRows) and "disk store" in disk.where and len(disk.x) == len(ram.x) == 39
    assert torch.equal(disk.x[0:39], ram.x) and torch.equal(disk.y, ram.y) and disk.skipped == ram.skipped
    index = torch.tensor([5, 2, 3, 4, 30, 0])  # any order, runs of neighbours read together
    assert torch.equal(disk.x[index], ram.x[index]) and torch.equal(disk.x[-1], ram.x[-1])
    assert torch.equal(torch.stack(list(disk.x)), ram.x)
    decoded = []
    monkeypatch.setattr(Preprocess, "load", lambda self, path: decoded.append(path))
    again = decode_split(split, pre, workers=0, cache="disk")
    assert decoded == [] and "reused: nothing decoded" in again.where and torch.equal(again.x[0:39], ram.x)
    assert again.skipped == ram.skipped


def test_files_decoded_per_batch_give_the_same_pixels(tmp_path):
    split, pre = _files(tmp_path / "img", 20), Preprocess(3, 16)
    ram = decode_split(split, pre, workers=0, cache="ram")
    none = decode_split(split, pre, workers=0, cache="none")
    assert isinstance(none.x, FileRows) and none.where.startswith("files, decoded per batch")
    assert none.skipped == ram.skipped and torch.equal(none.y, ram.y) and none.paths == ram.paths
    index = torch.tensor([7, 0, 7, 18])
    assert torch.equal(none.x[0:19], ram.x) and torch.equal(none.x[index], ram.x[index])
    assert torch.equal(torch.stack(list(none.x)), ram.x)


def test_a_file_broken_after_the_scan_is_left_out_of_its_batch(tmp_path, capsys):
    split, pre = _files(tmp_path / "img", 6, bad=()), Preprocess(3, 16)
    none = decode_split(split, pre, workers=0, cache="none")
    Path(none.paths[2]).write_bytes(b"gone bad")
    x, y = TensorImages(none).__getitems__([0, 2, 4])
    assert x.shape == (2, 3, 16, 16) and y.tolist() == [none.y[0].item(), none.y[4].item()]
    assert "000.png" not in capsys.readouterr().err
    assert torch.equal(none.x[2], torch.zeros(3, 16, 16, dtype=torch.uint8))  # evaluation: black, and said
    assert "002.png: not an image" in capsys.readouterr().err


def test_full_resolution_crops_for_standard_augmentation(tmp_path):
    split = _files(tmp_path / "img", 4, size=64, bad=())
    none = decode_split(split, Preprocess(3, 16), workers=0, cache="none")
    seen = []
    dataset = TensorImages(none, lambda img: seen.append(tuple(img.shape)) or img[:, :16, :16], full_res=True)
    x, _ = dataset.__getitems__([0, 1])
    assert seen == [(3, 64, 68)] * 2 and x.shape == (2, 3, 16, 16)  # the photo itself, not its 16 px crop


def test_a_store_that_does_not_match_its_description_is_rebuilt(tmp_path, capsys):
    split, pre = _files(tmp_path / "img", 12, bad=()), Preprocess(3, 16)
    first = decode_split(split, pre, workers=0, cache="disk")
    store = first.x.path
    with store.open("r+b") as f:  # damaged on disk: cut short
        f.truncate(store.stat().st_size // 2)
    del first
    rebuilt = decode_split(split, pre, workers=0, cache="disk")
    assert "damaged or incomplete; decoding again" in capsys.readouterr().err
    assert len(rebuilt.x) == 12 and store.stat().st_size == 12 * 3 * 16 * 16


def test_a_store_left_half_written_is_never_read(tmp_path):
    split, pre = _files(tmp_path / "img", 12, bad=()), Preprocess(3, 16)
    ram = decode_split(split, pre, workers=0, cache="ram")
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    from imgclf.data.store import store_key

    key = store_key(split.paths, pre)
    (root / f"{key}.u8.tmp-1").write_bytes(b"\xff" * 100)  # what a run killed while decoding leaves
    (root / f"{key}.u8").write_bytes(b"\xff" * (12 * 768))  # data without its description: not complete
    disk = decode_split(split, pre, workers=0, cache="disk")
    assert "reused" not in disk.where and torch.equal(disk.x[0:12], ram.x)


KILLED = """
import sys, time
from pathlib import Path
from imgclf.data.tensors import decode_split
from imgclf.data.decode import Preprocess
from imgclf.data.sources import Split
slow = Preprocess.load
def load(self, path):
    time.sleep(0.05)
    return slow(self, path)
Preprocess.load = load
paths = sorted(Path(sys.argv[1]).glob('*.png'))
decode_split(Split([0] * len(paths), paths=paths), Preprocess(3, 16), workers=0, cache='disk')
"""


def test_a_run_killed_while_decoding_leaves_nothing_read_as_data(tmp_path):
    split = _files(tmp_path / "img", 120, bad=())
    root = cache_root()
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path / "img")])
    deadline = time.time() + 60
    while time.time() < deadline and not (list(root.glob("*.u8.tmp-*")) and
                                          list(root.glob("*.u8.tmp-*"))[0].stat().st_size > 768 * 10):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(root.glob("*.u8.tmp-*")) and not list(root.glob("*.json"))  # killed halfway, never described
    ram = decode_split(split, Preprocess(3, 16), workers=0, cache="ram")
    disk = decode_split(split, Preprocess(3, 16), workers=0, cache="disk")
    assert "reused" not in disk.where and torch.equal(disk.x[0:120], ram.x)
    assert not list(root.glob("*.u8.tmp-*"))  # the dead run's half-written file is cleared away


def test_an_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("IMGCLF_CACHE_DIR", str(blocker))
    with pytest.raises(UserError, match="cannot write the decoded-image store.*IMGCLF_CACHE_DIR"):
        decode_split(_files(tmp_path / "img", 4, bad=()), Preprocess(3, 16), workers=0, cache="disk")


def test_training_from_the_disk_store_and_again_without_decoding(image_folder, run_cwd):
    for name in ("one", "two"):
        assert main(["train", str(image_folder), "--epochs", "2", "--name", name, "--cache", "disk",
                     *TINY_ARGS]) == 0
    first, second = ((run_cwd / "runs" / n / "train.log").read_text() for n in ("one", "two"))
    assert "train: decoded images in disk store" in first and "reused: nothing decoded" in second
    losses = [[row.split(",")[1] for row in (run_cwd / "runs" / n / "metrics.csv").read_text().splitlines()[1:]]
              for n in ("one", "two")]
    assert losses[0] == losses[1]  # decoding or not leaves the random stream of training alone
    assert (run_cwd / "runs" / "one" / "best.safetensors").exists()


def test_training_on_files_decoded_per_batch(image_folder, run_cwd):
    assert main(["train", str(image_folder), "--epochs", "2", "--name", "none", "--cache", "none",
                 "--augment", "standard", *TINY_ARGS[:-3], "--workers", "1", "--no-plots"]) == 0
    log = (run_cwd / "runs" / "none" / "train.log").read_text()
    assert "train: decoded images in files, decoded per batch (--cache none)" in log
    rows = (run_cwd / "runs" / "none" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and (run_cwd / "runs" / "none" / "best.safetensors").exists()


# Decode N 224 px photos into the store asked for, read every batch once, print the peak RSS in KB (VmHWM: since
# exec, unlike ru_maxrss, which counts the memory of the forking parent too).
MEASURE = """
import sys, torch
from pathlib import Path
from imgclf.data.tensors import decode_split
from imgclf.data.decode import Preprocess
from imgclf.data.sources import Split
paths = sorted(Path(sys.argv[1]).glob('*.png'))
images = decode_split(Split([0] * len(paths), paths=paths), Preprocess(3, 224), workers=0, cache=sys.argv[2])
for start in range(0, len(images), 32):
    assert images.x[torch.arange(start, min(start + 32, len(images)))].shape[0] > 0
print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])
"""


def test_the_disk_store_keeps_memory_flat(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    for i in range(400):  # 400 x 147 KB = 59 MB decoded
        Image.fromarray(np.roll(small, i, axis=0)).resize((256, 224)).save(folder / f"{i:04d}.png")
    peak = {}
    for cache in ("ram", "disk"):
        out = subprocess.run([sys.executable, "-c", MEASURE, str(folder), cache], capture_output=True, text=True,
                             check=True)
        peak[cache] = int(out.stdout.split()[-1])
    assert peak["ram"] - peak["disk"] > 40_000, peak  # KB: the decoded images are not in the process


def test_auto_picks_ram_then_disk_then_none_and_says_why(monkeypatch):
    from imgclf.data import store

    pre = Preprocess(3, 224)  # 150,528 bytes an image
    monkeypatch.setattr(store, "available_memory", lambda: 4_000_000_000)
    monkeypatch.setattr(store, "free_space", lambda folder: 10_000_000_000)
    assert store.choose("auto", 1_000, pre)[0] == "ram"  # 0.15 GB, under a quarter of 4 GB
    where, why = store.choose("auto", 20_000, pre)  # 3.0 GB
    assert where == "disk" and "over a quarter of the 4.0 GB" in why
    where, why = store.choose("auto", 100_000, pre)  # 15 GB: more than the disk has
    assert where == "none" and "more than the 10.0 GB free" in why and "decoded again every epoch" in why
    assert store.choose("ram", 100_000, pre) == ("ram", "--cache ram")
