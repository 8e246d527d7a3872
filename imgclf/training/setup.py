"""The first steps of a training job, shared by ``train``, ``cv`` and ``lr-find``: the configuration from the
user's options, the data with its validation split, the input the data and the model call for, the model."""
from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import MAX_PLANNED_EPOCHS, TrainConfig, with_recipe
from ..data.prepare import input_shape
from ..data.sources import Source, load_source
from ..data.split import holdout, sample
from ..resources import device_memory
from ..device import resolve_device
from ..errors import UserError
from ..models import (canonical, create_model, default_img_size, is_cnn, is_custom, pretrained_preprocess,
                      user_model)
from ..models.memory import step_memory
from .batch_size import LEAST, RECIPE_BATCH, planned
from ..run import check_run_name
from ..task import check_options, get_task


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def data_path(data: str | None) -> str:
    """DATA as a run stores it: an existing path made absolute (so ``imgclf evaluate RUN`` works from any
    folder), a built-in dataset's name as it is."""
    if not data:
        raise UserError("no data given: pass an image folder, a CSV, or a built-in dataset name")
    return str(Path(data).resolve()) if Path(data).exists() else str(data)


def new_config(data: str | None, model: str, epochs: int | None, options: dict[str, Any]) -> TrainConfig:
    """A new run's configuration; paths are stored absolute so ``imgclf evaluate RUN`` works from any folder."""
    data = data_path(data)
    options = with_recipe(dict(options))
    for key in ("weights", "data_root"):
        if options.get(key):
            options[key] = str(Path(options[key]).expanduser().resolve())
    # from_dict, not the constructor: a misspelt option (epoch=2) gets "did you mean epochs?", not a TypeError
    if epochs is None and options.get("time") is not None:  # the time budget alone decides
        epochs = MAX_PLANNED_EPOCHS
    cfg = TrainConfig.from_dict({"data": data, "model": canonical(model),
                                 **({"epochs": epochs} if epochs is not None else {}),
                                 **options})
    if cfg.name is not None:
        check_run_name(cfg.name)
    return cfg


def resolve_task(task: str, source: Source) -> str:
    """The run's task: ``auto`` becomes multi-label when a row of the data has several labels, else multi-class."""
    if task != "auto":
        return task
    return "multilabel" if source.multilabel else "multiclass"


def load_data(cfg: TrainConfig) -> Source:
    """The data of ``cfg`` with its validation split (carved from train, or a cross-validation fold), its labels
    as the run's task needs them; ``cfg.task`` is resolved from the data when it is ``auto``."""
    source = load_source(cfg.data, cfg.data_root)
    if len(source.classes) < 2:
        raise UserError(f"{cfg.data}: found a single class ({source.classes[0]!r}); a classifier needs at least 2 "
                        f"(one sub-folder of images per class)")
    cfg.task = resolve_task(cfg.task, source)
    check_options(cfg, get_task(cfg.task))
    source = source.for_task(cfg.task)
    if cfg.limit:
        source = sample(source, cfg.limit, cfg.seed)
    if not cfg.test_split and "test" in source.splits:
        source = replace(source, splits={k: v for k, v in source.splits.items() if k != "test"})
    return holdout(source, cfg.val_split, cfg.seed, cfg.folds, cfg.fold)


