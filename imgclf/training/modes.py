"""What the trainer trains for each ``--mode``: the whole network (scratch), the whole network with a lower rate for
the backbone, frozen at first (fine-tune), or only the head on features of the frozen backbone computed once and
cached (feature-extract)."""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .. import distributed as ddp
from ..config import TrainConfig
from ..data.tensors import ImageTensors
from .callbacks import Callback
from .features import FeatureCache, default_cache_dir
from .transfer import FineTune, freeze, layer_decay_groups, param_groups


def mode_setup(cfg: TrainConfig, net: nn.Module, splits: dict[str, ImageTensors], device: torch.device,
                    log: Callable[[str], None]) -> tuple[nn.Module, Any, Any, Any, dict[str, ImageTensors],
                                                         list[Callback]]:
    """What the trainer trains for ``cfg.mode``: (model, optimizer params, mean, std, splits, extra callbacks).

    scratch: the whole network. fine-tune: the whole network with a lower learning rate for the backbone, which
    :class:`FineTune` keeps frozen for the first ``head_epochs``. feature-extract: only the head, on backbone
    features computed once and cached, unless augmentation changes the images every epoch.
    """
    if cfg.mode == "scratch":
        return net, net, cfg.mean, cfg.std, splits, []
    if cfg.mode == "fine-tune":
        groups = layer_decay_groups(net, cfg.learning_rate, cfg.wd, cfg.layer_decay) if cfg.layer_decay else \
            param_groups(net, cfg.learning_rate, cfg.wd, cfg.backbone_lr_scale)
        tune = FineTune(cfg.head_epochs, cfg.unfreeze_blocks, cfg.freeze_bn, cfg.backbone_lr_scale)
        return net, groups, cfg.mean, cfg.std, splits, [tune]
    freeze(net, 0)
    head = net.get_classifier()
    if cfg.augment != "none" or cfg.feature_cache == "none":
        why = f"--augment {cfg.augment} changes the images every epoch" if cfg.augment != "none" else \
            "--feature-cache none"
        log(f"feature extraction: {why}, so the frozen backbone runs on every batch (no feature cache); "
            f"--augment none caches the features and makes every epoch after the first cost only the head")
        return net, head, cfg.mean, cfg.std, splits, []
    started = time.perf_counter()
    with ddp.local_main_first():  # local rank 0 computes them, the machine's other processes read its cache file
        cache = FeatureCache(net, cfg.mean, cfg.std, device, default_cache_dir() if cfg.feature_cache == "disk"
                             else None, cfg.channels_last)
        features = {name: cache(images) for name, images in splits.items() if name in ("train", "val")}
        cache.save()  # one write for all splits
    where = f"cache {cache.path}" if cache.path else "memory"
    log(f"feature extraction: {cache.computed} image(s) through the frozen backbone, {cache.reused} found in the "
        f"cache, in {time.perf_counter() - started:.1f} s ({where}); training the head on "
        f"{next(iter(features.values())).x.shape[1]} features per image")
    return head, head, None, None, features, []


def cached_probabilities(cfg: TrainConfig, model: nn.Module, probabilities: Callable[[torch.Tensor], torch.Tensor],
                         images: ImageTensors, device: torch.device) -> np.ndarray | None:
    """A feature-extract run's probabilities on ``images`` through its head on the frozen backbone's features from
    the disk cache: the same numbers as the whole network's, and images cached before (a validation split, a test
    split scored by an earlier run) cost no pass through the backbone; the new ones are added to the cache. None
    where there is no disk cache (augmentation, ``--feature-cache none`` or ``ram``)."""
    if cfg.mode != "feature-extract" or cfg.augment != "none" or cfg.feature_cache != "disk":
        return None
    cache = FeatureCache(model, cfg.mean, cfg.std, device, default_cache_dir(), cfg.channels_last)
    features = cache(images)
    cache.save()
    with torch.inference_mode():
        return probabilities(model.get_classifier()(features.x.to(device))).cpu().numpy()
