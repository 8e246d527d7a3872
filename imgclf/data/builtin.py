"""Well-known datasets by name, read through torchvision's loaders, plus the bundled Fashion-MNIST sample.

Online, torchvision downloads what is missing. Offline, the error says which files to put where.
"""
from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import UserError
from .dataset import Source, Split

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
BUILTIN = ("fashion-mnist", "mnist", "cifar10", "food101", "fashion-mnist-sample")
DEFAULT_ROOT = Path("~/.cache/imgclf/datasets")


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not), the format of MNIST and Fashion-MNIST.

    torchvision's own reader takes only uncompressed files, and the data sets are usually kept gzipped.
    """
    if path.suffix == ".gz":
        with gzip.open(path) as f:
            raw = f.read()
    else:
        raw = path.read_bytes()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(root: Path, folder: str) -> dict[str, Path] | None:
    """The four IDX files under any of the places people keep them, gzipped or not."""
    for where in (root / folder / "raw", root / folder.lower().replace("fashionmnist", "fashion-mnist"), root):
        found = {}
        for stem in IDX_FILES:
            hit = next((p for p in (where / stem, where / f"{stem}.gz") if p.is_file()), None)
            if hit is None:
                break
            found[stem] = hit
        else:
            return found
    return None


def _download_hint(name: str, root: Path, where: str, exc: Exception) -> UserError:
    return UserError(f"{name} is not under {root} and could not be downloaded ({type(exc).__name__}: "
                     f"{str(exc).splitlines()[0] if str(exc) else 'offline?'}); put its files in {where} "
                     f"or pass --data-root to the folder that holds them")


def _mnist_like(name: str, root: Path) -> Source:
    import torchvision

    folder, classes, cls = (("FashionMNIST", FASHION_CLASSES, torchvision.datasets.FashionMNIST)
                            if name == "fashion-mnist" else
                            ("MNIST", [str(i) for i in range(10)], torchvision.datasets.MNIST))
    files = _find_idx(root, folder)
    if files is None:
        try:
            cls(str(root), train=True, download=True)
            cls(str(root), train=False, download=True)
        except Exception as exc:  # noqa: BLE001 - any network failure means "offline": say where the files go
            raise _download_hint(name, root, f"{root / folder / 'raw'} ({', '.join(f + '.gz' for f in IDX_FILES)})",
                                 exc) from None
        files = _find_idx(root, folder)
    splits = {
        "train": Split(_read_idx(files[IDX_FILES[1]]).astype(np.int64), pixels=_read_idx(files[IDX_FILES[0]])),
        "test": Split(_read_idx(files[IDX_FILES[3]]).astype(np.int64), pixels=_read_idx(files[IDX_FILES[2]])),
    }
    # Digits change meaning when mirrored; clothes do not.
    return Source(name, classes, splits, flip_ok=name == "fashion-mnist")


def _cifar10(root: Path) -> Source:
    import torchvision

    splits = {}
    try:
        for split, train in (("train", True), ("test", False)):
            ds = torchvision.datasets.CIFAR10(str(root), train=train, download=True)
            splits[split] = Split(np.asarray(ds.targets, dtype=np.int64), pixels=ds.data)
    except Exception as exc:  # noqa: BLE001
        raise _download_hint("cifar10", root, f"{root}/cifar-10-batches-py/ (from cifar-10-python.tar.gz)",
                             exc) from None
    return Source("cifar10", list(ds.classes), splits)


def _food101(root: Path) -> Source:
    import torchvision

    splits = {}
    try:
        for split in ("train", "test"):
            ds = torchvision.datasets.Food101(str(root), split=split, download=True)
            splits[split] = Split(np.asarray(ds._labels, dtype=np.int64), paths=list(map(Path, ds._image_files)))
    except Exception as exc:  # noqa: BLE001
        raise _download_hint("food101", root, f"{root}/food-101/ (images/ and meta/ from food-101.tar.gz)",
                             exc) from None
    return Source("food101", list(ds.classes), splits)


def _bundled_sample() -> Source:
    """8,000 training and 1,000 test images of Fashion-MNIST shipped with the package (MIT, Zalando Research)."""
    with resources.files("imgclf").joinpath("assets/fashion-mnist-sample.npz").open("rb") as f:
        arrays = dict(np.load(f))
    splits = {"train": Split(arrays["y_train"].astype(np.int64), pixels=arrays["x_train"]),
              "test": Split(arrays["y_test"].astype(np.int64), pixels=arrays["x_test"])}
    return Source("fashion-mnist-sample", FASHION_CLASSES, splits)


def load_builtin(name: str, data_root: str | None) -> Source:
    """A built-in dataset by name, from ``data_root`` (default ``~/.cache/imgclf/datasets``)."""
    root = Path(data_root or DEFAULT_ROOT).expanduser()
    if name == "fashion-mnist-sample":
        return _bundled_sample()
    if data_root is not None and not root.is_dir():
        raise UserError(f"--data-root {data_root}: no such folder")
    if name in ("fashion-mnist", "mnist"):
        return _mnist_like(name, root)
    if name == "cifar10":
        return _cifar10(root)
    return _food101(root)
