"""Evaluation metrics from scikit-learn: accuracy, balanced accuracy and macro F1 (which do not hide a minority
class), top-k accuracy, per-class report, confusion matrix, the most-confused pairs and the top losses."""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import (accuracy_score, average_precision_score, classification_report, confusion_matrix, f1_score,
                             precision_recall_curve, precision_recall_fscore_support, recall_score, roc_auc_score,
                             top_k_accuracy_score)

from ..files import write_csv
from ..plots import plot_confusion_matrix, plot_most_confused, plot_per_class, plot_roc_pr, plot_top_losses

# What Evaluation.save writes (figures only when asked and when there is something to draw).
EVAL_FILES = ["report.txt", "eval.json", "confusion_matrix.csv", "confusion_matrix.png",
              "confusion_matrix_normalized.png", "per_class.png", "most_confused.png", "top_losses.png", "roc_pr.png"]


def label_counts(y: torch.Tensor | np.ndarray, n_classes: int) -> list[int]:
    """Images per class: of class ids, or of a multi-label 0/1 matrix (images with each label)."""
    y = np.asarray(y)
    if y.ndim == 2:
        return y.sum(0).astype(int).tolist()
    return np.bincount(y.astype(np.int64), minlength=n_classes).tolist()


def tune_threshold(y_true: np.ndarray, scores: np.ndarray) -> float:
    """The probability of the positive class (class 1) above which a two-class model should answer positive: the
    one that maximises the F1 score on ``y_true`` (a validation split), from scikit-learn's precision-recall
    curve; 0.5 when the split has no positive. The threshold lies half way between the lowest score answered
    positive and the next score below it: the same decisions on this split, and a margin on both sides for new
    images (a cut right at the lowest positive's score would miss every new positive a hair below it)."""
    if not (y_true == 1).any():
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y_true, scores)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)[:-1]  # the last point has no threshold
    best = int(np.argmax(f1))
    below = scores[scores < thresholds[best]]
    return float((thresholds[best] + below.max()) / 2 if len(below) else thresholds[best])


