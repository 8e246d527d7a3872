"""Small generated data sets: every test makes its own images, nothing is downloaded."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


TINY_ARGS = ["--model", "cnn:8-m-16-m-fc16", "--batch-size", "8", "--quiet", "--workers", "0"]
TINY = dict(model="cnn:8-m-16-m-fc16", batch_size=8, quiet=True, workers=0, lr=0.01)
