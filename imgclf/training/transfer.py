"""Transfer learning: which parameters are the head and which the backbone's blocks, and freezing them.

Blocks are timm's coarse parameter groups (``model.group_matcher(coarse=True)``): the stem, then each stage, for
any timm architecture and for the from-scratch CNN. The head is ``model.get_classifier()``, the layer that is
replaced for a new set of classes.

A frozen block keeps its batch-norm statistics too: :func:`train_mode` leaves a batch-norm layer whose parameters
are all frozen in inference mode (Keras' rule for ``trainable = False``), so a "frozen" backbone really stays the
network it was and its features can be cached.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import UserError
from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer

MODES = ("scratch", "feature-extract", "fine-tune")


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The new head's parameters: the classifier layer that maps pooled features to classes."""
    return list(model.get_classifier().parameters())


def backbone_blocks(model: nn.Module) -> list[list[nn.Parameter]]:
    """The backbone's parameters grouped into blocks, from the input (stem) to the output (last stage)."""
    from timm.models import group_parameters  # timm's reading of blocks; imported when fine-tuning

    head = {id(p) for p in head_parameters(model)}
    params = dict(model.named_parameters())
    blocks = []
    for names in group_parameters(model, model.group_matcher(coarse=True)).values():
        block = [params[n] for n in names if id(params[n]) not in head]
        if block:
            blocks.append(block)
    return blocks


def freeze(model: nn.Module, unfreeze: int | str = 0, freeze_bn: bool = False) -> int:
    """Freeze the backbone except its top ``unfreeze`` blocks (an int or ``"all"``); the head stays trainable.

    ``freeze_bn`` also freezes the batch-norm layers of the unfrozen blocks, so every one of them keeps ImageNet's
    statistics (Keras' advice for small data sets). Returns the number of trainable blocks.
    """
    blocks = backbone_blocks(model)
    n = len(blocks) if unfreeze == "all" else min(int(unfreeze), len(blocks))
    for i, block in enumerate(blocks):
        for p in block:
            p.requires_grad_(i >= len(blocks) - n)
    for p in head_parameters(model):
        p.requires_grad_(True)
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for p in m.parameters(recurse=False):
                    p.requires_grad_(False)
    return n


def train_mode(model: nn.Module) -> None:
    """``model.train()``, except batch-norm layers whose parameters are all frozen stay in inference mode."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            own = list(m.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                m.eval()


def param_groups(model: nn.Module, lr: float, weight_decay: float, backbone_lr_scale: float) -> list[dict]:
    """Optimizer groups: the head at ``lr``, the backbone at ``lr * backbone_lr_scale`` (discriminative learning
    rates); no weight decay on biases and normalisation weights (timm's rule: 1-d tensors)."""
    head = {id(p) for p in head_parameters(model)}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        groups.setdefault((id(p) in head, p.ndim > 1), []).append(p)
    return [{"params": ps, "lr": lr if is_head else lr * backbone_lr_scale,
             "weight_decay": weight_decay if decays else 0.0}  # the head first: its rate is the one logged
            for (is_head, decays), ps in sorted(groups.items(), reverse=True)]


def layer_decay_groups(model: nn.Module, lr: float, weight_decay: float, decay: float) -> list[dict]:
    """timm's layer-wise learning-rate decay: the head at ``lr``, each block below it at ``decay`` times the rate
    of the block above (BEiT/ViT fine-tuning), no weight decay on 1-d tensors."""
    from timm.optim._param_groups import param_groups_layer_decay

    if not hasattr(model, "group_matcher"):
        raise UserError(f"--layer-decay needs a timm architecture (it reads the model's blocks); "
                        f"{type(model).__name__} has none: use --backbone-lr-scale instead")
    groups = param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=decay)
    for group in groups:
        group["lr"] = lr * group.pop("lr_scale", 1.0)  # our schedules peak at each group's own starting rate
    return sorted(groups, key=lambda g: -g["lr"])  # the head first: its rate is the one logged


def pre_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled features the head sees (timm's ``forward_head(..., pre_logits=True)``)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


class FineTune(Callback):
    """Train the new head alone for ``head_epochs``, then unfreeze the backbone's top ``unfreeze`` blocks.

    The state follows from the epoch number, so ``--resume`` lands in the right phase. The optimizer holds every
    parameter from the start; frozen ones get no gradient, so it leaves them untouched.
    """

    def __init__(self, head_epochs: int, unfreeze: int | str = "all", freeze_bn: bool = False,
                 backbone_lr_scale: float = 0.5) -> None:
        self.head_epochs, self.unfreeze, self.freeze_bn = head_epochs, unfreeze, freeze_bn
        self.backbone_lr_scale = backbone_lr_scale

    def on_epoch_begin(self, trainer: "Trainer", epoch: int) -> None:
        model = trainer.full_model
        if epoch < self.head_epochs:
            if epoch == trainer.start_epoch:
                freeze(model, 0)
                which = f"epochs 1-{self.head_epochs}" if self.head_epochs > 1 else "epoch 1"
                trainer.log(f"{which}: training the new head, backbone frozen")
            return
        if epoch == self.head_epochs or epoch == trainer.start_epoch:
            n = freeze(model, self.unfreeze, self.freeze_bn)
            total = len(backbone_blocks(model))
            bn = ", batch-norm statistics frozen" if self.freeze_bn else ""
            trainer.log(f"epoch {epoch + 1}: unfroze the top {n} of {total} backbone blocks{bn}, backbone "
                        f"learning rate x{self.backbone_lr_scale:g}")
