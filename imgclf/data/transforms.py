"""Augmentation presets (torchvision transforms v2) and the normalisation every batch goes through."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torchvision.transforms import v2


def augmentation(preset: str, size: int, channels: int, flip: bool = True) -> "v2.Transform | None":
    """The per-image training augmentation for ``preset`` (none, light, standard, strong) on uint8 tensors.

    light: shifts of up to 1/12 of the side (2 px at 28) and horizontal flips; standard: random resized crops, flips,
    small rotations and colour jitter; strong: random resized crops, TrivialAugment (one random operation of random
    strength per image, torchvision's TrivialAugmentWide), flips and random erasing (a quarter of the images).
    ``flip=False`` for digits and text, which change meaning when mirrored.
    """
    if preset == "none":
        return None
    # torchvision is imported here, when training augments: predicting never needs it (its import is seconds).
    from torchvision.transforms import v2

    steps: list[v2.Transform]
    if preset == "light":
        steps = [v2.RandomCrop(size, padding=max(1, size // 12), padding_mode="reflect")]
    elif preset == "strong":
        steps = [v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True), v2.TrivialAugmentWide()]
    else:
        jitter = dict(brightness=0.3, contrast=0.3) | ({"saturation": 0.3} if channels == 3 else {})
        steps = [v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
                 v2.RandomRotation(10),
                 v2.ColorJitter(**jitter)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if preset == "strong":
        steps.append(v2.RandomErasing(p=0.25))
    return v2.Compose(steps)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 images (N, C, H, W) to the model's float input: scaled to [0, 1], minus mean, over std."""
    x = x.float().div_(255).sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
