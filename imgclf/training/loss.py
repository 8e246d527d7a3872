"""The training loss, and what imbalanced classes change in it.

Cross-entropy with label smoothing; with ``--class-weights balanced`` each class's term is weighted by scikit-learn's
inverse-frequency weight (n_images / (n_classes * n_class_images)), so a minority class counts as much as the
majority in the gradient. A strongly imbalanced training split is said at the start of training, with the options
that act on it.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from ..config import IMBALANCE_WARN, TrainConfig
from ..task import Task


def imbalance_ratio(labels: torch.Tensor | np.ndarray) -> float | None:
    """Largest over smallest class count among the classes present (None without labels)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    counts = counts[counts > 0]
    return float(counts.max() / counts.min()) if len(counts) else None


def class_weights(labels: torch.Tensor | np.ndarray, n_classes: int) -> torch.Tensor:
    """scikit-learn's ``balanced`` weights for the classes in ``labels``; 1 for a class with no training image."""
    labels = np.asarray(labels, dtype=np.int64)
    present = np.unique(labels)
    weights = np.ones(n_classes)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return torch.tensor(weights, dtype=torch.float32)


def create_loss(labels: torch.Tensor, classes: list[str], weighting: str, sampler: str, label_smoothing: float,
                log: Callable[[str], None]) -> nn.Module:
    """The cross-entropy the run trains with (weighted when ``weighting`` is balanced), after saying how
    imbalanced the training split is when that matters."""
    ratio = imbalance_ratio(labels)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    if ratio is not None and ratio > IMBALANCE_WARN:
        big, small = int(counts.argmax()), int(np.where(counts > 0, counts, counts.max() + 1).argmin())
        acting = [o for o, on in (("--class-weights balanced", weighting == "balanced"),
                                  ("--sampler balanced", sampler == "balanced")) if on]
        advice = f"acting on it: {' and '.join(acting)}" if acting else \
            "a model can score well by answering the majority class; try --class-weights balanced or --sampler " \
            "balanced, and --monitor val_macro_f1"
        log(f"warning: the training classes are imbalanced, {ratio:.1f} to 1 ({classes[big]!r} {counts[big]} "
            f"images, {classes[small]!r} {counts[small]}); {advice}")
    weight = None
    if weighting == "balanced":
        weight = class_weights(labels, len(classes))
        shown = ", ".join(f"{c} {w:.2f}" for c, w in zip(classes[:8], weight.tolist()))
        log(f"class weights in the loss (balanced): {shown}{', ...' if len(classes) > 8 else ''}")
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)


# GoogLeNet's paper adds each auxiliary classifier's loss, weighted 0.3, to the main one during training.
AUX_WEIGHT = 0.3


class WithAuxiliary(nn.Module):
    """``loss`` of the main logits plus ``weight`` times that of each auxiliary classifier, for a model whose
    training forward returns them after its logits (GoogLeNet, Inception v3); plain logits pass straight through."""

    def __init__(self, loss: nn.Module, weight: float = AUX_WEIGHT) -> None:
        super().__init__()
        self.loss, self.weight = loss, weight

    def forward(self, output: torch.Tensor | tuple, target: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, tuple):
            return self.loss(output, target)
        main, *aux = output
        return self.loss(main, target) + self.weight * sum(self.loss(a, target) for a in aux)


def create_criterion(task: Task, labels: torch.Tensor, classes: list[str], cfg: TrainConfig,
                     log: Callable[[str], None]) -> nn.Module:
    """The training loss of the run's task: cross-entropy (see :func:`create_loss`) for one class per image, or
    :func:`multilabel_loss` for multi-label data."""
    if task.multilabel:
        return WithAuxiliary(multilabel_loss(labels, classes, cfg, log))
    return WithAuxiliary(create_loss(labels, classes, cfg.class_weights, cfg.sampler, cfg.label_smoothing, log))


def multilabel_loss(labels: torch.Tensor, classes: list[str], cfg: TrainConfig, log: Callable[[str], None]
                    ) -> nn.Module:
    """timm's binary cross-entropy (label smoothing moves every target towards 0.5), or its asymmetric loss
    (``--loss asymmetric``: easy negatives down-weighted, for many labels that are mostly absent). With
    ``--class-weights balanced`` each label's positives weigh its negatives over its positives (BCE's
    ``pos_weight``), so a rare label counts as much as a common one."""
    from timm.loss import AsymmetricLossMultiLabel, BinaryCrossEntropy  # timm (and torchvision) for multi-label only

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
