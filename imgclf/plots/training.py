"""Training curves: loss, accuracy and learning rate per epoch, the best epoch and any over-fitting marked."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.ticker import MaxNLocator

from ..metrics.diagnose import diagnose
from .style import label_fontsize, save, subplots

if TYPE_CHECKING:
    from ..config import TrainConfig


def plot_curves(rows: list[dict[str, float]], path: Path, monitor: str = "val_acc", kept: int | None = None,
                cfg: TrainConfig | None = None, n_val: int | None = None) -> Path:
    """Loss and accuracy (train vs validation) and the learning rate per epoch, with the kept (best) epoch marked
    and the epochs after over-fitting set in shaded; see :func:`~imgclf.metrics.diagnose.diagnose` for ``kept``,
    ``cfg`` and ``n_val``."""
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = subplots(1, 3, (15, 4.2))
    axes = axes[0]
    for ax, metric, name in ((axes[0], "loss", "loss"), (axes[1], "acc", "accuracy")):
        ax.plot(epochs, [r[f"train_{metric}"] for r in rows], "o-", ms=3, label="train")
        if rows and all(f"val_{metric}" in r for r in rows):
            ax.plot(epochs, [r[f"val_{metric}"] for r in rows], "o-", ms=3, label="validation")
        ax.set_title(name)
        ax.set_ylabel(name)
    if rows and all("val_map" in r for r in rows):  # multi-label: accuracy is binary accuracy; mAP beside it
        axes[1].plot(epochs, [r["val_map"] for r in rows], "s-", ms=3, label="validation mAP")
        axes[1].set_title("binary accuracy and mAP")
    if rows and all("lr" in r for r in rows):
        axes[2].plot(epochs, [r["lr"] for r in rows], "o-", ms=3, color="tab:green", label="learning rate")
        axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    axes[2].set_title("learning rate (end of epoch)")
    axes[2].set_ylabel("learning rate")
    found = diagnose(rows, monitor, kept, cfg, n_val)
    if found.best_epoch is not None:
        for ax in axes:
            ax.axvline(found.best_epoch, color="gray", linestyle="--", label=f"kept (best {monitor}): epoch "
                                                                             f"{found.best_epoch}")
    if found.verdict == "over-fitting" and found.onset is not None:
        for ax in axes[:2]:
            ax.axvspan(found.onset - 0.5, epochs[-1] + 0.5, color="tab:red", alpha=0.08,
                       label=f"over-fitting from epoch {found.onset}")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, path)


def plot_comparison(names: list[str], histories: list[list[dict[str, float]]],
                    per_class: dict[str, list[float | None]], path: Path) -> Path:
    """Several runs on the same axes: validation loss and accuracy per epoch (training dotted) and, given
    ``per_class`` (each class's accuracy in each run), grouped bars of it."""
    fig, axes = subplots(1, 3 if per_class else 2, (16 if per_class else 11, 4.2))
    axes = axes[0]
    for name, rows in zip(names, histories):
        epochs = [int(r["epoch"]) for r in rows]
        for ax, key in zip(axes, ("loss", "acc")):
            line, = ax.plot(epochs, [r.get(f"val_{key}", float("nan")) for r in rows], "o-", ms=3, label=name)
            ax.plot(epochs, [r.get(f"train_{key}", float("nan")) for r in rows], ":", color=line.get_color())
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.set(title=f"validation {key} (dotted: training)", xlabel="epoch", ylabel=key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if per_class:
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            axes[2].bar([j + i * width for j in range(len(per_class))], [v[i] or 0 for v in per_class.values()],
                        width, label=name)
        axes[2].set_xticks([j + 0.4 - width / 2 for j in range(len(per_class))], list(per_class), rotation=60,
                           ha="right", fontsize=label_fontsize(len(per_class)))
        axes[2].set(title="accuracy per class (recall)", ylim=(0, 1.05))
        axes[2].legend(fontsize=8)
    return save(fig, path, dpi=110)
