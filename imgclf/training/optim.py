"""Optimizers (torch's, with timm's rule of no weight decay on biases and normalisation weights) and per-step
learning-rate schedules from torch and timm. timm is imported only for its cosine schedule: importing it imports
torchvision's model zoo too, seconds of start-up that a cnn run has no use for."""
from __future__ import annotations

import torch
from torch import nn

from ..config import TrainConfig, default_warmup_epochs


def create_optimizer(params: nn.Module | list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum), Adam or AdamW over a model's trainable parameters, with no weight decay on
    biases and normalisation weights (timm's default: 1-d tensors), or over ready-made parameter groups (their own
    lr and decay)."""
    groups = params if isinstance(params, list) else decay_groups(params, cfg.wd)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=cfg.momentum, nesterov=True)
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(groups, lr=cfg.learning_rate)


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The trainable parameters in two groups: with ``weight_decay``, and without it for biases and 1-d tensors
    (batch-norm's scale and shift), as timm's ``param_groups_weight_decay`` splits them."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


class StepSchedule:
    """A learning-rate schedule advanced once per optimizer step (one-cycle from torch, cosine from timm).

    Each parameter group peaks at its own starting learning rate (a backbone lower than its head).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, total_steps: int, warmup_steps: int) -> None:
        self.kind, self.optimizer = kind, optimizer
        self.peaks = [group["lr"] for group in optimizer.param_groups]
        self._build(total_steps, warmup_steps)

    def _build(self, total_steps: int, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps
        if self.kind == "onecycle":
            # torch needs at least two steps in each of the warm-up and the annealing phases.
            warmup_steps = min(max(warmup_steps, 2), total_steps - 2)
            self.impl = torch.optim.lr_scheduler.OneCycleLR(
                self.optimizer, max_lr=self.peaks, total_steps=total_steps, pct_start=warmup_steps / total_steps,
                anneal_strategy="cos")
        else:
            from timm.scheduler import CosineLRScheduler

            max_lr = max(self.peaks)
            self.impl = CosineLRScheduler(self.optimizer, t_initial=total_steps, lr_min=max_lr * 1e-3,
                                          warmup_t=warmup_steps, warmup_lr_init=max_lr * 1e-2, t_in_epochs=False)

    def replan(self, total_steps: int, warmup_steps: int, done: int) -> None:
        """The same schedule stretched or shrunk to ``total_steps`` with ``done`` of them taken (a timed run's
        plan corrected by its first epochs): the learning rate continues from where the new plan puts step
        ``done``, a small step while warming up."""
        self._build(total_steps, warmup_steps)
        for step in range(1, done + 1):
            self.step(step)

    def step(self, global_step: int) -> None:
        """Set the learning rate for the step after ``global_step`` optimizer steps."""
        if self.kind == "onecycle":
            if global_step < self.impl.total_steps:
                self.impl.step()
        else:
            self.impl.step_update(global_step)

    def state_dict(self) -> dict:
        return self.impl.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.impl.load_state_dict(state)


# OneCycleLR needs at least two steps in each of its phases; fewer steps in all train at a constant rate.
MIN_SCHEDULED_STEPS = 5


def create_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> StepSchedule | None:
    """The per-step schedule for ``cfg.scheduler``; None for ``plateau`` (a callback) and ``none`` (constant)."""
    if cfg.scheduler not in ("onecycle", "cosine"):
        return None
    total, warmup = schedule_steps(cfg, steps_per_epoch)
    if total < MIN_SCHEDULED_STEPS:
        raise ValueError(f"a {cfg.scheduler} schedule needs at least {MIN_SCHEDULED_STEPS} steps, got {total}")
    return StepSchedule(optimizer, cfg.scheduler, total, warmup)


def schedule_steps(cfg: TrainConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(optimizer steps in all, steps of warm-up) of ``cfg``'s epochs."""
    total = cfg.epochs * steps_per_epoch
    epochs = cfg.warmup_epochs if cfg.warmup_epochs is not None else default_warmup_epochs(cfg.scheduler, cfg.epochs)
    return total, min(total // 2, round(epochs * steps_per_epoch))
