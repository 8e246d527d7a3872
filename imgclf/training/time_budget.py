"""``--time 10m``: a run planned for the time it has.

Before the first epoch, a few real training steps of the model (a copy: its weights and random state stay as they
were) and a forward pass over a batch are timed. With the time already spent preparing the data and an estimate of
the run's end (validation, the final evaluation, the report), that gives the number of epochs that fits, and the
one-cycle or cosine schedule is planned for exactly those epochs, so the learning rate anneals to its end instead of
being cut off half way as a plain time limit would (Ultralytics' ``time=``). With ``--epochs`` too, the smaller
wins. :class:`TimeLimit` stops after an epoch should the epochs prove slower than measured, so the run ends within
its budget either way.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed as ddp
from ..config import MAX_PLANNED_EPOCHS, TrainConfig, default_warmup_epochs, duration
from ..data.prepare import Prepared
from ..data.transforms import normalize
from ..device import autocast_dtype, autocast_for
from ..errors import UserError
from .callbacks import Callback
from ..inference.tta import VIEWS as TTA_VIEWS
from .optim import create_optimizer, schedule_steps

if TYPE_CHECKING:
    from .trainer import Trainer

EPOCH_OVERHEAD = 1.1  # the loader, the metrics and the checkpoint of each epoch, beyond its steps
FINISH_S = {True: 10.0, False: 3.0}  # the end of a run beyond its forward passes: with plots and the report, without
WARM_STEPS = 3
TIMED_STEPS = (3, 30)  # at least 3 steps, and more while they take under TIMED_FOR_S in all
TIMED_FOR_S = 2.0
REPLAN_MARGIN = 1.02  # epochs vary by a few per cent: the corrected plan keeps that much room
RECENT_EPOCHS = 3  # the epochs whose median time the plan is corrected from


def time_steps(net: nn.Module, cfg: TrainConfig, prepared: Prepared, device: torch.device, batch: int,
               seconds: float = TIMED_FOR_S) -> tuple[float, float]:
    """(seconds per training step of ``batch`` images, seconds per image of a forward pass), timed on a copy of
    ``net`` with the run's optimizer, precision and memory format, on training images, for about ``seconds``."""
    model = copy.deepcopy(net).train()
    optimizer = create_optimizer(model, cfg)
    dtype = autocast_dtype(cfg.precision, device)
    images = prepared.splits["train"].x
    mean, std = (torch.tensor(v, device=device) for v in (cfg.mean, cfg.std))
    x = normalize(torch.as_tensor(images[:batch]).to(device), mean, std, cfg.channels_last)
    rng = torch.random.get_rng_state()
    y = torch.randint(0, len(prepared.classes), (len(x),), device=device)

    def step() -> None:
        with autocast_for(device, dtype):
            out = model(x)
        logits = out[0] if isinstance(out, (tuple, list)) else out
        F.cross_entropy(logits.float(), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    try:
        for _ in range(WARM_STEPS):  # the first steps allocate and pick their kernels
            step()
        times: list[float] = []
        while len(times) < TIMED_STEPS[1] and (len(times) < TIMED_STEPS[0] or sum(times) < seconds):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        per_step = statistics.median(times) * math.ceil(batch / len(x))  # the median: a machine's hiccup is not a step
        model.eval()
        with torch.no_grad(), autocast_for(device, dtype):
            model(x)
            started = time.perf_counter()
            model(x)
            per_image = (time.perf_counter() - started) / len(x)
    finally:
        torch.random.set_rng_state(rng)
    return per_step, per_image


def plan_epochs(cfg: TrainConfig, net: nn.Module, prepared: Prepared, device: torch.device, began: float,
                log: Callable[[str], None], timed: tuple[float, float] | None = None) -> "TimeLimit":
    """Set ``cfg.epochs`` (and the warm-up and head epochs that depend on it) to what fits ``cfg.time`` seconds
    from ``began`` (a ``time.time()``); returns the callback that corrects the plan from the first epochs' real
    time and holds the run to its budget. ``timed``: the run's steps as :func:`time_steps` gives them, where they
    were just measured (the precision's choice), so they are not timed again."""
    n = {name: len(split) for name, split in prepared.splits.items()}
    per_process = max(1, cfg.batch_size // max(1, ddp.world_size()))
    # rank 0's timings and clock for every process: epochs that differed would leave DDP waiting forever
    step_s, image_s, spent = ddp.broadcast((*(timed or time_steps(net, cfg, prepared, device, per_process)),
                                            time.time() - began) if ddp.is_main() else None)
    steps = math.ceil(math.ceil(n["train"] / ddp.world_size()) / per_process)
    frozen = cfg.mode == "feature-extract" and cfg.augment == "none" and cfg.feature_cache != "none"
    once = (n["train"] + n.get("val", 0)) * image_s if frozen else 0.0  # the features, computed once
    epoch_s = n.get("val", 0) * image_s + (0.0 if frozen else steps * step_s * EPOCH_OVERHEAD)
    # the final evaluation (each test-time view a pass), the thresholds' and the report's passes over validation
    finish_s = (n.get("test", 0) * (TTA_VIEWS if cfg.tta else 1) + 2 * n.get("val", 0)) * image_s \
        + FINISH_S[cfg.plots]
    room = cfg.time - spent - finish_s - once
    if frozen and cfg.epochs == MAX_PLANNED_EPOCHS:  # epochs of a head on cached features cost next to nothing
        cfg.epochs = TrainConfig.__dataclass_fields__["epochs"].default
    fits = int(room // epoch_s) if epoch_s > 0 else cfg.epochs
    if fits < 1:
        need = spent + finish_s + once + epoch_s
        raise UserError(f"--time {duration(cfg.time)}: one epoch of {n['train']} images takes about {epoch_s:.0f} s "
                        f"here, and with the {spent:.0f} s spent preparing and about {finish_s:.0f} s to evaluate "
                        f"and report at the end, the run needs at least {math.ceil(need)} s; give --time "
                        f"{duration(math.ceil(need * 1.1))} or more, or train on a sample (--limit N)")
    most = cfg.epochs
    _set_epochs(cfg, max(1, min(fits, most)))
    bound = "the budget" if fits <= most else f"--epochs {most}"
    log(f"time budget {duration(cfg.time)}: {spent:.0f} s spent preparing; an epoch takes about {epoch_s:.1f} s "
        f"(a step of {per_process} images {step_s * 1000:.0f} ms, measured), the end of the run about "
        f"{finish_s:.0f} s: {cfg.epochs} epoch(s) ({bound} decides), the {cfg.scheduler} schedule planned for them")
    return TimeLimit(began + cfg.time, finish_s, cfg, most)


def _set_epochs(cfg: TrainConfig, epochs: int) -> None:
    """``cfg.epochs``, with the warm-up (where it is the default) and the head epochs that follow it."""
    if cfg.warmup_epochs == default_warmup_epochs(cfg.scheduler, cfg.epochs):
        cfg.warmup_epochs = default_warmup_epochs(cfg.scheduler, epochs)
    cfg.epochs = epochs
    if cfg.head_epochs and cfg.head_epochs >= cfg.epochs:
        cfg.head_epochs = cfg.epochs - 1


class TimeLimit(Callback):
    """Holds a timed run to its budget. After each epoch it plans the epochs again from the time they really take
    (the timed steps before training run on a copy, without the loader, and read 10-25% slow or fast; and a shared
    machine's pace changes): after the first epoch and while in the first quarter of the run the plan may grow or
    shrink, later only shrink (a schedule already annealing would raise its rate again), and the schedule is
    stretched or shrunk to match, so the budget is used and the learning rate still anneals to its end. Under that,
    the safety net: training stops after an epoch when another would end past ``deadline`` (a ``time.time()``),
    the run's end (``finish_s``) included."""

    def __init__(self, deadline: float, finish_s: float, cfg: TrainConfig | None = None,
                 most: int = MAX_PLANNED_EPOCHS) -> None:
        self.deadline, self.finish_s, self.cfg, self.most = deadline, finish_s, cfg, most
        self.config_file: Path | None = None  # where the corrected plan is saved (config.yaml: a resume needs it)
        self.times: list[float] = []

    def on_epoch_begin(self, trainer: "Trainer", epoch: int) -> None:
        self.epoch_began = time.time()

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        last = time.time() - self.epoch_began
        self.times.append(last)
        if self.cfg is not None and trainer.schedule is not None:
            self._replan(trainer, epoch)
        late = time.time() + last + self.finish_s > self.deadline
        if epoch + 1 < trainer.epochs and ddp.any_process(late):  # every process stops after the same epoch
            trainer.stop_training = True
            trainer.log(f"time budget: stopping after epoch {epoch + 1} of {trainer.epochs}, since another "
                        f"({last:.0f} s) would end past it")

    def _replan(self, trainer: "Trainer", epoch: int) -> None:
        # the first epoch also pays for what happens once (allocation, the data overview's figures); after it,
        # the last few epochs tell the machine's pace now
        epoch_s = statistics.median(self.times[1:][-RECENT_EPOCHS:] or self.times) * REPLAN_MARGIN
        fits = epoch + 1 + int((self.deadline - time.time() - self.finish_s) // epoch_s)
        early = epoch == 0 or epoch + 1 <= trainer.epochs / 4
        planned = ddp.broadcast(min(self.most if early else trainer.epochs, fits) if ddp.is_main() else None)
        if planned == trainer.epochs or planned <= max(epoch + 1, self.cfg.head_epochs or 0):
            return  # the plan holds, or there is no room for more: the safety net stops the run
        before = trainer.epochs
        _set_epochs(self.cfg, planned)
        trainer.schedule.replan(*schedule_steps(self.cfg, trainer.global_step // (epoch + 1)), trainer.global_step)
        trainer.epochs = planned
        if self.config_file is not None and ddp.is_main():
            self.cfg.save(self.config_file)
        trainer.log(f"time budget: epochs take {epoch_s / REPLAN_MARGIN:.1f} s, so {planned} epochs fit instead of "
                    f"{before}; the {self.cfg.scheduler} schedule is {'stretched' if planned > before else 'shrunk'} "
                    f"to match")
