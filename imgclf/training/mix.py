"""Mixup and CutMix from timm: pairs of training images blended (mixup) or patched (cutmix), their labels mixed in
the same proportion, as soft targets for timm's soft-target cross-entropy (or, multi-label, its binary
cross-entropy: each label's target is its mixed share). timm is imported when a run mixes: it brings torchvision's
model zoo, seconds of start-up for the runs that do not."""
from __future__ import annotations

import torch
from torch import nn


class MixBatch:
    """``(x, y) -> (mixed x, soft targets)`` on a normalised batch. timm mixes an image with its mirror in the batch,
    so it needs an even number of images; an odd last batch keeps its images and gets the same smoothed targets it
    would have without mixing. With both ``mixup`` and ``cutmix`` above 0 each batch picks one (timm's
    switch_prob 0.5). ``multilabel``: ``y`` is a 0/1 matrix, mixed as it is."""

    def __init__(self, mixup: float, cutmix: float, num_classes: int, label_smoothing: float,
                 multilabel: bool = False) -> None:
        from timm.data.mixup import Mixup, mixup_target

        self.num_classes, self.smoothing, self.multilabel = num_classes, label_smoothing, multilabel
        self.target = mixup_target
        self.mix = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing,
                         num_classes=num_classes, multi_label=multilabel)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(x) % 2:
            return x, self.target(y, self.num_classes, 1.0, self.smoothing, self.multilabel)
        return self.mix(x, y)


def mixing(mixup: float, cutmix: float, num_classes: int, label_smoothing: float, multilabel: bool = False
           ) -> tuple[MixBatch | None, nn.Module | None]:
    """(the batch mixer, its loss) when ``mixup`` or ``cutmix`` is on, else (None, None)."""
    if mixup <= 0 and cutmix <= 0:
        return None, None
    from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy

    loss = BinaryCrossEntropy(smoothing=0.0) if multilabel else SoftTargetCrossEntropy()  # targets come smoothed
    return MixBatch(mixup, cutmix, num_classes, label_smoothing, multilabel), loss
