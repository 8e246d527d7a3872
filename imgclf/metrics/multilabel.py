"""Multi-label scores from scikit-learn: mAP (the mean over labels of average precision), micro and macro F1,
per-label precision/recall/F1/support, exact-match ratio and hamming loss; per-label thresholds tuned for F1."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, hamming_loss,
                             precision_recall_fscore_support)

from ..files import write_csv
from ..plots import plot_per_class, plot_pr_curves, plot_top_losses
from .classification import gain_text, tune_threshold

# What MultiLabelEvaluation.save writes (figures only when asked and when there is something to draw).
MULTILABEL_FILES = ["report.txt", "eval.json", "per_label.csv", "per_label.png", "pr_curves.png", "top_losses.png"]


def average_precisions(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Each label's average precision (the area under its precision-recall curve); NaN for a label this set has
    no image of, where it is undefined."""
    out = np.full(y_true.shape[1], np.nan)
    for j in np.flatnonzero(y_true.sum(0) > 0):
        out[j] = average_precision_score(y_true[:, j], probs[:, j])
    return out


def label_scores(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | float = 0.5) -> dict[str, float]:
    """The figures training validates with: binary accuracy (the share of label decisions right), mAP over the
    labels present, macro and micro F1, all at ``thresholds``."""
    decided = (probs >= thresholds).astype(np.uint8)
    ap = average_precisions(y_true, probs)
    return {"acc": float((decided == y_true).mean()) if y_true.size else 0.0,
            "map": float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0,
            "macro_f1": float(f1_score(y_true, decided, average="macro", zero_division=0)),
            "micro_f1": float(f1_score(y_true, decided, average="micro", zero_division=0))}


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Each label's probability threshold with its best F1 on ``y_true`` (a validation split); 0.5 for a label
    the split has no image of."""
    return np.array([tune_threshold(y_true[:, j], probs[:, j]) for j in range(y_true.shape[1])])


@dataclass
class MultiLabelEvaluation:
    """The scores of a multi-label model on one labelled set: ``y_true`` (N, labels) 0/1, ``probs`` the sigmoid
    outputs, ``thresholds`` the per-label decision thresholds."""

    classes: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    thresholds: np.ndarray
    plain_map: float | None = None  # with test-time augmentation: mAP without it

    multilabel = True

    @property
    def y_pred(self) -> np.ndarray:
        return (self.probs >= self.thresholds).astype(np.uint8)

    @property
    def average_precision(self) -> np.ndarray:
        return average_precisions(self.y_true, self.probs)

    @property
    def mean_average_precision(self) -> float:
        ap = self.average_precision
        return float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0

    @property
    def macro_f1(self) -> float:
        return float(f1_score(self.y_true, self.y_pred, average="macro", zero_division=0))

    @property
    def micro_f1(self) -> float:
        return float(f1_score(self.y_true, self.y_pred, average="micro", zero_division=0))

    @property
    def exact_match(self) -> float:
        """The share of images whose whole set of labels is right (scikit-learn's subset accuracy)."""
        return float(accuracy_score(self.y_true, self.y_pred))

    @property
    def accuracy(self) -> float:
        """Multi-label "accuracy" is the exact-match ratio (every label of the image right)."""
        return self.exact_match

    @property
    def hamming(self) -> float:
        """The share of (image, label) decisions that are wrong."""
        return float(hamming_loss(self.y_true, self.y_pred))

    @property
    def headline(self) -> str:
        return f"mAP {self.mean_average_precision:.4f}, macro F1 {self.macro_f1:.4f}, micro F1 {self.micro_f1:.4f}"

    def per_label(self) -> list[dict]:
        """Precision, recall, F1, support, average precision and threshold of each label, in label order."""
        p, r, f, s = precision_recall_fscore_support(self.y_true, self.y_pred, average=None, zero_division=0,
                                                     labels=range(len(self.classes)))
        ap = self.average_precision
        return [{"label": c, "precision": float(p[j]), "recall": float(r[j]), "f1": float(f[j]),
                 "support": int(s[j]), "average_precision": None if np.isnan(ap[j]) else float(ap[j]),
                 "threshold": float(self.thresholds[j])} for j, c in enumerate(self.classes)]

    def worst_labels(self, n: int = 6) -> list[int]:
        """The ``n`` labels with the lowest average precision (labels with no image here left out)."""
        ap = self.average_precision
        present = np.flatnonzero(np.isfinite(ap))
        return present[np.argsort(ap[present], kind="stable")][:n].tolist()

    def losses(self) -> np.ndarray:
        """Each image's binary cross-entropy, averaged over its labels."""
        p = np.clip(self.probs, 1e-7, 1 - 1e-7)
        return -(self.y_true * np.log(p) + (1 - self.y_true) * np.log(1 - p)).mean(1)

    def top_losses(self, n: int = 16) -> np.ndarray:
        return np.argsort(-self.losses(), kind="stable")[:n]

    def names(self, row: np.ndarray) -> str:
        """The labels a 0/1 row marks, or 'none'."""
        chosen = [self.classes[j] for j in np.flatnonzero(row)]
        return ", ".join(chosen) if chosen else "none"

    @property
    def tta_text(self) -> str:
        return gain_text("mAP", self.mean_average_precision, self.plain_map)

    def __repr__(self) -> str:  # the arrays stay out
        return f"MultiLabelEvaluation({self.headline}, images={len(self.y_true)}, labels={len(self.classes)})"

    def _repr_html_(self) -> str:
        """Jupyter's view: the headline numbers and the per-label table."""
        import pandas as pd

        return (f"<p><b>{self.headline}</b>, exact match {self.exact_match:.4f} on {len(self.y_true)} images</p>"
                + pd.DataFrame(self.per_label()).set_index("label").to_html(float_format="{:.4f}".format))

    def report(self) -> str:
        """Headline numbers, then a line per label (precision, recall, F1, average precision, support, threshold)."""
        width = max(12, *(len(c) for c in self.classes))
        lines = [f"images: {len(self.y_true)}, labels: {len(self.classes)} (multi-label), "
                 f"{self.y_true.sum(1).mean():.2f} per image",
                 f"mAP (mean average precision): {self.mean_average_precision:.4f}",
                 f"micro F1: {self.micro_f1:.4f}", f"macro F1: {self.macro_f1:.4f}",
                 f"exact match (all labels of the image right): {self.exact_match:.4f}",
                 f"hamming loss (label decisions wrong): {self.hamming:.4f}"]
        if self.plain_map is not None:
            lines.append(self.tta_text)
        lines += ["", f"{'label':>{width}}  precision  recall  f1-score  avg-prec  support  threshold"]
        for row in self.per_label():
            ap = "-" if row["average_precision"] is None else f"{row['average_precision']:.4f}"
            lines.append(f"{row['label']:>{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:8.4f}  "
                         f"{ap:>8}  {row['support']:7d}  {row['threshold']:9.3f}")
        lines.append("\nthresholds: each label's, tuned on the validation split for its best F1 (threshold.json)")
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict:
        return {"task": "multilabel", "images": int(len(self.y_true)), "map": self.mean_average_precision,
                "micro_f1": self.micro_f1, "macro_f1": self.macro_f1, "exact_match": self.exact_match,
                "hamming_loss": self.hamming,
                **({"tta": {"map_without": self.plain_map}} if self.plain_map is not None else {}),
                "per_label": {row["label"]: {k: v for k, v in row.items() if k != "label"} for row in self.per_label()}}

    def save(self, folder: Path, images=None, figures: bool = True) -> list[Path]:
        """report.txt, eval.json and per_label.csv; with ``figures`` the per-label precision/recall bars, the
        precision-recall curves of the worst labels and (given the images, uint8 in order) the top losses."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.txt").write_text(self.report(), encoding="utf-8")
        (folder / "eval.json").write_text(json.dumps(self.as_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
        rows = self.per_label()
        write_csv(folder / "per_label.csv", rows)
        written = [folder / "report.txt", folder / "eval.json", folder / "per_label.csv"]
        if not figures:
            return written
        written.append(plot_per_class(np.array([r["precision"] for r in rows]), np.array([r["recall"] for r in rows]),
                                      self.classes, folder / "per_label.png", what="label"))
        if worst := self.worst_labels():
            written.append(plot_pr_curves(self.y_true, self.probs, self.classes, worst, self.thresholds,
                                          folder / "pr_curves.png"))
        if images is not None and len(images):
            import torch

            worst_images, losses, decided = self.top_losses(), self.losses(), self.y_pred
            titles = [f"predicted {self.names(decided[i])}\nactual {self.names(self.y_true[i])}\n"
                      f"loss {losses[i]:.2f}" for i in worst_images]
            written.append(plot_top_losses(images[torch.from_numpy(worst_images)], titles, folder / "top_losses.png",
                                           "top losses: labels predicted / actual / loss (mean over the labels)"))
        return written
