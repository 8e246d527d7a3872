"""Evaluation metrics from scikit-learn: accuracy, top-k accuracy, per-class report, confusion matrix."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, top_k_accuracy_score


@dataclass
class Evaluation:
    """The scores of a model on one labelled set of images."""

    classes: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    top_k: int = 5

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def accuracy(self) -> float:
        return float(accuracy_score(self.y_true, self.y_pred))

    @property
    def k(self) -> int:
        return min(self.top_k, len(self.classes) - 1) if len(self.classes) > 2 else 1

    @property
    def top_k_accuracy(self) -> float:
        if self.k == 1:
            return self.accuracy
        return float(top_k_accuracy_score(self.y_true, self.probs, k=self.k, labels=range(len(self.classes))))

    @property
    def confusion(self) -> np.ndarray:
        return confusion_matrix(self.y_true, self.y_pred, labels=range(len(self.classes)))

    def report(self) -> str:
        """scikit-learn's per-class precision, recall, F1 and support, with the headline numbers first."""
        table = classification_report(self.y_true, self.y_pred, labels=range(len(self.classes)),
                                      target_names=self.classes, digits=4, zero_division=0)
        return (f"images: {len(self.y_true)}\naccuracy: {self.accuracy:.4f}\n"
                f"top-{self.k} accuracy: {self.top_k_accuracy:.4f}\n\n{table}")

    def as_dict(self) -> dict:
        per_class = classification_report(self.y_true, self.y_pred, labels=range(len(self.classes)),
                                          target_names=self.classes, output_dict=True, zero_division=0)
        return {"images": int(len(self.y_true)), "accuracy": self.accuracy, f"top{self.k}_accuracy":
                self.top_k_accuracy, "per_class": {c: per_class[c] for c in self.classes}}

    def save(self, folder: Path) -> list[Path]:
        """Write report.txt, metrics.json, confusion_matrix.csv and confusion_matrix.png into ``folder``."""
        from .plots import plot_confusion_matrix

        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.txt").write_text(self.report(), encoding="utf-8")
        (folder / "eval.json").write_text(json.dumps(self.as_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
        with (folder / "confusion_matrix.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["true \\ predicted", *self.classes])
            for name, row in zip(self.classes, self.confusion):
                writer.writerow([name, *row.tolist()])
        plot_confusion_matrix(self.confusion, self.classes, folder / "confusion_matrix.png")
        return [folder / n for n in ("report.txt", "eval.json", "confusion_matrix.csv", "confusion_matrix.png")]