def confusion_scores(confusion: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean recall of the classes present) and macro F1 (over every class, 0 for one
    never predicted nor present: scikit-learn's ``zero_division=0``) from a confusion matrix (rows: true). Training
    validates this way because confusion matrices add up over processes, where predictions would have to travel."""
    confusion = np.asarray(confusion, dtype=np.float64)
    hits, true, predicted = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    recall = np.divide(hits, true, out=np.zeros_like(hits), where=true > 0)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(hits), where=precision + recall > 0)
    return {"acc": float(hits.sum() / max(confusion.sum(), 1)),
            "balanced_acc": float(recall[true > 0].mean()) if (true > 0).any() else 0.0,
            "macro_f1": float(f1.mean()) if len(f1) else 0.0}


def gain_text(metric: str, with_tta: float, without: float) -> str:
    """The line evaluate prints for ``--tta``: the score with and without, and the gain in points."""
    return f"test-time augmentation: {metric} {with_tta:.4f} vs {without:.4f} without " \
           f"({100 * (with_tta - without):+.2f} points)"


@dataclass
class Evaluation:
    """The scores of a model on one labelled set of images."""

    classes: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    top_k: int = 5
    plain_accuracy: float | None = None  # with test-time augmentation: the accuracy without it
    threshold: float | None = None  # two classes: the tuned probability of class 1 above which it is answered
    positive: int = 1  # two classes: the class whose detection the binary scores measure (the run's --positive)

    multilabel = False

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def accuracy(self) -> float:
        return float(accuracy_score(self.y_true, self.y_pred))

    @property
    def balanced_accuracy(self) -> float:
        """The mean of the classes' recalls: 0.5 for a two-class model that always answers the majority class."""
        # recall averaged over the classes present: scikit-learn's balanced_accuracy_score, without its warning
        # when the model predicts a class this set does not hold
        return float(recall_score(self.y_true, self.y_pred, labels=np.unique(self.y_true), average="macro",
                                  zero_division=0))

    @property
    def macro_f1(self) -> float:
        return float(f1_score(self.y_true, self.y_pred, labels=range(len(self.classes)), average="macro",
                              zero_division=0))

    @property
    def binary(self) -> bool:
        """Two classes, both present: ROC AUC and the precision-recall curve of class 1 apply."""
        return len(self.classes) == 2 and len(np.unique(self.y_true)) == 2

    def binary_scores(self) -> dict[str, float]:
        """ROC AUC and average precision of the positive class, and accuracy/precision/recall/F1 at the tuned
        threshold, which is said as the positive class's probability."""
        scores, truth = self.probs[:, self.positive], (self.y_true == self.positive).astype(int)
        out = {"roc_auc": float(roc_auc_score(truth, scores)),
               "average_precision": float(average_precision_score(truth, scores))}
        if self.threshold is not None:
            threshold = self.threshold if self.positive == 1 else 1.0 - self.threshold  # stored as class 1's
            decided = (scores >= threshold).astype(int)
            p, r, f, _ = precision_recall_fscore_support(truth, decided, average="binary", zero_division=0)
            out |= {"threshold": threshold, "accuracy_at_threshold": float((decided == truth).mean()),
                    "precision_at_threshold": float(p), "recall_at_threshold": float(r), "f1_at_threshold": float(f)}
        return out

    @property
    def k(self) -> int:
        return min(self.top_k, len(self.classes) - 1) if len(self.classes) > 2 else 1

    @property
    def top_k_accuracy(self) -> float:
        if self.k == 1:
            return self.accuracy
        return float(top_k_accuracy_score(self.y_true, self.probs, k=self.k, labels=range(len(self.classes))))

    @property
    def top_k_text(self) -> str:
        """", top-k accuracy 0.9876" to follow the accuracy; nothing for two classes, where top-1 is the accuracy."""
        return f", top-{self.k} accuracy {self.top_k_accuracy:.4f}" if self.k > 1 else ""

    @property
    def confusion(self) -> np.ndarray:
        return confusion_matrix(self.y_true, self.y_pred, labels=range(len(self.classes)))

    def precision_recall(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-class precision and recall, in class order."""
        precision, recall, _, _ = precision_recall_fscore_support(self.y_true, self.y_pred,
                                                                  labels=range(len(self.classes)), zero_division=0)
        return precision, recall

    def most_confused(self, n: int = 10) -> list[tuple[str, str, int, float]]:
        """The ``n`` (true, predicted) class pairs with the most mistakes: (true, predicted, count, share of true)."""
        matrix = self.confusion.copy()
        totals = np.maximum(matrix.sum(1), 1)
        np.fill_diagonal(matrix, 0)
        order = np.argsort(-matrix, axis=None, kind="stable")[:n]
        return [(self.classes[i], self.classes[j], int(matrix[i, j]), float(matrix[i, j] / totals[i]))
                for i, j in zip(*np.unravel_index(order, matrix.shape)) if matrix[i, j] > 0]

    def losses(self) -> np.ndarray:
        """Each image's cross-entropy loss."""
        picked = self.probs[np.arange(len(self.y_true)), self.y_true]
        return -np.log(np.clip(picked, 1e-12, 1.0))

    def top_losses(self, n: int = 16) -> np.ndarray:
        """Indices of the ``n`` images with the highest loss, worst first."""
        return np.argsort(-self.losses(), kind="stable")[:n]

    def __repr__(self) -> str:  # the arrays stay out: a summary, like the headline the CLI prints
        return (f"Evaluation(accuracy={self.accuracy:.4f}, balanced_accuracy={self.balanced_accuracy:.4f}, "
                f"macro_f1={self.macro_f1:.4f}, images={len(self.y_true)}, classes={len(self.classes)})")

    def _repr_html_(self) -> str:
        """Jupyter's view: the headline numbers and the per-class table."""
        import pandas as pd

        per_class = pd.DataFrame(self.as_dict()["per_class"]).T
        return (f"<p><b>accuracy {self.accuracy:.4f}</b>{html.escape(self.top_k_text)}, balanced accuracy "
                f"{self.balanced_accuracy:.4f}, macro F1 {self.macro_f1:.4f} on {len(self.y_true)} images</p>"
                + per_class.to_html(float_format="{:.4f}".format))

    def report(self) -> str:
        """scikit-learn's per-class precision, recall, F1 and support, with the headline numbers first and the
        most-confused pairs last."""
        table = classification_report(self.y_true, self.y_pred, labels=range(len(self.classes)),
                                      target_names=self.classes, digits=4, zero_division=0)
        pairs = "".join(f"  {t} -> {p}: {count} ({share:.1%} of {t})\n"
                        for t, p, count, share in self.most_confused()) or "  none\n"
        top = f"top-{self.k} accuracy: {self.top_k_accuracy:.4f}\n" if self.k > 1 else ""
        top += f"{self.tta_text}\n" if self.plain_accuracy is not None else ""
        if self.binary:
            b = self.binary_scores()
            top += f"ROC AUC ({self.classes[self.positive]} positive): {b['roc_auc']:.4f}\naverage precision: " \
                   f"{b['average_precision']:.4f}\n"
            if "threshold" in b:
                top += (f"at the threshold tuned on validation, p({self.classes[self.positive]}) >= "
                        f"{b['threshold']:.3f}: accuracy "
                        f"{b['accuracy_at_threshold']:.4f}, precision {b['precision_at_threshold']:.4f}, recall "
                        f"{b['recall_at_threshold']:.4f}, F1 {b['f1_at_threshold']:.4f}\n")
        return (f"images: {len(self.y_true)}\naccuracy: {self.accuracy:.4f}\nbalanced accuracy: "
                f"{self.balanced_accuracy:.4f}\nmacro F1: {self.macro_f1:.4f}\n{top}\n{table}"
                f"\nmost-confused pairs (true -> predicted):\n{pairs}")

    @property
    def tta_text(self) -> str:
        return gain_text("accuracy", self.accuracy, self.plain_accuracy)

    def as_dict(self) -> dict:
        per_class = classification_report(self.y_true, self.y_pred, labels=range(len(self.classes)),
                                          target_names=self.classes, output_dict=True, zero_division=0)
        top = {f"top{self.k}_accuracy": self.top_k_accuracy} if self.k > 1 else {}
        return {"images": int(len(self.y_true)), "accuracy": self.accuracy,
                "balanced_accuracy": self.balanced_accuracy, "macro_f1": self.macro_f1, **top,
                **({"tta": {"accuracy_without": self.plain_accuracy}} if self.plain_accuracy is not None else {}),
                **({"binary": {"positive": self.classes[self.positive], **self.binary_scores()}}
                   if self.binary else {}),
                "per_class": {c: per_class[c] for c in self.classes},
                "most_confused": [{"true": t, "predicted": p, "count": n, "share": s}
                                  for t, p, n, s in self.most_confused()]}

    def save(self, folder: Path, images: torch.Tensor | None = None, figures: bool = True) -> list[Path]:
        """Write report.txt, eval.json, confusion_matrix.csv and, unless ``figures`` is false, the figures into
        ``folder``: the confusion matrix (counts and normalised), per-class precision/recall, the most-confused
        pairs and, given the evaluated ``images`` (uint8, in the same order), the top-losses gallery."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.txt").write_text(self.report(), encoding="utf-8")
        (folder / "eval.json").write_text(json.dumps(self.as_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
        write_csv(folder / "confusion_matrix.csv", [[name, *row.tolist()] for name, row in zip(self.classes, self.confusion)],
                  ["true \\ predicted", *self.classes])
        written = [folder / "report.txt", folder / "eval.json", folder / "confusion_matrix.csv"]
        if not figures:
            return written
        written += [plot_confusion_matrix(self.confusion, self.classes, folder / "confusion_matrix.png"),
                    plot_confusion_matrix(self.confusion, self.classes, folder / "confusion_matrix_normalized.png",
                                          normalized=True),
                    plot_per_class(*self.precision_recall(), self.classes, folder / "per_class.png")]
        if pairs := self.most_confused():
            written.append(plot_most_confused(pairs, folder / "most_confused.png"))
        if self.binary:
            written.append(plot_roc_pr(self.y_true, self.probs[:, 1], self.classes[1], folder / "roc_pr.png",
                                       self.threshold))
        if images is not None and len(images):
            worst = self.top_losses()
            losses, predicted = self.losses(), self.y_pred
            titles = [f"predicted {self.classes[predicted[i]]}\nactual {self.classes[self.y_true[i]]}\n"
                      f"p={self.probs[i, predicted[i]]:.2f}, loss {losses[i]:.2f}" for i in worst]
            written.append(plot_top_losses(images[torch.from_numpy(worst)], titles, folder / "top_losses.png"))
        return written
