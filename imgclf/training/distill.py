"""``imgclf train DATA --teacher RUN``: knowledge distillation (Hinton et al., 2015) from a trained run into the model
being trained, usually a small, fast one.

The loss blends the labels' loss with the temperature-softened KL divergence between the teacher's and the
student's outputs, ``(1 - w) * CE(student, labels) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))``
(timm's ``--kd-model-name`` and Keras' distillation example do the same). Where the training views are augmented
(or mixed), the teacher answers each batch as the student sees it (``--kd-logits online``): "consistent teaching"
(Beyer et al., 2022): the student learns from the teacher's answer on the very view it sees, not on the
un-augmented image, at the price of the teacher's forward pass on every batch. Where they are not, its logits are
computed once before training (``cached``): one teacher pass over the data set instead of one per epoch.
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
    if cfg.augment != "none":  # measured on Fashion-MNIST: -0.5 points with light augmentation
        log(f"note: --kd-logits cached: the teacher answered the images as they are, and --augment {cfg.augment} "
            f"shows the student other views of them; --kd-logits online has it answer every view")
    return logits


def with_teacher(train: ImageTensors, logits: torch.Tensor) -> ImageTensors:
    """``train`` whose labels carry the teacher's logits beside them, one row per image: ``[label, logits...]``
    (float32), what :class:`Distillation`'s trainer unpacks per batch."""
    packed = torch.cat([train.y.float()[:, None], logits], 1)
    return ImageTensors(train.x, packed, train.paths, train.skipped, train.where)


class OnlineTeacher:
    """The teacher answering the student's own input batches: the student's normalised view turned back into
    pixels, into the teacher's channels (grey repeated, or RGB to grey by ITU-R 601 weights as Pillow does), resized
    to the teacher's input size (antialiased), normalised by the teacher's statistics; its logits in the student's
    class order."""

    def __init__(self, teacher: Classifier, columns: np.ndarray, mean: list[float], std: list[float],
                 channels_last: bool) -> None:
        device = teacher.device
        self.model = teacher.model.float().eval().requires_grad_(False)
        self.size, self.channels = teacher.config.img_size, teacher.config.channels
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.teacher_mean, self.teacher_std = teacher.mean.view(1, -1, 1, 1), teacher.std.view(1, -1, 1, 1)
        self.columns = torch.from_numpy(columns).to(device)
        self.channels_last = channels_last
        self.grey = torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x.float() * self.std + self.mean  # [0, 1]
        if pixels.shape[1] != self.channels:
            pixels = pixels.expand(-1, 3, -1, -1) if self.channels == 3 else \
                (pixels * self.grey).sum(1, keepdim=True)
        if pixels.shape[-2:] != (self.size, self.size):
            pixels = F.interpolate(pixels, size=(self.size, self.size), mode="bilinear", antialias=True,
                                   align_corners=False)
        pixels = (pixels - self.teacher_mean) / self.teacher_std
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        return self.model(pixels)[:, self.columns]


def online_teacher(cfg: TrainConfig, classes: list[str], mean: list[float], std: list[float], device: torch.device,
                   log: Callable[[str], None]) -> OnlineTeacher:
    """The teacher run ready to answer each training batch (``--kd-logits online``)."""
    teacher, columns = load_teacher(cfg, classes, device)
    seen = "" if teacher.config.img_size == cfg.img_size and teacher.config.channels == cfg.channels else \
        f", resized to its {teacher.config.img_size} px and {teacher.config.channels} channel(s)"
    log(f"teacher {cfg.teacher} ({teacher.config.model}): answers every training batch as the student sees it "
        f"(--kd-logits online{seen}); distilling at temperature {cfg.kd_temperature:g}, weight {cfg.kd_weight:g}")
    return OnlineTeacher(teacher, columns, mean, std, cfg.channels_last)
