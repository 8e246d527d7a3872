"""What the data looks like: sample images per class, class counts, and what augmentation does to one image."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .style import grid_shape, hide_unused, label_fontsize, save, show_image, subplots, to_hwc

# Up to this many classes the grid has a row per class; beyond it, one tile per class in a square grid.
ROWS_PER_CLASS_UP_TO = 20


def plot_samples(x: torch.Tensor, y: torch.Tensor, classes: list[str], path: Path, per_class: int = 8,
                 seed: int = 0) -> Path:
    """A grid of random images per class (multi-label: images with each label), labelled with the class name
    (uint8 images N x C x H x W)."""
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    member = (lambda c: labels[:, c] > 0) if labels.ndim == 2 else (lambda c: labels == c)
    picks = []
    for c in range(len(classes)):
        ids = np.flatnonzero(member(c))
        picks.append(rng.choice(ids, min(len(ids), per_class), replace=False) if len(ids) else ids)
    # only the picked images are read (the whole set may be a disk store), then found by their index
    chosen = np.unique(np.concatenate(picks)).astype(np.int64)
    images = dict(zip(chosen.tolist(), to_hwc(x[torch.from_numpy(chosen)]))) if len(chosen) else {}
    if len(classes) <= ROWS_PER_CLASS_UP_TO:
        n_rows, n_cols = len(classes), per_class
        fig, axes = subplots(n_rows, n_cols, (1.2 * n_cols + 1.5, 1.25 * n_rows + 0.6))
        for row, (name, ids) in enumerate(zip(classes, picks)):
            for col in range(n_cols):
                ax = axes[row, col]
                if col < len(ids):
                    show_image(ax, images[ids[col]])
                else:
                    ax.axis("off")
            axes[row, 0].axis("on")
            axes[row, 0].set_xticks([])
            axes[row, 0].set_yticks([])
            axes[row, 0].set_ylabel(f"{name}\n({np.sum(member(row))})", rotation=0, ha="right", va="center",
                                    fontsize=9)
    else:  # too many classes for a row each: one image per class, its name above it
        n_rows, n_cols = grid_shape(len(classes))
        fig, axes = subplots(n_rows, n_cols, (1.3 * n_cols, 1.45 * n_rows))
        for ax, name, ids in zip(axes.flat, classes, picks):
            if len(ids):
                show_image(ax, images[ids[0]], name, fontsize=label_fontsize(len(classes)) + 1)
            else:
                ax.axis("off")
                ax.set_title(f"{name} (none)", fontsize=label_fontsize(len(classes)))
        hide_unused(axes, len(classes))
    fig.suptitle(f"sample training images, {len(classes)} classes")
    return save(fig, path)


def plot_class_counts(counts: dict[str, list[int]], classes: list[str], path: Path) -> Path:
    """Images per class and split as horizontal bars (names stay readable for ~100 classes)."""
    n = len(classes)
    fig, axes = subplots(1, 1, (9, max(3.0, 0.5 + 0.2 * n)))
    ax = axes[0, 0]
    positions = np.arange(n)
    left = np.zeros(n)
    for split, values in counts.items():
        ax.barh(positions, values, left=left, label=f"{split} ({sum(values):,})")
        left += np.asarray(values)
    ax.set_yticks(positions, classes, fontsize=label_fontsize(n))
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_title(f"images per class (largest/smallest = {left.max() / max(left.min(), 1):.1f})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)


def augmented_versions(image: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor], count: int = 15,
                       seed: int = 0) -> torch.Tensor:
    """``image`` and ``count`` versions of it by ``transform`` (N, C, H, W), drawn from the global generator seeded
    with ``seed`` and put back after, so that a preview does not change what training draws next."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([image] + [transform(image) for _ in range(count)])


def plot_versions(versions: torch.Tensor, path: Path, title: str) -> Path:
    """An image (the first) and its augmented versions in a grid of eight columns."""
    rows, cols = grid_shape(len(versions), 8)
    fig, axes = subplots(rows, cols, (1.4 * cols, 1.55 * rows + 0.4))
    for i, (ax, version) in enumerate(zip(axes.flat, to_hwc(versions))):
        show_image(ax, version, "original" if i == 0 else None, color="tab:blue")
    hide_unused(axes, len(versions))
    fig.suptitle(title)
    return save(fig, path)


def plot_augmentation(image: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor] | None, path: Path,
                      title: str, count: int = 15, seed: int = 0) -> Path:
    """One image and ``count`` augmented versions of it, to see whether flips, crops and rotations suit the data."""
    versions = augmented_versions(image, transform, count, seed) if transform is not None else \
        image[None].repeat(count + 1, *[1] * image.dim())
    return plot_versions(versions, path, title)


def plot_data_overview(x: torch.Tensor, y: torch.Tensor, classes: list[str], counts: dict[str, list[int]],
                       versions: torch.Tensor | None, augment: str, folder: Path, seed: int = 0) -> list[Path]:
    """samples.png, class_counts.png and, given an image's augmented ``versions``, augmentation.png in ``folder``.
    Drawing only (the versions are made by the caller): it may run in a thread beside training."""
    written = [plot_samples(x, y, classes, folder / "samples.png", seed=seed),
               plot_class_counts(counts, classes, folder / "class_counts.png")]
    if versions is not None:
        written.append(plot_versions(versions, folder / "augmentation.png",
                                     f"--augment {augment}: one image, {len(versions) - 1} random versions"))
    return written
