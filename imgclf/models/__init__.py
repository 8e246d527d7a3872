"""One registry for every model: ``cnn``, ``cnn:SPEC`` (from scratch) or any timm architecture by name."""
from __future__ import annotations

import difflib

import timm
import torch
from torch import nn

from ..errors import UserError
from .cnn import CNN, DEFAULT_SPEC

__all__ = ["CNN", "DEFAULT_SPEC", "count_parameters", "create_model", "default_img_size", "is_cnn"]


def is_cnn(name: str) -> bool:
    return name == "cnn" or name.startswith("cnn:")


def _check_timm_name(name: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models() for the names"
        raise UserError(f"unknown model {name!r}: use cnn, cnn:SPEC or a timm architecture name; {hint}")


def default_img_size(name: str) -> int | None:
    """The input size a timm architecture was designed for (224 for most, 299 for Inception); None for cnn."""
    if is_cnn(name):
        return None
    _check_timm_name(name)
    cfg = timm.models.get_pretrained_cfg(name)
    return int(cfg.input_size[-1]) if cfg is not None else 224


def create_model(name: str, num_classes: int, in_chans: int = 3, img_size: int = 224) -> nn.Module:
    """Build ``name`` (randomly initialised) for ``num_classes`` outputs and ``in_chans``-channel inputs.

    The model is checked with one forward pass at ``img_size`` so an input too small for the architecture
    gives a clear error now rather than in the middle of training.
    """
    if is_cnn(name):
        return CNN(name[4:] or DEFAULT_SPEC, num_classes, in_chans, img_size)
    _check_timm_name(name)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
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
