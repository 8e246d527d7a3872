"""``--batch-size auto``: the batch whose training step fits the memory this process may use, measured, not guessed.

One forward and backward pass of the real model (its input size, precision and memory format) at two small batches
gives the memory a step takes per image and the part that does not grow with the batch; the largest batch under the
budget follows (half of the memory available by default, a cgroup's limit included; on CUDA the device's free
memory, as Ultralytics' ``batch=-1`` does). A batch that does not fit (the recipe's 128, or the user's) becomes
smaller batches whose gradients are accumulated into one optimizer step of the same size, so the learning rate and
the results stay the recipe's. Where not even a batch of 8 fits, the run is refused before its first step, naming
the ways out, rather than killed by the kernel half way through an epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .. import distributed as ddp
from ..config import TrainConfig
from ..data.loader import without_lone_image
from ..device import autocast_dtype, autocast_for
from ..errors import UserError
from ..models import is_cnn
from ..resources import PeakMemory, available_memory
from .optim import MIN_SCHEDULED_STEPS

RECIPE_BATCH = 128  # the batch the default learning rates were tuned for
LARGE_INPUT = 96  # from this input size on (and for every pretrained model) the batch is measured by default
BUDGET_SHARE = 0.5  # of the memory available: room for the data, the loader's workers and the rest of the machine
MEASURED_AT = (2, 8)
REPEATS = 2  # the least of two peaks per size: a one-off allocation (a kernel's workspace) would count as images
LEAST = 8  # batches are multiples of 8; below it, batch-norm statistics are too noisy to be worth training with


@dataclass
class StepCost:
    """Bytes a training step takes: ``fixed`` (weights, gradients, optimizer state) plus ``per_image``."""

    per_image: float
    fixed: float

    def fits(self, budget: float) -> int:
        """The largest batch under ``budget`` bytes (0 where the fixed part alone is over it)."""
        return max(0, int((budget - self.fixed) // max(self.per_image, 1.0)))


def planned(cfg: TrainConfig) -> bool:
    """Whether the batch of this run is measured: ``--batch-size auto`` (the default) for inputs from 96 px or a
    pretrained model, and a batch the user chose at those sizes too (it may not fit). Feature extraction trains a
    head on cached features and a resumed run keeps its plan."""
    large = cfg.img_size >= LARGE_INPUT or ((cfg.pretrained or bool(cfg.weights)) and not is_cnn(cfg.model))
    return cfg.batch_plan is None and cfg.mode != "feature-extract" and large


def measure_step(net: nn.Module, cfg: TrainConfig, device: torch.device) -> StepCost:
    """The memory of one training step of ``net`` as ``cfg`` trains it, from forward and backward passes at two
    small batches on random images. The weights, batch-norm statistics and random state are as they were before."""
    dtype = autocast_dtype(cfg.precision, device)
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    rng = torch.random.get_rng_state()
    training = net.training
    net.train()
    peaks = {}

    def step(batch: int) -> None:
        x = torch.randn(batch, cfg.channels, cfg.img_size, cfg.img_size, device=device)
        x = x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x
        with autocast_for(device, dtype):
            out = net(x)
        outputs = out if isinstance(out, (tuple, list)) else (out,)  # GoogLeNet's auxiliary logits too
        sum(o.float().mean() for o in outputs).backward()
        net.zero_grad(set_to_none=True)

    try:
        for batch in MEASURED_AT:  # a first pass at each size allocates once what its steps reuse (workspaces)
            step(batch)
        for _ in range(REPEATS):
            for batch in MEASURED_AT:
                with PeakMemory(device) as peak:
                    step(batch)
                peaks[batch] = min(peaks.get(batch, math.inf), peak.peak)
    finally:
        with torch.no_grad():
            for name, value in net.named_buffers():
                value.copy_(buffers[name])
        torch.random.set_rng_state(rng)
        net.train(training)
    (small, a), (large, b) = sorted(peaks.items())
    per_image = max((b - a) / (large - small), 1.0)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    moments = 2 if cfg.optimizer in ("adam", "adamw") else 1  # the optimizer's state, made at its first step
    state = 4 * trainable * moments + (4 * trainable if cfg.ema else 0)
    return StepCost(per_image, max(a - small * per_image, 0.0) + state)


def budget(device: torch.device) -> tuple[float, str]:
    """(bytes a training step may take, how that was decided)."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        return BUDGET_SHARE * free, f"half of the GPU's {free / 1e9:.1f} GB free"
    room = available_memory() / max(1, ddp.world_size())  # the processes of a CPU run share the machine
    share = " this process's share of" if ddp.world_size() > 1 else ""
    return BUDGET_SHARE * room, f"half of{share} the {room / 1e9:.1f} GB of memory available"


