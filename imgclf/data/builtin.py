"""Well-known datasets by name, read through torchvision's loaders, plus the bundled Fashion-MNIST sample.

Online, torchvision downloads what is missing. Offline, the error says which files to put where, in seconds.
"""
from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from ..downloads import host_unreachable
from ..errors import UserError
from .dataset import Source, Split

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
BUILTIN = ("fashion-mnist", "mnist", "cifar10", "food101", "fashion-mnist-sample")
DEFAULT_ROOT = Path("~/.cache/imgclf/datasets")
T = TypeVar("T")


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


def _fetch(name: str, root: Path, where: str, urls: list[str], fetch: Callable[[], T]) -> T:
    """``fetch()``, torchvision's download of ``name``, after one quick look that a host of ``urls`` answers:
    offline, the error comes in seconds rather than after torchvision's retries."""
    reasons = []
    for url in urls:
        if (why := host_unreachable(url)) is None:
            break
        reasons.append(why)
    else:
        raise UserError(f"{name} is not under {root} and cannot be downloaded here ({reasons[0]}); put its files in "
                        f"{where} or pass --data-root to the folder that holds them")
    try:
        return fetch()
    except Exception as exc:  # noqa: BLE001 - any network failure means "offline": say where the files go
        raise UserError(f"{name} is not under {root} and could not be downloaded ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'offline?'}); put its files in {where} "
                        f"or pass --data-root to the folder that holds them") from None


def _mnist_like(name: str, root: Path) -> Source:
    folder, classes = (("FashionMNIST", FASHION_CLASSES) if name == "fashion-mnist" else
                       ("MNIST", [str(i) for i in range(10)]))
    files = _find_idx(root, folder)
    if files is None:  # torchvision (3 s to import) only to download: the files on disk are read with numpy
        import torchvision

        cls = torchvision.datasets.FashionMNIST if name == "fashion-mnist" else torchvision.datasets.MNIST
        where = f"{root / folder / 'raw'} ({', '.join(f + '.gz' for f in IDX_FILES)})"
        _fetch(name, root, where, cls.mirrors, lambda: [cls(str(root), train=t, download=True) for t in (True, False)])
        files = _find_idx(root, folder)
    splits = {
        "train": Split(_read_idx(files[IDX_FILES[1]]).astype(np.int64), pixels=_read_idx(files[IDX_FILES[0]])),
        "test": Split(_read_idx(files[IDX_FILES[3]]).astype(np.int64), pixels=_read_idx(files[IDX_FILES[2]])),
    }
    # Digits change meaning when mirrored; clothes do not.
    return Source(name, classes, splits, flip_ok=name == "fashion-mnist")


def _read_or_fetch(name: str, root: Path, where: str, url: str, read: Callable[[bool], list]) -> list:
    """``read(download=False)``, else torchvision's download after a quick look at its host."""
    try:
        return read(False)
    except (RuntimeError, OSError):  # torchvision: "Dataset not found or corrupted"
        return _fetch(name, root, where, [url], lambda: read(True))


def _cifar10(root: Path) -> Source:
    import torchvision

    cls = torchvision.datasets.CIFAR10
    train, test = _read_or_fetch("cifar10", root, f"{root}/cifar-10-batches-py/ (from cifar-10-python.tar.gz)",
                                 cls.url, lambda get: [cls(str(root), train=t, download=get) for t in (True, False)])
    splits = {split: Split(np.asarray(ds.targets, dtype=np.int64), pixels=ds.data)
              for split, ds in (("train", train), ("test", test))}
    return Source("cifar10", list(train.classes), splits)


def _food101(root: Path) -> Source:
    import torchvision

    cls = torchvision.datasets.Food101
    where = f"{root}/food-101/ (images/ and meta/ from food-101.tar.gz)"
    train, test = _read_or_fetch("food101", root, where, cls._URL,
                                 lambda get: [cls(str(root), split=s, download=get) for s in ("train", "test")])
    splits = {split: Split(np.asarray(ds._labels, dtype=np.int64), paths=list(map(Path, ds._image_files)))
              for split, ds in (("train", train), ("test", test))}
    return Source("food101", list(train.classes), splits)


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
