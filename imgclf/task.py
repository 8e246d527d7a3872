"""What a model's outputs mean: one class per image (multi-class; binary is multi-class with two classes and a tuned
threshold) or any number of labels per image (multi-label).

The difference lives here, as timm's task objects and Hugging Face's ``problem_type`` keep it: the activation that
turns logits into probabilities, what validation measures, the metric to monitor, and how probabilities become the
answer (the loss is built from the task by :func:`imgclf.training.loss.create_criterion`). The trainer, evaluation,
predict, export and serve ask the run's task, which is chosen from the data (a CSV row with several labels makes it
multi-label) and saved in ``config.yaml``.

No torch at import: an exported ONNX file predicts through the same task without PyTorch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UserError

if TYPE_CHECKING:
    import torch

    from .config import TrainConfig

# A multi-label model answers a label from this probability on until thresholds are tuned on validation.
DEFAULT_THRESHOLD = 0.5


class MultiClass:
    """One class per image: softmax over the classes, cross-entropy, accuracy; the most likely class is the answer
    (for two classes, class 1 from the run's tuned threshold on)."""

    name = "multiclass"
    multilabel = False
    default_monitor = "val_acc"
    monitors = ("val_acc", "val_loss", "val_balanced_acc", "val_macro_f1", "train_acc", "train_loss")

    def probabilities(self, logits: "torch.Tensor") -> "torch.Tensor":
        return logits.float().softmax(1)

    def probabilities_np(self, logits: np.ndarray) -> np.ndarray:
        # numpy's own two lines, not scipy.special.softmax: importing scipy.special costs ONNX prediction 0.13 s
        e = np.exp(logits.astype(np.float32) - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def hits(self, logits: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        """Images of the batch answered right (a float tensor, summed over the epoch as the training accuracy)."""
        return (logits.argmax(1) == y).sum().float()

    def answer(self, probs: np.ndarray, k: int, threshold: Any = None) -> list[int]:
        """Class ids to report for one image, best first: the top ``k``, the tuned decision first for two."""
        order = np.argsort(-probs, kind="stable")[:k]
        if threshold is not None and len(probs) == 2:
            decided = int(probs[1] >= threshold)
            return [decided, 1 - decided][:k]
        return order.tolist()


class MultiLabel:
    """Any number of labels per image: one sigmoid per label, binary cross-entropy, mAP; every label whose probability
    reaches its threshold (tuned on validation for the best F1 of each label) is the answer, possibly none."""

    name = "multilabel"
    multilabel = True
    default_monitor = "val_map"
    monitors = ("val_map", "val_loss", "val_acc", "val_macro_f1", "val_micro_f1", "train_acc", "train_loss")

    def probabilities(self, logits: "torch.Tensor") -> "torch.Tensor":
        return logits.float().sigmoid()

    def probabilities_np(self, logits: np.ndarray) -> np.ndarray:
        # 1 / (1 + e^-x) without overflow for large |x| (scipy's expit, without importing scipy.special)
        return np.exp(-np.logaddexp(0, -logits.astype(np.float32)))

    def hits(self, logits: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        """Per image, the share of its labels decided right at p >= 0.5 (Keras' binary accuracy), summed."""
        return ((logits >= 0) == y.bool()).float().mean(1).sum()

    def answer(self, probs: np.ndarray, k: int, threshold: Any = None) -> list[int]:
        """Every label at or above its threshold, most likely first (an empty list: none of them)."""
        chosen = np.flatnonzero(probs >= thresholds_for(threshold, len(probs)))
        return chosen[np.argsort(-probs[chosen], kind="stable")].tolist()


def thresholds_for(threshold: Any, n_labels: int) -> np.ndarray:
    """Per-label thresholds from one number, a list, or None (the default 0.5 for every label)."""
    if threshold is None:
        return np.full(n_labels, DEFAULT_THRESHOLD)
    values = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (n_labels,))
    return values.copy()


Task = MultiClass | MultiLabel
_TASKS: dict[str, Task] = {"multiclass": MultiClass(), "multilabel": MultiLabel()}


def get_task(name: str | None) -> Task:
    """The task object of a run's ``task`` (runs from before tasks, and ``auto``, are multi-class)."""
    return _TASKS.get(name or "multiclass", _TASKS["multiclass"])


def check_options(cfg: "TrainConfig", task: Task) -> None:
    """Options that mean nothing for the run's task are refused before anything is written."""
    if cfg.monitor is not None and cfg.monitor not in task.monitors:
        other = "multi-label" if task.multilabel else "multi-class"
        raise UserError(f"--monitor {cfg.monitor} does not apply to {other} training; use one of: "
                        f"{', '.join(task.monitors)}")
    if task.multilabel and cfg.sampler == "balanced":
        raise UserError("--sampler balanced draws each class equally often, and a multi-label image has several; "
                        "use --class-weights balanced (each label's positives weighted in the loss) instead")
    if not task.multilabel and cfg.loss == "asymmetric":
        raise UserError("--loss asymmetric is for multi-label training (sigmoid outputs); multi-class training "
                        "uses cross-entropy")
