"""Keras-style callbacks: small classes with hooks the :class:`~imgclf.training.trainer.Trainer` calls.

Subclass :class:`Callback` and override any hook; ``trainer.stop_training = True`` ends training after the
epoch. ``state_dict``/``load_state_dict`` carry a callback's memory (best value, patience) across ``--resume``.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..data.progress import Progress
from ..files import CsvWriter
from ..metrics.monitor import KERAS_NAMES, Monitor, metric_name, monitor_mode

if TYPE_CHECKING:
    from .trainer import Trainer


class Callback:
    """Base class: every hook does nothing."""

    # True for callbacks that print or write files: under torchrun only rank 0 runs them (the others would write
    # the same file at once); those that decide (early stopping, plateau) run everywhere and decide alike.
    rank_zero_only = False

    def on_train_begin(self, trainer: "Trainer") -> None: ...

    def on_epoch_begin(self, trainer: "Trainer", epoch: int) -> None: ...

    def on_batch_end(self, trainer: "Trainer", step: int, logs: dict[str, float]) -> None:
        """Called after the first step, every 10 steps and at the epoch's last step with the running ``loss`` and
        ``acc``."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: "Trainer") -> None: ...

    def on_run_end(self, trainer: "Trainer", run: Path, results: dict[str, float]) -> None:
        """Called by :func:`imgclf.train` once the run directory is complete (best weights, evaluation, report),
        with the final evaluation's figures (``test_accuracy``...); not after an interrupted or failed run."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _keras_logs(logs: dict[str, float]) -> dict[str, float]:
    """``logs`` under our names and Keras' too, for file names such as ``{epoch:02d}-{val_accuracy:.2f}``."""
    return logs | {keras: logs[ours] for keras, ours in KERAS_NAMES.items() if ours in logs}


class ModelCheckpoint(Monitor, Callback):
    """Save the weights (safetensors) after an epoch, Keras' way: ``ModelCheckpoint(filepath, monitor="val_loss",
    verbose=0, save_best_only=False, save_weights_only=False, mode="auto", initial_value_threshold=None)``.

    ``filepath`` may hold ``{epoch:02d}`` and metric fields (``{val_loss:.2f}``); relative paths are taken from the
    current folder, as in Keras. The file is always safetensors, so another extension (Keras' ``.h5``,
    ``.keras``) is replaced by ``.safetensors``; whole models are not pickled, the run directory rebuilds them, so
    ``save_weights_only`` changes nothing. ``save_best_only=False`` saves every epoch. ``min_delta`` (ours) is the
    smallest change that counts as an improvement.
    """

    rank_zero_only = True

    def __init__(self, filepath: str | Path, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 initial_value_threshold: float | None = None, *, min_delta: float = 0.0) -> None:
        super().__init__(monitor, min_delta, mode)
        path = Path(filepath)
        suffix = path.suffix if "}" not in path.suffix else ""  # "{val_loss:.2f}" is a field, not an extension
        self.path = path if suffix == ".safetensors" else path.with_name(path.name[:len(path.name) - len(suffix)]
                                                                         + ".safetensors")
        self.renamed = self.path != path
        self.verbose, self.save_best_only, self.save_weights_only = verbose, save_best_only, save_weights_only
        if initial_value_threshold is not None:
            self.best = initial_value_threshold

    def on_train_begin(self, trainer: "Trainer") -> None:
        if self.renamed and self.verbose:
            trainer.log(f"ModelCheckpoint: weights are saved as safetensors, to {self.path}")

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        path = Path(str(self.path).format(epoch=epoch + 1, **_keras_logs(logs)))
        if not self.save_best_only:
            path.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_weights(path, {"epoch": str(epoch + 1)})
            if self.verbose:
                trainer.log(f"epoch {epoch + 1}: saving model to {path}")
            return
        value = self.value(logs)
        if self.improved(value, logs):
            if self.verbose:
                trainer.log(f"epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {value:.5f}, "
                            f"saving model to {path}")
            self.update(epoch, value, logs)
            path.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_weights(path, {"epoch": str(epoch + 1), self.monitor: f"{value:.6f}"})
        elif self.verbose:
            trainer.log(f"epoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")


