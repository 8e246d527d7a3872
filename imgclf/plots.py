"""Plots written into the run directory (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(rows: list[dict[str, float]], path: Path, monitor: str = "val_acc") -> Path:
    """Loss and accuracy per epoch, train vs validation, with the best epoch marked."""
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "acc")):
        ax.plot(epochs, [r[f"train_{metric}"] for r in rows], "o-", label="train")
        if all(f"val_{metric}" in r for r in rows):
            ax.plot(epochs, [r[f"val_{metric}"] for r in rows], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if metric == "acc" else "loss")
        ax.set_title("accuracy" if metric == "acc" else "loss")
        ax.grid(alpha=0.3)
    if rows and all(monitor in r for r in rows):
        values = [r[monitor] for r in rows]
        best = int(np.argmax(values) if monitor.endswith("acc") else np.argmin(values))
        for ax in axes:
            ax.axvline(epochs[best], color="gray", linestyle="--", label=f"best ({monitor}) epoch {epochs[best]}")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion_matrix(matrix: np.ndarray, classes: list[str], path: Path) -> Path:
    """Counts coloured by row-normalised rate, so small classes stay readable; numbers shown up to 30 classes."""
    n = len(classes)
    size = min(4 + 0.45 * n, 40)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(n), classes, rotation=90 if n > 8 else 45, ha="center" if n > 8 else "right",
                  fontsize=max(5, 10 - n // 15))
    ax.set_yticks(range(n), classes, fontsize=max(5, 10 - n // 15))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix ({int(matrix.sum())} images)")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
