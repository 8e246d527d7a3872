"""Keras-style callbacks: small classes with hooks the :class:`~imgclf.train.trainer.Trainer` calls.

Subclass :class:`Callback` and override any hook; ``trainer.stop_training = True`` ends training after the
epoch. ``state_dict``/``load_state_dict`` carry a callback's memory (best value, patience) across ``--resume``.
"""
from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

if TYPE_CHECKING:
    from .trainer import Trainer


def monitor_mode(monitor: str) -> str:
    """'max' for accuracies, 'min' for losses."""
    return "max" if monitor.endswith("acc") else "min"


class Callback:
    """Base class: every hook does nothing."""

    def on_train_begin(self, trainer: "Trainer") -> None: ...

    def on_epoch_begin(self, trainer: "Trainer", epoch: int) -> None: ...

    def on_batch_end(self, trainer: "Trainer", step: int, logs: dict[str, float]) -> None:
        """Called every 10 steps and at the epoch's last step with the running ``loss`` and ``acc``."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: "Trainer") -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class _Monitor(Callback):
    """Shared bookkeeping for callbacks that watch one metric for improvement."""

    def __init__(self, monitor: str, min_delta: float = 0.0) -> None:
        self.monitor, self.min_delta, self.mode = monitor, abs(min_delta), monitor_mode(monitor)
        self.best = -math.inf if self.mode == "max" else math.inf
        self.best_epoch = -1

    def improved(self, value: float) -> bool:
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def value(self, logs: dict[str, float]) -> float:
        if self.monitor not in logs:
            raise KeyError(f"{type(self).__name__} monitors {self.monitor!r}, which is not logged "
                           f"(logged: {', '.join(logs)}); validation metrics need a validation split")
        return logs[self.monitor]

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]


class ModelCheckpoint(_Monitor):
    """Keep the best weights by ``monitor`` in ``path`` (safetensors), replacing them only on improvement."""

    def __init__(self, path: Path, monitor: str = "val_acc", min_delta: float = 0.0) -> None:
        super().__init__(monitor, min_delta)
        self.path = Path(path)

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        value = self.value(logs)
        if self.improved(value):
            self.best, self.best_epoch = value, epoch
            trainer.save_weights(self.path, {"epoch": str(epoch + 1), self.monitor: f"{value:.6f}"})


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0) -> None:
        super().__init__(monitor, min_delta)
        self.patience, self.wait = patience, 0

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        value = self.value(logs)
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.stop_training = True
            trainer.log(f"early stopping: {self.monitor} has not improved for {self.patience} epochs "
                        f"(best {self.best:.4f} at epoch {self.best_epoch + 1})")

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.wait = state["wait"]


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs (torch's scheduler)."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.2, patience: int = 2, min_delta: float = 0.0,
                 min_lr: float = 0.0) -> None:
        self.monitor, self.factor, self.patience, self.min_delta, self.min_lr = \
            monitor, factor, patience, min_delta, min_lr
        self.scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._pending: dict[str, Any] | None = None

    def on_train_begin(self, trainer: "Trainer") -> None:
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            trainer.optimizer, mode=monitor_mode(self.monitor), factor=self.factor, patience=self.patience,
            threshold=self.min_delta, threshold_mode="abs", min_lr=self.min_lr)
        if self._pending is not None:
            self.scheduler.load_state_dict(self._pending)

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        before = trainer.optimizer.param_groups[0]["lr"]
        self.scheduler.step(logs[self.monitor])
        after = trainer.optimizer.param_groups[0]["lr"]
        if after < before:
            trainer.log(f"reduce-lr-on-plateau: {self.monitor} stalled, learning rate {before:.3g} -> {after:.3g}")

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict() if self.scheduler else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state


class CSVLogger(Callback):
    """One row per epoch in ``path``; on resume, rows of epochs that will be re-run are dropped."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_begin(self, trainer: "Trainer") -> None:
        if not self.path.exists():
            return
        with self.path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= trainer.start_epoch]
        self._write(rows, mode="w")

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        self._write([{"epoch": epoch + 1, **{k: f"{v:.6g}" for k, v in logs.items()}}], mode="a")

    def _write(self, rows: list[dict], mode: str) -> None:
        if not rows:
            if mode == "w":
                self.path.unlink(missing_ok=True)
            return
        new = mode == "w" or not self.path.exists()
        with self.path.open(mode, newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            if new:
                writer.writeheader()
            writer.writerows(rows)


class ProgressBar(Callback):
    """A tqdm bar per epoch with live loss and accuracy, then one summary line per epoch."""

    def __init__(self, refresh_every: int = 10) -> None:
        self.refresh_every, self.bar = refresh_every, None
        self.started = 0.0

    def on_epoch_begin(self, trainer: "Trainer", epoch: int) -> None:
        self.started = time.perf_counter()
        self.bar = tqdm(total=trainer.steps_per_epoch, desc=f"epoch {epoch + 1}/{trainer.epochs}", unit="batch",
                        leave=False, dynamic_ncols=True, disable=None)

    def on_batch_end(self, trainer: "Trainer", step: int, logs: dict[str, float]) -> None:
        if step % self.refresh_every == 0 or step == trainer.steps_per_epoch:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", acc=f"{logs['acc']:.4f}", refresh=False)
            self.bar.update(step - self.bar.n)

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        self.bar.close()
        parts = [f"epoch {epoch + 1:>{len(str(trainer.epochs))}}/{trainer.epochs}",
                 f"loss {logs['train_loss']:.4f}", f"acc {logs['train_acc']:.4f}"]
        if "val_loss" in logs:
            parts += [f"val_loss {logs['val_loss']:.4f}", f"val_acc {logs['val_acc']:.4f}"]
        parts += [f"lr {logs['lr']:.2e}", f"{logs['time']:.1f}s"]
        trainer.log("  ".join(parts))

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.bar is not None:
            self.bar.close()
