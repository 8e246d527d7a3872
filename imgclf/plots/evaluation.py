"""Evaluation figures: confusion matrices, per-class precision/recall, the most-confused pairs, top losses."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .style import grid_shape, hide_unused, label_fontsize, save, show_image, subplots, to_hwc

# Cell numbers are printed up to this many classes; beyond, colour alone.
NUMBERS_UP_TO = 30


def plot_confusion_matrix(matrix: np.ndarray, classes: list[str], path: Path, normalized: bool = False) -> Path:
    """Rows are true classes, columns predictions; coloured by the share of the true class, so small classes stay
    visible. ``normalized`` prints those shares instead of counts."""
    n = len(classes)
    side = min(4 + 0.3 * n, 26)
    fig, axes = subplots(1, 1, (side + 1.5, side))
    ax = axes[0, 0]
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    size = label_fontsize(n)
    ax.set_xticks(range(n), classes, rotation=90 if n > 8 else 45, ha="center" if n > 8 else "right", fontsize=size)
    ax.set_yticks(range(n), classes, fontsize=size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix{', normalised by true class' if normalized else ''} ({int(matrix.sum())} images)")
    if n <= NUMBERS_UP_TO:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                text = f"{rates[i, j]:.2f}" if normalized else str(count)
                ax.text(j, i, text, ha="center", va="center", fontsize=7 if normalized else 8,
                        color="white" if rates[i, j] > 0.5 else "black")
    return save(fig, path)


def plot_per_class(precision: np.ndarray, recall: np.ndarray, classes: list[str], path: Path, what: str = "class"
                   ) -> Path:
    """Precision and recall per class (or per ``what``: label) as paired horizontal bars, worst recall first."""
    n = len(classes)
    order = np.argsort(recall, kind="stable")
    fig, axes = subplots(1, 1, (9, max(3.0, 0.6 + 0.26 * n)))
    ax = axes[0, 0]
    pos = np.arange(n)
    ax.barh(pos - 0.2, precision[order], height=0.4, label="precision")
    ax.barh(pos + 0.2, recall[order], height=0.4, label="recall")
    ax.set_yticks(pos, [classes[i] for i in order], fontsize=label_fontsize(n))
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score")
    ax.set_title(f"precision and recall per {what} (lowest recall first)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)


def plot_most_confused(pairs: list[tuple[str, str, int, float]], path: Path) -> Path:
    """The (true, predicted) pairs with the most mistakes, as bars labelled 'true -> predicted'."""
    fig, axes = subplots(1, 1, (9, max(2.5, 0.6 + 0.3 * len(pairs))))
    ax = axes[0, 0]
    pos = np.arange(len(pairs))
    ax.barh(pos, [p[2] for p in pairs], color="tab:red")
    ax.set_yticks(pos, [f"{t} → {p}" for t, p, _, _ in pairs], fontsize=label_fontsize(len(pairs)) + 1)
    for i, (_, _, count, share) in enumerate(pairs):
        ax.text(count, i, f" {count} ({share:.0%} of the true class)", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_title("most-confused pairs (true → predicted)")
    ax.margins(x=0.35)
    return save(fig, path)


def plot_top_losses(images: torch.Tensor, titles: list[str], path: Path,
                    title: str = "top losses: predicted / actual / probability of the prediction / loss") -> Path:
    """A gallery of the images the model gets most wrong, each titled predicted / actual / probability / loss."""
    rows, cols = grid_shape(len(titles), min(4, max(1, len(titles))))
    fig, axes = subplots(rows, cols, (3.0 * cols, 3.3 * rows))
    for ax, image, title in zip(axes.flat, to_hwc(images), titles):
        show_image(ax, image, title, fontsize=8)
    hide_unused(axes, len(titles))
    fig.suptitle(title)
    return save(fig, path)


def plot_roc_pr(y_true: np.ndarray, scores: np.ndarray, positive: str, path: Path,
                threshold: float | None = None) -> Path:
    """A two-class model's ROC curve and precision-recall curve for the ``positive`` class (scikit-learn), the
    decision threshold marked on both."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    fig, axes = subplots(1, 2, (11, 4.6))
    fpr, tpr, roc_t = roc_curve(y_true, scores)
    precision, recall, pr_t = precision_recall_curve(y_true, scores)
    roc_ax, pr_ax = axes[0]
    roc_ax.plot(fpr, tpr, label=f"AUC {auc(fpr, tpr):.3f}")
    roc_ax.plot([0, 1], [0, 1], ":", color="grey")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, positive: {positive}")
    pr_ax.plot(recall, precision)
    pr_ax.set(xlabel="recall", ylabel="precision", title=f"precision-recall, positive: {positive}")
    for t, name in ((threshold, "tuned"), (0.5, "0.5")):
        if t is None:
            continue
        i = min(int(np.searchsorted(-roc_t, -t)), len(fpr) - 1)  # roc thresholds fall
        j = min(int(np.searchsorted(pr_t, t)), len(recall) - 1)  # pr thresholds rise
        roc_ax.plot(fpr[i], tpr[i], "o", label=f"threshold {name} ({t:.2f})")
        pr_ax.plot(recall[j], precision[j], "o", label=f"threshold {name} ({t:.2f})")
    roc_ax.legend(loc="lower right")
    pr_ax.legend(loc="lower left")
    return save(fig, path)


def plot_pr_curves(y_true: np.ndarray, probs: np.ndarray, classes: list[str], labels: list[int],
                   thresholds: np.ndarray, path: Path) -> Path:
    """Multi-label: the precision-recall curves of ``labels`` (the worst ones), each label's threshold marked."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, axes = subplots(1, 1, (7.5, 5.5))
    ax = axes[0, 0]
    for j in labels:
        precision, recall, cut = precision_recall_curve(y_true[:, j], probs[:, j])
        ap = average_precision_score(y_true[:, j], probs[:, j])
        line, = ax.plot(recall, precision, label=f"{classes[j]} (AP {ap:.3f})")
        at = min(int(np.searchsorted(cut, thresholds[j])), len(recall) - 1)  # pr thresholds rise
        ax.plot(recall[at], precision[at], "o", color=line.get_color())
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
           title=f"precision-recall of the {len(labels)} labels with the lowest average precision (dot: threshold)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    return save(fig, path)