def fit_input(cfg: TrainConfig, source: Source) -> None:
    """Fill in the input ``cfg`` leaves open: channels and size from the data, and for ImageNet weights their own
    size, crop, interpolation and normalisation; flips unless the data forbids them; a training metric to monitor
    when there is no validation split."""
    transfer = (cfg.pretrained or cfg.weights) and not is_cnn(cfg.model)
    if transfer:  # ImageNet weights expect RGB at their own size and normalisation
        cfg.channels = cfg.channels or 3
        cfg.img_size = cfg.img_size or default_img_size(cfg.model)
    cfg.channels, cfg.img_size = input_shape(source, cfg.img_size, cfg.channels, default_img_size(cfg.model),
                                             quiet=cfg.quiet)
    if transfer:
        pre = pretrained_preprocess(cfg.model, cfg.channels)
        cfg.crop_pct, cfg.interpolation = pre["crop_pct"], pre["interpolation"]
        cfg.mean, cfg.std = cfg.mean or pre["mean"], cfg.std or pre["std"]
    cfg.flip = source.flip_ok if cfg.flip is None else cfg.flip
    cfg.monitor = cfg.monitor or get_task(cfg.task).default_monitor
    if "val" not in source.splits and cfg.monitor.startswith("val"):  # training logs loss and accuracy only
        cfg.monitor = "train_loss" if cfg.monitor == "val_loss" else "train_acc"


def memory_room(device: str) -> int:
    """Bytes a training step may take: the free memory of a CUDA device, else the machine's available memory."""
    return device_memory(resolve_device(device))


def check_memory(cfg: TrainConfig, num_classes: int, n_train: int) -> None:
    """Refuse, before anything is allocated, an input size and batch whose training step cannot fit in memory,
    naming the estimate, the largest size that fits and the largest batch that does (a batch is at most the
    ``n_train`` training images)."""
    if is_custom(cfg.model):
        return
    # A batch that is measured (training.batch_size) may become smaller batches accumulated: only the least of
    # them must fit here, where nothing is allocated yet.
    asked = LEAST if planned(cfg) else cfg.batch_size or RECIPE_BATCH
    batch = min(asked, max(n_train, 1))
    try:
        need = step_memory(cfg.model, num_classes, cfg.channels, cfg.img_size)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):  # the meta device cannot run it
        return
    room = memory_room(cfg.device)
    if need.total(batch) <= room:
        return
    low, high = 8, cfg.img_size  # the largest size that fits, by bisection (the estimate grows with the size)
    if step_memory(cfg.model, num_classes, cfg.channels, low).total(batch) > room:
        size = ""
    else:
        while high - low > 8:
            mid = (low + high) // 16 * 8
            low, high = (mid, high) if step_memory(cfg.model, num_classes, cfg.channels,
                                                   mid).total(batch) <= room else (low, mid)
        size = f"--img-size {low} fits with batches of {batch}"
    fitting = (room - need.fixed) // need.per_image if room > need.fixed else 0
    ways = [w for w in (size, f"--batch-size {fitting} at this size" if fitting >= 1 else "") if w]
    raise UserError(f"--img-size {cfg.img_size}: a training step of {cfg.model} with batches of {batch} "
                    f"needs about {need.total(batch) / 1e9:,.1f} GB ({need.per_image / 1e9:,.2f} GB per "
                    f"image), more than the {room / 1e9:.1f} GB of memory available; "
                    f"{' or '.join(ways) if ways else 'no input size fits this model here'}")


def build_model(cfg: TrainConfig, num_classes: int, own: nn.Module | None = None, weights: bool = True
                ) -> nn.Module:
    """The network of ``cfg`` (the user's ``own`` when given), with its starting weights unless ``weights`` is
    false (a resumed run loads its checkpoint instead)."""
    if own is not None:
        net = user_model(own, num_classes, cfg.channels, cfg.img_size)
    else:
        # Auxiliary classifiers (GoogLeNet's) train from scratch only: ImageNet weights leave them untrained.
        auxiliary = not (cfg.pretrained or cfg.weights)
        net = create_model(cfg.model, num_classes, cfg.channels, cfg.img_size, cfg.pretrained and weights,
                           cfg.weights if weights else None, auxiliary=auxiliary)
    if cfg.grad_checkpointing:
        if not hasattr(net, "set_grad_checkpointing"):
            raise UserError(f"--grad-checkpointing: {cfg.model} cannot recompute its activations (timm's models "
                            f"and imgclf's cnn can); leave it out, or lower --img-size or --batch-size")
        net.set_grad_checkpointing(True)
    return net
