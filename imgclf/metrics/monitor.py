"""Which epoch is best: the rule the best checkpoint, early stopping and every report of "the best epoch" share.

No torch here, so the diagnosis and the plots can ask without importing it.
"""
from __future__ import annotations

import math
from typing import Any

# Keras' metric names -> ours, so that ``monitor="val_accuracy"`` from a Keras script means what it says.
KERAS_NAMES = {"accuracy": "train_acc", "acc": "train_acc", "loss": "train_loss", "val_accuracy": "val_acc"}
MODES = ("auto", "min", "max")


def metric_name(name: str) -> str:
    """Our name for a metric given by its Keras name (``val_accuracy``) or ours (``val_acc``)."""
    return KERAS_NAMES.get(name, name)


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """'max' or 'min'; ``auto`` (Keras' default): 'max' for accuracies, F1 and mAP, 'min' for losses."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of: {', '.join(MODES)}")
    return mode if mode != "auto" else ("max" if metric_name(monitor).endswith(("acc", "f1", "map")) else "min")


def partner(monitor: str) -> str | None:
    """The metric that breaks ties on ``monitor``: the loss for an accuracy or an F1, the accuracy for a loss."""
    for a, b in (("_balanced_acc", "_loss"), ("_macro_f1", "_loss"), ("_micro_f1", "_loss"), ("_map", "_loss"),
                 ("_acc", "_loss"), ("_loss", "_acc")):
        if monitor.endswith(a):
            return monitor[: -len(a)] + b
    return None


class Monitor:
    """The bookkeeping of callbacks that watch one metric for improvement (checkpoint, early stopping).

    An epoch is better than the best so far when the monitored value improves by more than ``min_delta``. With
    ``tie_break`` it is also better when it is no worse and the partner metric is better (val_acc ties broken by
    val_loss, and the other way round): otherwise a validation set the model gets 100% right from epoch 1 would
    keep epoch 1 forever, and the kept weights could be worse than the last epoch's by both measures.
    """

    def __init__(self, monitor: str, min_delta: float = 0.0, mode: str = "auto", tie_break: bool = True) -> None:
        self.monitor, self.min_delta = metric_name(monitor), abs(min_delta)
        self.mode = monitor_mode(self.monitor, mode)
        self.partner = partner(self.monitor) if tie_break else None
        self.best = -math.inf if self.mode == "max" else math.inf
        self.best_partner: float | None = None
        self.best_epoch = -1

    def _better(self, value: float, than: float, by: float) -> bool:
        return value > than + by if self.mode == "max" else value < than - by

    def improved(self, value: float, logs: dict[str, float] | None = None) -> bool:
        if self._better(value, self.best, self.min_delta):
            return True
        no_worse = not self._better(self.best, value, 0.0)
        other = (logs or {}).get(self.partner)
        if not no_worse or other is None or self.best_partner is None:
            return False
        # the partner is a loss when the monitor is an accuracy, and an accuracy when it is a loss
        return other < self.best_partner if self.mode == "max" else other > self.best_partner

    def update(self, epoch: int, value: float, logs: dict[str, float]) -> None:
        self.best, self.best_epoch, self.best_partner = value, epoch, logs.get(self.partner)

    def value(self, logs: dict[str, float]) -> float:
        if self.monitor not in logs:
            raise KeyError(f"{type(self).__name__} monitors {self.monitor!r}, which is not logged "
                           f"(logged: {', '.join(logs)}); validation metrics need a validation split")
        return logs[self.monitor]

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_partner": self.best_partner}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.best_partner = state.get("best_partner")


def best_epoch(rows: list[dict[str, float]], monitor: str, min_delta: float = 0.0) -> int | None:
    """The epoch (from 1) that the best checkpoint keeps, replayed from a run's per-epoch metrics."""
    watch = Monitor(monitor, min_delta)
    for row in rows:
        if watch.monitor in row and watch.improved(row[watch.monitor], row):
            watch.update(int(row["epoch"]), row[watch.monitor], row)
    return watch.best_epoch if watch.best_epoch >= 0 else None
