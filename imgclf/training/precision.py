"""``--precision auto`` where the CPU's flags cannot say whether bfloat16 is the faster: measured on the real model.

A CPU with AMX computes bf16 several times faster than fp32, and one with neither AMX nor AVX-512 BF16 emulates it,
several times slower: both are decided from the flags (:func:`imgclf.device.fast_bf16`). In between, AVX-512 BF16
without AMX, it depends on the chip: the default cnn's training step ran at 0.79x fp32's speed in bf16 on a Xeon
(Cooper Lake) and at 1.60x on an AMD EPYC (Zen 4), the same code (bench/precision.py). There a run long enough to
gain from it times a few training steps of its model in both and trains in the faster; config.yaml records which,
so a resumed run keeps it.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn

from .. import distributed as ddp
from ..config import TrainConfig
from ..data.prepare import Prepared
from ..device import fast_bf16
from . import time_budget

MIN_STEPS = 2000  # shorter runs train in fp32 unmeasured: timing both (about 2 s) would cost what it might save
MIN_GAIN = 1.1  # bf16 rounds every product: it is taken only where it is clearly the faster
TIMED_FOR_S = 1.0  # of steps in each precision: enough for a difference of 10%, and the start waits for it


def settle_precision(cfg: TrainConfig, net: nn.Module, prepared: Prepared, device: torch.device,
                     log: Callable[[str], None]) -> tuple[float, float] | None:
    """Turn ``cfg.precision`` ``auto`` into ``bf16`` or ``fp32`` by timing training steps of ``net`` in both, where
    the device leaves the choice open and the run is long enough for it to matter; else leave it as it is. Gives
    rank 0's timing of the precision chosen (``time_budget.time_steps``' step and image), for the time budget's plan."""
    if cfg.precision != "auto" or fast_bf16(device) is not None:
        return None
    if cfg.mode == "feature-extract" and cfg.augment == "none" and cfg.feature_cache != "none":
        return None  # the steps train a lone head on cached features: nothing to gain
    per_process = max(1, cfg.batch_size // max(1, ddp.world_size()))
    steps = cfg.epochs * math.ceil(len(prepared.splits["train"]) / ddp.world_size() / per_process)
    if steps < MIN_STEPS:
        return None
    timed: dict[str, tuple[float, float]] = {}
    if ddp.is_main():
        for precision in ("fp32", "bf16"):
            trial = copy.copy(cfg)
            trial.precision = precision
            timed[precision] = time_budget.time_steps(net, trial, prepared, device, per_process, TIMED_FOR_S)
    timed = ddp.broadcast(timed)  # rank 0's timings for every process: all train in one precision
    cfg.precision = "bf16" if timed["fp32"][0] >= MIN_GAIN * timed["bf16"][0] else "fp32"
    log(f"precision auto: a training step of {per_process} images takes {timed['bf16'][0] * 1000:.0f} ms in bf16 "
        f"and {timed['fp32'][0] * 1000:.0f} ms in fp32 on this CPU (measured), so the run trains in {cfg.precision}")
    return timed[cfg.precision]
