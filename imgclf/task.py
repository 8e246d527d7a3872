"""What a model's outputs mean: one class per image (multi-class; binary is multi-class with two classes and a tuned
threshold) or any number of labels per image (multi-label).

The difference lives here and nowhere else, as timm's task objects and Hugging Face's ``problem_type`` keep it: the
loss, the activation that turns logits into probabilities, what validation measures, the metric to monitor, and how
probabilities become the answer. The trainer, evaluation, predict, export and serve ask the run's task, which is
chosen from the data (a CSV row with several labels makes it multi-label) and saved in ``config.yaml``.

No torch at import: an exported ONNX file predicts through the same task without PyTorch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .config import TrainConfig

TASKS = ("auto", "multiclass", "multilabel")
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
        from scipy.special import softmax

        return softmax(logits.astype(np.float32), axis=1)

    def criterion(self, labels: "torch.Tensor", classes: list[str], cfg: "TrainConfig", log: Callable[[str], None]
                  ) -> "nn.Module":
        from .training.loss import create_loss

        return create_loss(labels, classes, cfg.class_weights, cfg.sampler, cfg.label_smoothing, log)

    def hits(self, logits: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        """Images of the batch answered right (a float tensor, summed over the epoch as the training accuracy)."""
        return (logits.argmax(1) == y).sum().float()

    def validation(self) -> "ConfusionSums":
        return ConfusionSums()

    def evaluation(self, classes: list[str], y_true: np.ndarray, probs: np.ndarray, threshold: Any = None,
                   top_k: int = 5) -> Any:
        from .metrics import Evaluation

        return Evaluation(classes, y_true, probs, top_k, threshold=threshold)

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
        from scipy.special import expit

        return expit(logits.astype(np.float32))

    def criterion(self, labels: "torch.Tensor", classes: list[str], cfg: "TrainConfig", log: Callable[[str], None]
                  ) -> "nn.Module":
        """timm's binary cross-entropy (label smoothing moves every target towards 0.5), or its asymmetric loss
        (``--loss asymmetric``: easy negatives down-weighted, for many labels that are mostly absent). With
        ``--class-weights balanced`` each label's positives weigh its negatives over its positives (BCE's
        ``pos_weight``), so a rare label counts as much as a common one."""
        import torch
        from timm.loss import AsymmetricLossMultiLabel, BinaryCrossEntropy

        counts = labels.float().sum(0)
        shares = ", ".join(f"{c} {n / len(labels):.0%}" for c, n in zip(classes[:8], counts.tolist()))
        log(f"multi-label: {labels.float().sum(1).mean():.2f} labels per training image on average; images with "
            f"each label: {shares}{', ...' if len(classes) > 8 else ''}")
        pos_weight = None
        if cfg.class_weights == "balanced":
            # a label on every image (or none) has no balance to restore: weight 1
            known = (counts > 0) & (counts < len(labels))
            pos_weight = torch.where(known, (len(labels) - counts) / counts.clamp_min(1), torch.ones_like(counts))
            shown = ", ".join(f"{c} {w:.2f}" for c, w in zip(classes[:8], pos_weight.tolist()))
            log(f"positive weights in the loss (balanced: each label's negatives over its positives): {shown}"
                f"{', ...' if len(classes) > 8 else ''}")
        if cfg.loss == "asymmetric":
            return AsymmetricLossMultiLabel(smoothing=cfg.label_smoothing, pos_weight=pos_weight)
        return BinaryCrossEntropy(smoothing=cfg.label_smoothing, smooth_dense=True, pos_weight=pos_weight)

    def hits(self, logits: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        """Per image, the share of its labels decided right at p >= 0.5 (Keras' binary accuracy), summed."""
        return ((logits >= 0) == y.bool()).float().mean(1).sum()

    def validation(self) -> "LabelScores":
        return LabelScores()

    def evaluation(self, classes: list[str], y_true: np.ndarray, probs: np.ndarray, threshold: Any = None,
                   top_k: int = 5) -> Any:
        from .multilabel import MultiLabelEvaluation

        return MultiLabelEvaluation(classes, y_true, probs, thresholds_for(threshold, len(classes)))

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


# ---- validation, summed over processes -------------------------------------------------------------------------
class ConfusionSums:
    """Multi-class validation: plain cross-entropy (no smoothing, no weights) and a confusion matrix, which add up
    over processes without sending predictions; then accuracy, balanced accuracy and macro F1."""

    def __init__(self) -> None:
        self.loss_sum, self.count, self.confusion = 0.0, 0, None

    def add(self, logits: "torch.Tensor", y: "torch.Tensor") -> None:
        import torch
        from torch import nn

        self.loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        self.count += len(y)
        k = logits.shape[1]
        batch = torch.bincount(y * k + logits.argmax(1), minlength=k * k).reshape(k, k)
        self.confusion = batch if self.confusion is None else self.confusion + batch

    def result(self) -> dict[str, float]:
        import torch

        from . import distributed as ddp
        from .metrics import confusion_scores

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
        from torch import nn

        target = y.float()
        self.loss_sum += nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum").item() \
            / max(target.shape[1], 1)
        self.probs.append(logits.sigmoid().numpy().astype(np.float16))
        self.labels.append(y.numpy().astype(np.uint8))

    def result(self) -> dict[str, float]:
        from . import distributed as ddp
        from .multilabel import label_scores

        mine = (np.concatenate(self.probs) if self.probs else None, np.concatenate(self.labels) if self.labels
                else None, self.loss_sum)
        parts = [p for p in ddp.gather(mine) if p[0] is not None]
        probs = np.concatenate([p[0] for p in parts]).astype(np.float32)
        labels = np.concatenate([p[1] for p in parts])
        return {"loss": sum(p[2] for p in parts) / max(len(labels), 1), **label_scores(labels, probs)}