class EarlyStopping(Monitor, Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs, Keras' way:
    ``EarlyStopping(monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
    restore_best_weights=False, start_from_epoch=0)``.

    Patience counts epochs without a ``min_delta`` gain of ``monitor`` alone, as in Keras (no tie-breaking).
    ``restore_best_weights`` puts the best epoch's weights back into the model in memory when training ends (as
    Keras 3 does); the run's own best checkpoint (``--monitor``) is what ``imgclf.load`` gives either way.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0) -> None:
        super().__init__(monitor, min_delta, mode, tie_break=False)
        self.patience, self.verbose, self.baseline = patience, verbose, baseline
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch
        self.wait = 0
        self.best_weights: dict[str, torch.Tensor] | None = None
        if baseline is not None:
            self.best = baseline

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        if epoch < self.start_from_epoch:
            return
        value = self.value(logs)
        if self.improved(value, logs):
            self.update(epoch, value, logs)
            self.wait = 0
            if self.restore_best_weights:
                self.best_weights = {k: v.detach().cpu().clone() for k, v in trainer.full_model.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience and epoch > 0:  # Keras never stops after the first epoch
            trainer.stop_training = True
            best = f"best {self.best:.4f} at epoch {self.best_epoch + 1}" if self.best_epoch >= 0 else \
                f"never better than the baseline {self.baseline}"
            trainer.log(f"early stopping: {self.monitor} has not improved for {self.wait} epoch(s) ({best})")

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.restore_best_weights and self.best_weights is not None and trainer.stop_signal is None:
            trainer.full_model.load_state_dict(self.best_weights)
            if self.verbose:
                trainer.log(f"restoring the weights of epoch {self.best_epoch + 1}, the best by {self.monitor}")

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"wait": self.wait, "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.wait, self.best_weights = state["wait"], state.get("best_weights")


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs, Keras' way and
    with Keras' counting: ``ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=10, verbose=0,
    mode="auto", min_delta=1e-4, cooldown=0, min_lr=0.0)``. The rate falls on the ``patience``-th epoch without a
    ``min_delta`` gain (torch's scheduler waits one more: it counts ``bad > patience``); each parameter group's
    rate is scaled, never below ``min_lr``. Given to :func:`imgclf.train`, it replaces the per-step schedule (the
    run's scheduler becomes ``plateau``), so the two never fight over the learning rate."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0) -> None:
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau factor must be between 0 and 1, got {factor}")
        self.monitor, self.factor, self.patience, self.verbose = metric_name(monitor), factor, patience, verbose
        self.mode, self.min_delta, self.cooldown, self.min_lr = monitor_mode(monitor, mode), min_delta, cooldown, min_lr
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = self.cooldown_counter = 0

    def _better(self, value: float) -> bool:
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        value = logs[self.monitor]
        if self.cooldown_counter > 0:  # Keras' order: the cooldown ticks first, and its last epoch can count
            self.cooldown_counter -= 1
            self.wait = 0
        if self._better(value):
            self.best, self.wait = value, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                self._reduce(trainer)
                self.cooldown_counter, self.wait = self.cooldown, 0

    def _reduce(self, trainer: "Trainer") -> None:
        before = trainer.optimizer.param_groups[0]["lr"]
        for group in trainer.optimizer.param_groups:
            group["lr"] = max(group["lr"] * self.factor, self.min_lr)
        after = trainer.optimizer.param_groups[0]["lr"]
        if after < before and self.verbose:
            trainer.log(f"reduce-lr-on-plateau: {self.monitor} stalled, learning rate {before:.3g} -> {after:.3g}")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # a checkpoint from before held torch's scheduler state: its bad-epoch count is our wait
        self.best = state.get("best", self.best)
        self.wait = state.get("wait", state.get("num_bad_epochs", 0))
        self.cooldown_counter = state.get("cooldown_counter", 0)


class CSVLogger(Callback):
    """One row per epoch in ``path``; on resume, rows of epochs that will be re-run are dropped."""

    rank_zero_only = True

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
            writer, header = CsvWriter(f), list(rows[0])
            if new:
                writer.writerow(header)
            writer.writerows([row.get(k, "") for k in header] for row in rows)


class ProgressBar(Callback):
    """A bar per epoch with live loss and accuracy (tqdm's in a terminal, its widget in Jupyter), then one summary
    line per epoch. Where no bar can be drawn (output piped or logged, a batch job), a line every ``every_s``
    seconds says how far the epoch is, so that a 10-minute epoch is not silent."""

    rank_zero_only = True

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s, self.bar = every_s, None

    def on_epoch_begin(self, trainer: "Trainer", epoch: int) -> None:
        self.bar = Progress(trainer.steps_per_epoch, f"epoch {epoch + 1}/{trainer.epochs}", "step",
                            every_s=self.every_s, say=trainer.log)

    def on_batch_end(self, trainer: "Trainer", step: int, logs: dict[str, float]) -> None:
        # the trainer reads the running figures (a device sync) after the first step and every 10, and calls this then
        self.bar.update(step, {"loss": f"{logs['loss']:.4f}", "acc": f"{logs['acc']:.4f}"})

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        self.bar.close()
        parts = [f"epoch {epoch + 1:>{len(str(trainer.epochs))}}/{trainer.epochs}",
                 f"loss {logs['train_loss']:.4f}", f"acc {logs['train_acc']:.4f}"]
        if "val_loss" in logs:
            parts += [f"val_loss {logs['val_loss']:.4f}", f"val_acc {logs['val_acc']:.4f}"]
        if "val_map" in logs:  # multi-label
            parts.append(f"val_map {logs['val_map']:.4f}")
        parts += [f"lr {logs['lr']:.2e}", f"{logs['time']:.1f}s"]
        if getattr(trainer, "processes", 1) > 1:
            parts.append(f"{trainer.processes} processes")
        trainer.log("  ".join(parts))

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.bar is not None:
            self.bar.close()