def _split(asked: int, fit: int) -> tuple[int, int]:
    """(batch, accumulation) for a step of ``asked`` images in batches of at most ``fit``: the largest multiple of
    8 that divides ``asked``, so that the step is exactly the asked size, else the nearest even split."""
    exact = [m for m in range(LEAST, fit + 1, LEAST) if asked % m == 0]
    if exact:
        return max(exact), asked // max(exact)
    parts = math.ceil(asked / fit)
    return math.ceil(asked / parts), parts


def plan_batch(cfg: TrainConfig, net: nn.Module, device: torch.device, n_train: int,
               log: Callable[[str], None]) -> None:
    """Settle ``cfg.batch_size`` (None: auto) and ``cfg.accumulate`` for the memory this process may use, and say
    how in the log and in ``cfg.batch_plan`` (config.yaml)."""
    asked = cfg.batch_size or RECIPE_BATCH
    if not planned(cfg) or not PeakMemory.available(device):
        cfg.batch_size = asked
        return
    # Rank 0 measures and decides for every process: plans that differed would leave DDP waiting forever.
    batch, parts, plan, refusal = ddp.broadcast(_decide(cfg, net, device, n_train, asked) if ddp.is_main() else None)
    if refusal:
        raise UserError(refusal)
    cfg.batch_size, cfg.accumulate, cfg.batch_plan = batch, cfg.accumulate * parts, plan
    log(f"batch size: {plan}")


def _decide(cfg: TrainConfig, net: nn.Module, device: torch.device, n_train: int, asked: int
            ) -> tuple[int, int, str, str | None]:
    """(global batch, batches accumulated per step, the plan in words, or else why nothing fits)."""
    cost, (room, why), world = measure_step(net, cfg, device), budget(device), max(1, ddp.world_size())
    least = min(LEAST, max(1, n_train // world))
    fit = cost.fits(room)
    measured = (f"a training step of {cfg.model} at {cfg.img_size} px takes {cost.fixed / 1e9:.2f} GB + "
                f"{cost.per_image / 1e6:.0f} MB per image (measured at batches of {MEASURED_AT[0]} and "
                f"{MEASURED_AT[1]}); budget {room / 1e9:.1f} GB ({why})")
    if fit < least:
        ways = [w for w in ("--grad-checkpointing (keeps fewer activations, about a third more compute)"
                            if not cfg.grad_checkpointing else "",
                            f"a smaller --img-size than {cfg.img_size}",
                            "--mode feature-extract (trains the head alone)" if cfg.mode == "fine-tune" else "")
                if w]
        return asked, 1, "", f"not even a batch of {least} fits: {measured}; try {', or '.join(ways)}"
    per_process = math.ceil(asked / world)
    fit = fit // LEAST * LEAST if fit >= LEAST else fit
    if per_process <= fit:
        return asked, 1, f"{asked} fits: {measured}", None
    batch, parts = _split(per_process, fit)
    return (batch * world, parts, f"{asked} asked, batches of {batch} fit: {measured}; {parts} batches accumulated "
                                  f"per optimizer step keep its {batch * parts * world} images", None)


def fit_batch_size(cfg: TrainConfig, n_train: int, log: Callable[[str], None]) -> None:
    """A batch no larger than the training split, and no last batch of a single image (batch-norm cannot train
    on one), so that every image is used in every epoch; then a schedule only if there are steps to schedule."""
    batch = without_lone_image(cfg.batch_size, n_train)
    if batch != cfg.batch_size:
        why = f"the training split has {n_train} images" if cfg.batch_size >= n_train else \
            f"so that no batch of the {n_train} training images holds a single image"
        log(f"batch size {batch} instead of {cfg.batch_size}: {why}")
        cfg.batch_size = batch
    steps = cfg.epochs * math.ceil(math.ceil(n_train / batch) / cfg.accumulate)  # optimizer steps
    if cfg.scheduler in ("onecycle", "cosine") and steps < MIN_SCHEDULED_STEPS:
        log(f"{steps} training step(s) in all are too few for the {cfg.scheduler} schedule (it needs "
            f"{MIN_SCHEDULED_STEPS}): the learning rate stays at {cfg.lr:g} (scheduler: none)")
        cfg.scheduler, cfg.warmup_epochs = "none", 0.0
