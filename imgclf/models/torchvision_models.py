"""torchvision's classification architectures by name (GoogLeNet, AlexNet, SqueezeNet, ShuffleNet...), behind
timm's model interface (``get_classifier``, ``group_matcher``, ``forward_features``/``forward_head``,
``pretrained_cfg``) so that transfer learning, the feature cache, Grad-CAM and summaries treat them as any other.

A name timm also has (``resnet18``, ``vgg16``) means timm's; ``tv:NAME`` asks for torchvision's. GoogLeNet and
Inception v3 train from scratch with their auxiliary classifiers (torchvision returns them beside the logits in
training mode); they are left out for inference and export, and when training starts from ImageNet weights, which
leave them untrained.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision import models as tv

from ..errors import UserError
from ..downloads import host_unreachable
from .pretrained import fit_weights, read_weights, ways_out

PREFIX = "tv:"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# Their published weights were trained on inputs scaled to [-1, 1]: torchvision converts ImageNet-normalised
# inputs inside the model (transform_input); here the preprocessing itself normalises with 0.5, the same thing.
HALF_SCALED = ("googlenet", "inception_v3")
AUXILIARY = ("aux1", "aux2", "AuxLogits")  # GoogLeNet's and Inception v3's auxiliary classifiers


def names() -> list[str]:
    """Every classification architecture torchvision builds."""
    return tv.list_models(module=tv)


def _weights(name: str) -> tv.WeightsEnum:
    return tv.get_model_weights(name).DEFAULT


def preprocess(name: str) -> dict:
    """The input size, crop, interpolation and normalisation of ``name``'s ImageNet weights (their transforms)."""
    keywords = getattr(_weights(name).transforms, "keywords", {})
    crop, resize = int(keywords.get("crop_size", 224)), int(keywords.get("resize_size", 256))
    mean, std = ([0.5] * 3, [0.5] * 3) if name in HALF_SCALED else (IMAGENET_MEAN, IMAGENET_STD)
    return {"img_size": crop, "crop_pct": round(crop / resize, 4), "interpolation": "bilinear", "mean": mean,
            "std": std}


class TorchvisionNet(nn.Module):
    """A torchvision classifier (``self.net``) with timm's interface around it."""

    def __init__(self, name: str, num_classes: int, in_chans: int = 3, auxiliary: bool = True) -> None:
        super().__init__()
        kwargs: dict = {"weights": None, "num_classes": num_classes}
        if name in HALF_SCALED:  # the input scaling is the preprocessing's job
            kwargs.update(aux_logits=auxiliary, transform_input=False, init_weights=True)
        self.net = tv.get_model(name, **kwargs)
        self.arch = name
        first = next(n for n, m in self.net.named_modules() if isinstance(m, nn.Conv2d))
        if in_chans != 3:
            self._replace(first, in_chans)
        aux = [n for n, _ in self.net.named_children() if n in AUXILIARY]
        heads = [n for n, m in self.net.named_modules()
                 if isinstance(m, nn.Linear) and m.out_features == num_classes and n.split(".")[0] not in aux]
        self.head = heads[-1] if heads else None  # SqueezeNet's head is a convolution: it trains whole only
        aux_heads = [n for n, m in self.net.named_modules() if n.split(".")[0] in aux and
                     isinstance(m, nn.Linear) and m.out_features == num_classes]
        pre = preprocess(name)
        self.pretrained_cfg = {"architecture": name, "num_classes": num_classes, "first_conv": f"net.{first}",
                               "classifier": tuple(f"net.{n}" for n in [self.head, *aux_heads] if n),
                               "input_size": (3, pre["img_size"], pre["img_size"]), "crop_pct": pre["crop_pct"],
                               "mean": tuple(pre["mean"]), "std": tuple(pre["std"]), "url": _weights(name).url}

    def _replace(self, path: str, in_chans: int) -> None:
        """A first convolution for ``in_chans`` input channels (grayscale data), otherwise the same layer."""
        *parents, leaf = path.split(".")
        owner = self.net.get_submodule(".".join(parents)) if parents else self.net
        old: nn.Conv2d = getattr(owner, leaf)
        setattr(owner, leaf, nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding,
                                       old.dilation, old.groups, old.bias is not None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # ---- timm's interface ----------------------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        if self.head is None:
            raise NotImplementedError(f"{self.arch}'s classifier is not a linear layer")
        return self.net.get_submodule(self.head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """What the classifier layer receives: the whole network runs, with a hook on its input."""
        seen: list[torch.Tensor] = []
        handle = self.get_classifier().register_forward_pre_hook(lambda _module, inputs: seen.append(inputs[0]))
        try:
            self.net(x)
        finally:
            handle.remove()
        return seen[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.get_classifier()(x)

    def group_matcher(self, coarse: bool = False) -> Callable[[str], int]:
        """A block per top-level layer of the network, in the order they are defined (the stem first)."""
        blocks = {name: i for i, (name, _) in enumerate(self.net.named_children())}
        return lambda param: blocks[param.split(".")[1]]


def create(name: str, num_classes: int, in_chans: int, pretrained: bool, weights: str | None,
           auxiliary: bool) -> TorchvisionNet:
    """``name`` for ``num_classes``, from scratch (with its ``auxiliary`` classifiers, if it has any), or from
    ImageNet weights (``weights``, a local file, else torchvision's download) without them."""
    model = TorchvisionNet(name, num_classes, in_chans, auxiliary and not (pretrained or weights))
    if not (pretrained or weights):
        return model
    if weights:
        state, source = read_weights(weights), weights
    else:
        if why := host_unreachable(_weights(name).url):
            raise UserError(f"no pretrained weights for {name} here ({why}); {ways_out()}")
        state, source = download(name), _weights(name).url
    model.load_state_dict(fit_weights(as_ours(state), model, source), strict=False)
    return model


def download(name: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for ``name`` (downloaded once into torch's cache)."""
    return _weights(name).get_state_dict(progress=True)


def without_auxiliary(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` less the auxiliary classifiers' tensors (they serve training only)."""
    return {k: v for k, v in state.items() if not (k.startswith("net.") and k.split(".")[1] in AUXILIARY)}


def as_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict saved from torchvision's own model, named as :class:`TorchvisionNet`'s, without the auxiliary
    classifiers (published weights leave them untrained)."""
    return without_auxiliary({k if k.startswith("net.") else f"net.{k}": v for k, v in state.items()})

