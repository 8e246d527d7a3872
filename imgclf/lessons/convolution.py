"""The lessons on the user's own images: what the data looks like, what a filter does, what pooling does (the 1x1
convolution's arithmetic is in ``bottleneck.py``). Filters and pooling are torch's own (``conv2d``, pooling), so
what the lesson shows is exactly what a CNN layer computes (a cross-correlation, as in every deep-learning
library)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..config import TrainConfig
from ..data.decode import BadImage, Preprocess, open_image, to_mode
from ..data.prepare import input_shape
from ..data.sources import load_source
from ..data.tensors import decode_split
from ..data.transforms import augmentation
from ..errors import UserError
from ..metrics.classification import label_counts
from ..plots import plot_data_overview
from ..plots.data import augmented_versions
from ..plots.style import save, subplots

KERNELS = {
    "horizontal": [[1, 1, 1], [0, 0, 0], [-1, -1, -1]],  # responds to horizontal lines and edges
    "vertical": [[1, 0, -1], [1, 0, -1], [1, 0, -1]],    # responds to vertical lines and edges
    "sobel": [[1, 0, -1], [2, 0, -2], [1, 0, -1]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "blur": [[1 / 9] * 3] * 3,
}


def parse_kernel(spec: str) -> np.ndarray:
    """A named kernel, or rows of numbers: ``"1,0,-1;2,0,-2;1,0,-1"``."""
    if spec.lower() in KERNELS:
        return np.array(KERNELS[spec.lower()], dtype=np.float32)
    try:
        rows = [[float(v) for v in row.split(",")] for row in spec.split(";")]
    except ValueError:
        rows = []
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        raise UserError(f"--kernel {spec!r}: use one of {', '.join(KERNELS)} or rows of numbers such as "
                        f"'1,0,-1;2,0,-2;1,0,-1' (rows separated by ';', all the same length)")
    return np.array(rows, dtype=np.float32)


def load_gray(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """An image as a float array in [0, 1], gray, at its own size or with its longer side shrunk to
    ``max_side``."""
    try:
        im = to_mode(open_image(path), 1)
    except BadImage as exc:
        raise UserError(f"{path}: {exc}") from None
    if max_side is not None:
        im.thumbnail((max_side, max_side))
    return np.asarray(im, dtype=np.float32) / 255.0


def output_size(n: int, kernel: int, stride: int, padding: int) -> int:
    """The textbook formula: floor((n + 2p - k) / s) + 1."""
    return (n + 2 * padding - kernel) // stride + 1


def convolve(image: np.ndarray, kernel: np.ndarray, stride: int = 1, padding: str = "valid") -> np.ndarray:
    """One convolution layer's output for a gray image: ``valid`` (no padding) or ``same`` (zeros around)."""
    if stride < 1:
        raise UserError(f"--stride must be at least 1, got {stride}")
    kh, kw = kernel.shape
    pad = (kh // 2, kw // 2) if padding == "same" else (0, 0)
    if image.shape[0] + 2 * pad[0] < kh or image.shape[1] + 2 * pad[1] < kw:
        raise UserError(f"the kernel ({kh}x{kw}) is larger than the image ({image.shape[0]}x{image.shape[1]})")
    out = F.conv2d(torch.from_numpy(image)[None, None], torch.from_numpy(kernel)[None, None], stride=stride,
                   padding=pad)
    return out[0, 0].numpy()


def pool(image: np.ndarray, size: int = 2, stride: int | None = None, kind: str = "max") -> np.ndarray:
    """Max or average pooling of a gray image."""
    if size < 1 or (stride is not None and stride < 1):
        raise UserError("--size and --stride must be at least 1")
    if min(image.shape) < size:
        raise UserError(f"the pooling window ({size}) is larger than the image {image.shape}")
    fn = F.max_pool2d if kind == "max" else F.avg_pool2d
    return fn(torch.from_numpy(image)[None, None], size, stride or size)[0, 0].numpy()


def _finish(fig, axes, title: str, path: Path) -> None:
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    save(fig, path)


def plot_kernel(image: np.ndarray, kernel: np.ndarray, output: np.ndarray, path: Path, title: str) -> None:
    """Input, kernel (with its numbers) and output side by side."""
    fig, axes = subplots(1, 3, (12, 4.2), gridspec_kw={"width_ratios": [4, 2, 4]})
    axes = axes[0]
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"input {image.shape[0]}x{image.shape[1]}")
    axes[1].imshow(kernel, cmap="coolwarm", vmin=-np.abs(kernel).max(), vmax=np.abs(kernel).max())
    for (r, c), v in np.ndenumerate(kernel):
        axes[1].text(c, r, f"{v:g}" if abs(v - round(v)) < 1e-6 else f"{v:.2f}", ha="center", va="center")
    axes[1].set_title(f"kernel {kernel.shape[0]}x{kernel.shape[1]}")
    shown = axes[2].imshow(output, cmap="gray")
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    axes[2].set_title(f"output {output.shape[0]}x{output.shape[1]}")
    _finish(fig, axes, title, path)


def plot_pair(before: np.ndarray, after: np.ndarray, path: Path, title: str) -> None:
    """Before and after, each with its shape."""
    fig, axes = subplots(1, 2, (9, 4.5))
    axes = axes[0]
    for ax, img, name in ((axes[0], before, "before"), (axes[1], after, "after")):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{name}: {img.shape[0]}x{img.shape[1]}")
    _finish(fig, axes, title, path)


# The pictures data_overview writes, by file name.
DATA_FIGURES = ("samples.png", "class_counts.png", "augmentation.png")


def data_overview(data: str, folder: Path, data_root: str | None = None, img_size: int | None = None,
                  channels: int | None = None, augment: str = "light", flip: bool | None = None, per_class: int = 8,
                  seed: int = 0) -> list[Path]:
    """Sample images per class, class counts per split and an augmentation preview of a data set, before any
    training: only the sampled images are decoded, at the size training would use."""
    source = load_source(data, data_root)
    channels, size = input_shape(source, img_size, channels, quiet=True)
    train = source.splits["train"]
    rng = np.random.default_rng(seed)
    member = (lambda c: train.labels[:, c] > 0) if source.multilabel else (lambda c: train.labels == c)
    picks = [rng.choice(ids, min(len(ids), per_class), replace=False)
             for c in range(len(source.classes)) if len(ids := np.flatnonzero(member(c)))]
    sample = decode_split(train.subset(np.unique(np.concatenate(picks))),  # one image may show several labels
                          Preprocess.of(TrainConfig(channels=channels, img_size=size)), quiet=True)
    if len(sample) == 0:
        raise UserError(f"{data}: none of the sampled images could be read; run imgclf check {data}")
    counts = {name: label_counts(split.labels, len(source.classes)) for name, split in source.splits.items()}
    flip = source.flip_ok if flip is None else flip
    label = f"{augment}{'' if flip else ' --no-flip'}"
    transform = augmentation(augment, size, channels, flip)
    versions = augmented_versions(sample.x[0], transform, seed=seed) if transform is not None else None
    return plot_data_overview(sample.x, sample.y, source.classes, counts, versions, label, folder, seed)
