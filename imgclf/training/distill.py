"""``imgclf train DATA --teacher RUN``: knowledge distillation (Hinton et al., 2015) from a trained run into the model
being trained, usually a small, fast one.

The loss blends the labels' loss with the temperature-softened KL divergence between the teacher's and the
student's outputs, ``(1 - w) * CE(student, labels) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))``
(timm's ``--kd-model-name`` and Keras' distillation example do the same). The teacher's logits are computed once,
before training, on every training image as the teacher's own preprocessing sees it (decoded again at its input
size when that differs from the student's, a batch at a time): distilling then costs one teacher pass over the data
set, not one per epoch. Each augmented view of an image learns from the teacher's answer on the image itself; a
teacher run on every augmented batch would match the views exactly, at the price of its forward pass each step.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..data.dataset import Source
from ..data.decode import Preprocess
from ..data.loader import eval_batches
from ..data.tensors import decode_split
from ..data.tensors import ImageTensors
from ..data.transforms import normalize
from ..errors import UserError
from ..inference.classifier import Classifier


class Distillation(nn.Module):
    """``(1 - weight) * loss(output, labels) + weight * T^2 * KL`` of the softened teacher and student outputs.
    Its target is ``(labels, teacher_logits)``; the main logits are distilled (a GoogLeNet's auxiliary classifiers
    learn from the labels only)."""

    def __init__(self, loss: nn.Module, weight: float, temperature: float) -> None:
        super().__init__()
        self.loss, self.weight, self.temperature = loss, weight, temperature

    def forward(self, output: torch.Tensor | tuple, target: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        labels, teacher = target
        student = output[0] if isinstance(output, tuple) else output
        t = self.temperature
        soft = F.kl_div(F.log_softmax(student.float() / t, 1), F.log_softmax(teacher.float() / t, 1),
                        reduction="batchmean", log_target=True) * t * t
        return (1 - self.weight) * self.loss(output, labels) + self.weight * soft


def load_teacher(cfg: TrainConfig, classes: list[str], device: torch.device) -> tuple[Classifier, np.ndarray]:
    """The teacher run and, for each of the student's classes, the teacher's output column; the teacher must know
    the same classes (in any order)."""
    teacher = Classifier.load(cfg.teacher, device=str(device))
    if teacher.task.multilabel:
        raise UserError(f"--teacher {cfg.teacher} is a multi-label run; distillation here is for one class per image")
    if sorted(teacher.classes) != sorted(classes):
        missing = sorted(set(classes) - set(teacher.classes)) or sorted(set(teacher.classes) - set(classes))
        raise UserError(f"--teacher {cfg.teacher} was trained on other classes (e.g. {missing[0]!r} is only in one "
                        f"of them); distil from a run on the same classes")
    return teacher, np.array([teacher.classes.index(c) for c in classes])


def teacher_logits(cfg: TrainConfig, source: Source, train: ImageTensors, classes: list[str],
                   device: torch.device, log: Callable[[str], None]) -> torch.Tensor:
    """The teacher's logits for every image of ``train`` (the student's decoded training split, from ``source``),
    in its order and its class order."""
    teacher, columns = load_teacher(cfg, classes, device)
    pre = Preprocess.of(teacher.config)  # its own input; "none": a batch of files decoded at a time
    if pre == Preprocess.of(cfg):
        images = train  # the same pixels: no second decode
    else:
        images = decode_split(source.splits["train"], pre, None, "decoding train for the teacher", True, "none")
        if images.paths != train.paths or len(images) != len(train):
            raise UserError(f"--teacher: the teacher's preprocessing reads other training images than the "
                            f"student's ({len(images)} vs {len(train)}; an unreadable file?); fix the data with "
                            f"imgclf check first")
    model = teacher.model.float().eval()
    out = []
    with torch.inference_mode():
        for x, _ in eval_batches(images, 256):
            out.append(model(normalize(x.to(device), teacher.mean, teacher.std)).float().cpu())
    logits = torch.cat(out)[:, torch.from_numpy(columns)]
    agree = float((logits.argmax(1) == train.y).float().mean())
    log(f"teacher {cfg.teacher} ({teacher.config.model}): its logits on the {len(train)} training images computed "
        f"once, {agree:.1%} of them its top class = the label; distilling at temperature {cfg.kd_temperature:g}, "
        f"weight {cfg.kd_weight:g}")
    if cfg.augment != "none":  # measured on Fashion-MNIST: -0.5 points with light augmentation, +0.04 without
        log(f"note: the teacher answered the images as they are, and --augment {cfg.augment} shows the student "
            f"other views of them; --augment none gives it the views the teacher answered")
    return logits


def with_teacher(train: ImageTensors, logits: torch.Tensor) -> ImageTensors:
    """``train`` whose labels carry the teacher's logits beside them, one row per image: ``[label, logits...]``
    (float32), what :class:`Distillation`'s trainer unpacks per batch."""
    packed = torch.cat([train.y.float()[:, None], logits], 1)
    return ImageTensors(train.x, packed, train.paths, train.skipped, train.where)
