"""Small generated data sets: every test makes its own images, nothing is downloaded. Also a gallery of the files
real image folders contain: broken ones, odd-but-valid ones, and things that are not images at all."""
from __future__ import annotations

import io
import os
import shutil
import struct
import warnings
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from imgclf.training.trainer import Trainer

# Under pytest-xdist (make test runs 2 workers on CI's 2 cores) each worker computes on one thread: two workers of
# two OpenMP threads each on two cores spin against each other (a test of 2.6 s alone took 22 s in the suite).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)

# Three classes a tiny CNN separates in a couple of epochs: a bright square, a dark square, a vertical bar.
CLASSES = ("bar", "bright", "dark")


def make_image(kind: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    img = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
    if kind == "bright":
        img[3:13, 3:13] = 230
    elif kind == "dark":
        img[:] = 200
        img[3:13, 3:13] = 20
    else:
        img[:, 6:10] = 250
    return img


def write_class_folders(root: Path, per_class: int = 12, seed: int = 0, classes=CLASSES, ext: str = ".png") -> Path:
    rng = np.random.default_rng(seed)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        kind = name if name in CLASSES else CLASSES[classes.index(name) % 3]
        for i in range(per_class):
            Image.fromarray(make_image(kind, rng)).save(folder / f"{i:03d}{ext}")
    return root


def write_photos_of_two_sizes(root: Path, per_class: int = 12) -> Path:
    """Class folders of the shape images enlarged to 40x30 and 27x45 (every other file): photos larger than a
    16 px model's input, of two sizes, for what takes whole photos (raw-input exports)."""
    small = write_class_folders(root / "small", per_class)
    data = root / "data"
    for i, path in enumerate(sorted(small.rglob("*.png"))):
        out = data / path.parent.name / f"{path.stem}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).resize((40, 30) if i % 2 else (27, 45), Image.Resampling.BILINEAR).save(out)
    return data


# Multi-label: each image shows 1 to 3 coloured bars, one label per bar present.
BARS = ("blue", "green", "red")


def make_bars(present: list[str], rng: np.random.Generator, size: int = 16) -> np.ndarray:
    img = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
    if "red" in present:
        img[2:5, :, 0] = 240  # a red bar across the top
    if "green" in present:
        img[:, 10:13, 1] = 240  # a green bar down the right
    if "blue" in present:
        img[11:14, :, 2] = 240  # a blue bar across the bottom
    return img


def write_multilabel_csv(root: Path, n: int = 160, seed: int = 0, layout: str = "labels", test: int = 0,
                         separator: str = "|") -> Path:
    """``root/labels.csv`` over ``n`` (+ ``test``) bar images: a ``labels`` column (``red|blue``) or, with
    ``layout="columns"``, one 0/1 column per bar; a ``split`` column when there are test rows."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n + test):
        present = [b for b in BARS if rng.random() < 0.5] or [BARS[i % 3]]
        name = f"img{i:04d}.png"
        Image.fromarray(make_bars(present, rng)).save(root / name)
        split = "test" if i >= n else "train"
        if layout == "columns":
            rows.append([name, *(int(b in present) for b in BARS), split])
        else:
            rows.append([name, separator.join(present), split])
    header = ["path", *BARS, "split"] if layout == "columns" else ["path", "labels", "split"]
    lines = [",".join(header if test else header[:-1])]
    lines += [",".join(map(str, r if test else r[:-1])) for r in rows]
    (root / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "labels.csv"


@pytest.fixture(autouse=True)
def feature_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Feature caches go to the test's own folder, never to the user's ~/.cache."""
    monkeypatch.setenv("IMGCLF_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "features"


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_class_folders(tmp_path / "shapes")


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    root = tmp_path / "splits"
    write_class_folders(root / "train", 12, seed=1)
    write_class_folders(root / "val", 4, seed=2)
    write_class_folders(root / "test", 5, seed=3)
    return root


@pytest.fixture
def run_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run directories land in tmp_path/runs."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# Figures and the report are tested on their own (test_plots, test_report); the other tests skip drawing them.
TINY_ARGS = ["--model", "cnn:8-m-16-m-fc16", "--batch-size", "8", "--quiet", "--workers", "0", "--no-plots"]
TINY = dict(model="cnn:8-m-16-m-fc16", batch_size=8, quiet=True, workers=0, lr=0.01, plots=False)


# ---- the gallery: ``EXPECTED`` says what the tool must make of each file ----------------------------------------
def _rgb(seed: int, size: tuple[int, int] = (24, 20)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (a few bytes on disk, gigapixels once decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _save(im: Image.Image, path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kwargs)


# file name -> (status the doctor reports, a word its reason or note contains)
EXPECTED = {
    "empty.jpg": ("unreadable", "empty file"),
    "truncated.jpg": ("unreadable", "truncated"),
    "text.png": ("unreadable", "not an image"),
    "bomb.png": ("unreadable", "decompression bomb"),
    "cmyk.jpg": ("converted", "CMYK"),
    "sixteen.png": ("converted", "16-bit"),
    "palette.png": ("converted", "transparency"),
    "la.png": ("converted", "transparency"),
    "rotated.jpg": ("converted", "orientation 6"),
    "dot.png": ("converted", "tiny"),
    "animated.gif": ("converted", "animated"),
    "photo.webp": ("ok", ""),
    "photo.bmp": ("ok", ""),
    "photo.tiff": ("ok", ""),
    "UPPER.JPG": ("ok", ""),
    ".DS_Store": ("ignored", "hidden"),
    "notes.txt": ("ignored", "not an image"),
}


def write_gallery(root: Path, plain_per_class: int = 8) -> Path:
    """root/train/{cat,dog}/ with plain images, the gallery in train/cat, and root/test/ with one leaked copy."""
    for split, count, offset in (("train", plain_per_class, 0), ("test", 3, 300)):
        for c, name in enumerate(("cat", "dog")):
            for i in range(count):
                _save(_rgb(offset + 100 * c + i), root / split / name / f"plain{i}.png")
    cat = root / "train" / "cat"
    (cat / "empty.jpg").write_bytes(b"")
    jpeg = io.BytesIO()
    _rgb(501, (64, 48)).save(jpeg, "JPEG", quality=90)
    (cat / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (cat / "text.png").write_text("this is not a picture\n")
    (cat / "bomb.png").write_bytes(_png_claiming(40000, 40000))
    _save(_rgb(502).convert("CMYK"), cat / "cmyk.jpg")
    _save(Image.fromarray((np.arange(24 * 20, dtype=np.uint16).reshape(20, 24) * 130)), cat / "sixteen.png")
    palette = _rgb(503).convert("P")
    _save(palette, cat / "palette.png", transparency=0)
    _save(_rgb(504).convert("LA"), cat / "la.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(_rgb(505, (30, 20)), cat / "rotated.jpg", exif=exif)
    _save(Image.new("RGB", (1, 1), (200, 10, 10)), cat / "dot.png")
    frames = [_rgb(506 + k) for k in range(3)]
    _save(frames[0], cat / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    _save(_rgb(509), cat / "photo.webp", lossless=True)
    _save(_rgb(510), cat / "photo.bmp")
    _save(_rgb(511), cat / "photo.tiff")
    _save(_rgb(512), cat / "UPPER.JPG", format="JPEG")
    (cat / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (cat / "notes.txt").write_text("scraped from the web\n")
    # the same picture in train and test: leakage
    (root / "test" / "dog" / "leaked.png").write_bytes((root / "train" / "dog" / "plain0.png").read_bytes())
    return root


def headless_chrome(what: str):
    """Debian's headless Chromium driven by Selenium, its console log kept; without Chromium a loud skip that says
    the browser test of ``what`` did not run."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        message = (f"CHROMIUM NOT FOUND: the browser test of {what} did NOT run. Install Debian's chromium and "
                   "chromium-driver (make test tries apt-get install chromium chromium-driver).")
        warnings.warn(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(chromedriver), options=options)


class FakeTrainer(SimpleNamespace):
    """Just what callbacks touch: an optimizer, a model, stop_training, log, save_weights."""

    def __init__(self):
        model = torch.nn.Linear(2, 2)
        super().__init__(model=model, full_model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0), stop_training=False,
                         start_epoch=0, messages=[], saved=[])

    def log(self, message):
        self.messages.append(message)

    def epoch_weights(self):
        return self.full_model.state_dict()

    def save_weights(self, path, metadata=None):
        self.saved.append(dict(metadata))
        Trainer.save_weights(self, path, metadata)


def assert_picture(path, min_w=300, min_h=150):
    """A readable PNG, big enough, with real content (many colours, not one flat tone)."""
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width >= min_w and im.height >= min_h, im.size
        pixels = np.asarray(im.convert("RGB")).astype(np.uint32)
    assert pixels.std() > 10
    colours = pixels[..., 0] << 16 | pixels[..., 1] << 8 | pixels[..., 2]
    assert len(np.unique(colours)) > 20
