"""The learning-rate range test (fastai's ``lr_find``, after Leslie Smith): train the real model on the real data for a
few hundred steps while the learning rate grows exponentially, and read the loss curve. The suggestion is the rate
where the smoothed loss falls fastest, before it reaches its minimum; the model's weights are thrown away.

``imgclf lr-find DATA [train options]`` writes ``runs/NAME/lr_find.png`` and ``lr_find.csv`` and prints the
suggestion with the command to use it.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.decode import Preprocess
from ..data.loader import train_loader
from ..data.prepare import prepare
from ..data.tensors import channel_stats
from ..data.transforms import augmentation, normalize
from ..device import resolve_device
from ..errors import UserError
from ..files import write_csv
from ..plots.style import save, subplots
from ..run import RunDir
from ..task import get_task
from .loss import create_criterion
from .batch_size import RECIPE_BATCH
from .optim import create_optimizer
from .setup import build_model, check_memory, fit_input, load_data, new_config, seed_everything
from .transfer import freeze, train_mode

# Stop once the smoothed loss is this many times its minimum: the rate is past any use.
DIVERGED = 4.0
SMOOTHING = 0.98  # fastai's exponential smoothing of the loss, bias-corrected


@dataclass
class RangeTest:
    """The rates tried, the smoothed loss at each, and the suggested rate."""

    lrs: list[float]
    losses: list[float]
    suggestion: float

    def steepest(self) -> int:
        return self.lrs.index(self.suggestion)


def suggest(lrs: list[float], losses: list[float]) -> float:
    """The rate of the steepest descent of the loss (per decade of rate) before its minimum."""
    low = int(np.argmin(losses))
    if low < 2:
        return lrs[0]
    slopes = np.gradient(np.asarray(losses[:low + 1]), np.log10(lrs[:low + 1]))
    return lrs[int(np.argmin(slopes))]


def range_test(data: str, model: str = "cnn", start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100,
               **options: Any) -> tuple[RangeTest, RunDir]:
    """Run the range test with the training options of ``imgclf train``; returns the result and the run folder
    its curve was written to."""
    if not 0 < start_lr < end_lr:
        raise UserError(f"--start-lr {start_lr:g} must be positive and below --end-lr {end_lr:g}")
    options = {k: v for k, v in options.items() if k not in ("epochs", "exist_ok")}
    cfg = new_config(data, model, 1, options | {"scheduler": "none"})
    cfg.resolve_mode()
    seed_everything(cfg.seed, cfg.deterministic)
    source = load_data(cfg)
    fit_input(cfg, source)
    check_memory(cfg, len(source.classes), len(source.splits["train"]))
    net = build_model(cfg, len(source.classes))
    prepared = prepare(source, Preprocess.of(cfg), quiet=cfg.quiet, max_bad_fraction=cfg.max_bad_fraction,
                       cache=cfg.cache)
    mean, std = (cfg.mean, cfg.std) if cfg.mean is not None else channel_stats(prepared.splits["train"].x)
    device = resolve_device(cfg.device)
    net = net.to(device)
    if cfg.mode == "feature-extract":
        freeze(net, 0)
    params = net.get_classifier() if cfg.mode == "feature-extract" else net
    transform = augmentation(cfg.augment, cfg.img_size, cfg.channels, cfg.flip)
    train = prepared.splits["train"]
    loader = train_loader(train, min(cfg.batch_size or RECIPE_BATCH, len(train)), transform, cfg.workers, cfg.seed)
    cfg.lr = start_lr
    optimizer = create_optimizer(params, cfg)
    loss_fn = create_criterion(get_task(cfg.task), train.y, prepared.classes, cfg, lambda m: None).to(device)
    mean_t, std_t = torch.tensor(mean, device=device), torch.tensor(std, device=device)
    lrs, losses, smooth, best = [], [], 0.0, math.inf
    batches = itertools.chain.from_iterable(itertools.repeat(loader))  # as many epochs as the steps need
    train_mode(net)
    for i, (x, y) in zip(range(steps), batches):
        lr = start_lr * (end_lr / start_lr) ** (i / max(1, steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_fn(net(normalize(x.to(device), mean_t, std_t)), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            break
        smooth = SMOOTHING * smooth + (1 - SMOOTHING) * value
        smoothed = smooth / (1 - SMOOTHING ** (i + 1))
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if smoothed > DIVERGED * best:
            break
    if len(lrs) < 5:
        at = lrs[-1] if lrs else start_lr
        raise UserError(f"the loss diverged within {len(lrs) + 1} steps, at a learning rate of {at:.2g}; start lower "
                        f"(--start-lr {start_lr / 100:g}) or check the data")
    run = RunDir.create(cfg.project, cfg.name, f"lr-find-{source.name}", exist_ok=True)
    result = RangeTest(lrs, losses, suggest(lrs, losses))
    _save(result, run.path)
    return result, run


def _save(result: RangeTest, folder: Path) -> None:
    write_csv(folder / "lr_find.csv", list(zip(result.lrs, result.losses)), ["lr", "smoothed_loss"])
    fig, axes = subplots(1, 1, (7, 4.5))
    ax = axes[0][0]
    ax.plot(result.lrs, result.losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    i = result.steepest()
    ax.plot([result.lrs[i]], [result.losses[i]], "o", color="tab:red", label=f"steepest: {result.suggestion:.2g}")
    ax.legend()
    ax.set_title("learning-rate range test")
    low, first = min(result.losses), result.losses[0]
    ax.set_ylim(low - 0.05 * (first - low + 1e-3), max(first, low) + 0.5 * (first - low + 1e-3))  # not the blow-up
    save(fig, folder / "lr_find.png")
