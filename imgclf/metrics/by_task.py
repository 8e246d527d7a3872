"""What each task measures: the validation figures of every epoch, summed over processes, and the final
evaluation (:class:`~.classification.Evaluation` or :class:`~.multilabel.MultiLabelEvaluation`)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .. import distributed as ddp
from ..task import Task, thresholds_for
from .classification import Evaluation, confusion_scores
from .multilabel import MultiLabelEvaluation, label_scores


def evaluation_for(task: Task, classes: list[str], y_true: np.ndarray, probs: np.ndarray, threshold: Any = None,
                   top_k: int = 5, positive: int = 1) -> Evaluation | MultiLabelEvaluation:
    """The evaluation of ``probs`` against ``y_true`` for the run's task, at the run's threshold(s); a two-class
    run's binary scores are those of its ``positive`` class."""
    if task.multilabel:
        return MultiLabelEvaluation(classes, y_true, probs, thresholds_for(threshold, len(classes)))
    return Evaluation(classes, y_true, probs, top_k, threshold=threshold, positive=positive)


def validation_for(task: Task) -> "ConfusionSums | LabelScores":
    """A fresh accumulator of one validation pass."""
    return LabelScores() if task.multilabel else ConfusionSums()


class ConfusionSums:
    """Multi-class validation: plain cross-entropy (no smoothing, no weights) and a confusion matrix, which add up
    over processes without sending predictions; then accuracy, balanced accuracy and macro F1."""

    def __init__(self) -> None:
        self.loss_sum, self.count, self.confusion = 0.0, 0, None

    def add(self, logits: "torch.Tensor", y: "torch.Tensor") -> None:
        self.loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        self.count += len(y)
        k = logits.shape[1]
        batch = torch.bincount(y * k + logits.argmax(1), minlength=k * k).reshape(k, k)
        self.confusion = batch if self.confusion is None else self.confusion + batch

    def result(self) -> dict[str, float]:
        # A process whose shard is empty (fewer images than processes) still takes part, with zeros.
        k = max(ddp.gather(self.confusion.shape[0] if self.confusion is not None else 0))
        confusion = self.confusion if self.confusion is not None else torch.zeros(k, k, dtype=torch.long)
        totals = ddp.all_reduce_sum([self.loss_sum, self.count, *confusion.flatten().tolist()])
        return {"loss": totals[0] / max(totals[1], 1), **confusion_scores(np.array(totals[2:]).reshape(k, k))}


class LabelScores:
    """Multi-label validation: plain binary cross-entropy, and the probabilities, which mAP needs whole (a ranking
    per label): each process's are gathered, as float16 (a 100,000-image split of 100 labels is 20 MB)."""

    def __init__(self) -> None:
        self.loss_sum, self.probs, self.labels = 0.0, [], []

    def add(self, logits: "torch.Tensor", y: "torch.Tensor") -> None:
        target = y.float()
        self.loss_sum += nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum").item() \
            / max(target.shape[1], 1)
        self.probs.append(logits.sigmoid().numpy().astype(np.float16))
        self.labels.append(y.numpy().astype(np.uint8))

    def result(self) -> dict[str, float]:
        mine = (np.concatenate(self.probs) if self.probs else None, np.concatenate(self.labels) if self.labels
                else None, self.loss_sum)
        parts = [p for p in ddp.gather(mine) if p[0] is not None]
        probs = np.concatenate([p[0] for p in parts]).astype(np.float32)
        labels = np.concatenate([p[1] for p in parts])
        return {"loss": sum(p[2] for p in parts) / max(len(labels), 1), **label_scores(labels, probs)}
