"""One registry for every model: ``cnn``, ``cnn:SPEC`` (from scratch), any timm architecture by name, and
torchvision's (``googlenet``; ``tv:NAME`` where timm has the same name).

timm and torchvision's model zoo are imported only when a model of theirs is asked for, so loading a cnn run to
predict imports neither."""
from __future__ import annotations

import difflib

import torch
from torch import nn

from ..errors import UserError
from .cnn import CNN, DEFAULT_SPEC
from .pretrained import fit_weights, read_weights

__all__ = ["CNN", "DEFAULT_SPEC", "canonical", "count_parameters", "create_model", "default_img_size",
           "is_cnn", "known_name", "main_logits", "pretrained_preprocess", "without_auxiliary"]


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


# Names the courses use that neither library builds, and what to use instead.
TEXTBOOK = {"inception_v1": "GoogLeNet (Inception v1) is googlenet, from torchvision",
            "lenet": "LeNet is small enough to write as cnn:6k5p0-m-16k5p0-m-fc120-fc84"}


def canonical(name: str) -> str:
    """The name a run records for the architecture ``name``: timm's name as it is, a torchvision architecture timm
    lacks as ``tv:NAME`` (so that loading it later asks torchvision alone); cnn and runs of your own model as they
    are. An unknown name is an error with the closest names of both libraries."""
    if is_cnn(name) or is_custom(name):
        return name
    from . import torchvision_models as tvm

    if name.startswith(tvm.PREFIX):
        if name[len(tvm.PREFIX):] not in tvm.names():
            close = difflib.get_close_matches(name[len(tvm.PREFIX):].lower(), tvm.names(), n=3)
            raise UserError(f"unknown model {name!r}: not a torchvision architecture"
                            f"{'; did you mean ' + ', '.join(tvm.PREFIX + c for c in close) + '?' if close else ''}")
        return name
    from . import timm_models

    if timm_models.is_name(name):
        return name
    if name in tvm.names():
        return tvm.PREFIX + name
    close = difflib.get_close_matches(name.lower(), timm_models.names() + tvm.names(), n=3)
    hint = TEXTBOOK.get(name.lower()) or (f"did you mean {', '.join(close)}?" if close else
                                           "see timm.list_models() and torchvision.models.list_models()")
    raise UserError(f"unknown model {name!r}: not a timm or torchvision architecture (nor cnn, cnn:SPEC or a run); "
                    f"{hint}")


def known_name(name: str) -> bool:
    """Whether ``name`` is an architecture timm or torchvision builds (and so has ImageNet weights)."""
    try:
        return not (is_cnn(name) or is_custom(name)) and bool(canonical(name))
    except UserError:
        return False


def _torchvision(name: str) -> str | None:
    """torchvision's architecture behind a canonical name, or None for a timm one."""
    return name[3:] if name.startswith("tv:") else None


def default_img_size(name: str) -> int | None:
    """The input size an architecture was designed for (224 for most, 299 for Inception); None for cnn."""
    if is_cnn(name) or is_custom(name):
        return None
    name = canonical(name)
    if arch := _torchvision(name):
        from . import torchvision_models

        return torchvision_models.preprocess(arch)["img_size"]
    from . import timm_models

    return timm_models.default_img_size(name)


def pretrained_preprocess(name: str, channels: int) -> dict:
    """The preprocessing ``name``'s ImageNet weights were trained with (the library's pretrained config)."""
    name = canonical(name)
    if arch := _torchvision(name):
        from . import torchvision_models

        pre = torchvision_models.preprocess(arch)
    else:
        from . import timm_models

        pre = timm_models.preprocess(name)
    if channels == 1:  # grayscale input into a summed first convolution: one mean/std for the one channel
        pre["mean"], pre["std"] = [sum(pre["mean"]) / 3], [sum(pre["std"]) / 3]
    return pre


def create_model(name: str, num_classes: int, in_chans: int = 3, img_size: int = 224, pretrained: bool = False,
                 weights: str | None = None, *, auxiliary: bool = True) -> nn.Module:
    """Build ``name`` for ``num_classes`` outputs and ``in_chans``-channel inputs.

    ``name`` is ``cnn``/``cnn:SPEC``, a timm architecture, or a torchvision one (``googlenet``, ``tv:resnet18``).
    ``weights`` loads a local state dict; ``pretrained`` loads ImageNet weights (built in for EfficientNet-Lite,
    else downloaded by timm or torchvision). ``auxiliary`` keeps GoogLeNet's and Inception v3's auxiliary
    classifiers, which train from scratch only (they are never pretrained) and never predict. The model is checked
    with one forward pass at ``img_size`` so an input too small for the architecture gives a clear error now rather
    than in the middle of training.
    """
    if is_cnn(name):
        model = CNN(name[4:] or DEFAULT_SPEC, num_classes, in_chans, img_size)
        if weights:
            model.load_state_dict(fit_weights(read_weights(weights), model, weights))
        elif pretrained:
            raise UserError("the from-scratch cnn has no pretrained weights; use a timm model such as "
                            "efficientnet_lite0, or pass --weights FILE")
        return model
    name = canonical(name)
    if arch := _torchvision(name):
        from . import torchvision_models

        model = torchvision_models.create(arch, num_classes, in_chans, pretrained, weights, auxiliary)
    else:
        from . import timm_models

        model = timm_models.create(name, num_classes, in_chans, pretrained, weights)
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, img_size, img_size))
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise UserError(f"model {name} cannot take {img_size}x{img_size} images ({str(exc).splitlines()[0]}); "
                        f"pass a larger --img-size, e.g. {default_img_size(name)}") from None
    return model


def main_logits(output: torch.Tensor | tuple) -> torch.Tensor:
    """The logits of a forward pass: GoogLeNet and Inception v3 add their auxiliary classifiers' in training."""
    return output[0] if isinstance(output, tuple) else output


def without_auxiliary(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A trained model's weights less its auxiliary classifiers' (GoogLeNet's), for the model that predicts."""
    if not any(".aux" in k.lower() for k in state):
        return state
    from . import torchvision_models

    return torchvision_models.without_auxiliary(state)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))
