"""timm's architectures: names, their pretrained configurations (input size and preprocessing), building them,
and timm's own download of ImageNet weights when online. Imported only when a timm model is asked for."""
from __future__ import annotations

import os

import timm
from torch import nn

from ..errors import UserError
from ..downloads import host_unreachable
from .pretrained import load_pretrained, ways_out


def is_name(name: str) -> bool:
    return timm.is_model(name)


def names() -> list[str]:
    return timm.list_models()


def default_img_size(name: str) -> int:
    cfg = timm.models.get_pretrained_cfg(name)
    return int(cfg.input_size[-1]) if cfg is not None else 224


def preprocess(name: str) -> dict:
    """The preprocessing ``name``'s ImageNet weights were trained with (timm's pretrained config)."""
    cfg = timm.models.get_pretrained_cfg(name)
    return {"img_size": int(cfg.input_size[-1]), "crop_pct": float(cfg.crop_pct),
            "interpolation": cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic") else "bilinear",
            "mean": list(cfg.mean), "std": list(cfg.std)}


def create(name: str, num_classes: int, in_chans: int, pretrained: bool, weights: str | None) -> nn.Module:
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    if (weights or pretrained) and not load_pretrained(model, name, weights):
        model = download(name, num_classes, in_chans)
    return model


def hub_unreachable(name: str, timeout: float = 3.0) -> str | None:
    """Why ``name``'s weights cannot be downloaded now, or None when their host answers."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return "HF_HUB_OFFLINE is set"
    cfg = timm.models.get_pretrained_cfg(name)
    url = constants.ENDPOINT if cfg is not None and cfg.hf_hub_id else (cfg.url if cfg is not None else None)
    return host_unreachable(url, timeout) if url else "timm knows no download for it"


def download(name: str, num_classes: int, in_chans: int) -> nn.Module:
    """timm's own pretrained download (Hugging Face hub); offline, an error that names the ways out."""
    if why := hub_unreachable(name):
        raise UserError(f"no pretrained weights for {name} here ({why}); {ways_out()}")
    try:
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, in_chans=in_chans)
    except Exception as exc:  # noqa: BLE001 - network, hub or missing-weights errors all mean "not available here"
        raise UserError(f"no pretrained weights for {name} here ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:120] if str(exc) else 'offline?'}); {ways_out()}") from None
    if num_classes != model.pretrained_cfg.get("num_classes"):
        for p in model.get_classifier().parameters():
            nn.init.zeros_(p)  # as fit_weights does for a new head
    return model
