"""The training loop: one epoch of optimisation, one pass of validation, callbacks around them.

Readable top to bottom: ``fit`` -> ``train_one_epoch`` -> ``validate``. Batches arrive as uint8 tensors and are
normalised on the device, so only a quarter of the bytes cross to a GPU. Without ``mean``/``std`` the batches are
used as they are: cached backbone features feeding a head.

With several processes (``model`` in DistributedDataParallel, the loader on a shard sampler) the loop is the same;
what differs is summed over the processes: the epoch's metrics, the validation, the decision to stop on a signal.
Every process saves its random state into the checkpoint, which rank 0 alone writes.
"""
from __future__ import annotations

import contextlib
import math
import pickle
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from .. import distributed as ddp
from ..data.batch_augment import BatchAugment
from ..data.tensors import ImageTensors
from ..data.transforms import normalize
from ..device import autocast_for
from ..errors import Interrupted, UserError
from ..metrics.by_task import validation_for
from ..models import main_logits
from ..resources import inference_batch
from ..task import MultiClass, Task
from .callbacks import Callback
from .distill import Distillation
from .optim import StepSchedule
from .transfer import train_mode


def rng_state() -> dict[str, Any]:
    """Every random generator's state as tensors and plain values (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


class Trainer:
    """Fits ``model`` on batches from ``train_loader``, validating on ``val`` after every epoch.

    ``full_model`` is the network whose weights are saved, when ``model`` is only part of it (a head trained on
    cached features); it defaults to ``model``.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                 train_loader: torch.utils.data.DataLoader, val: ImageTensors | None,
                 mean: list[float] | None, std: list[float] | None, device: torch.device, epochs: int,
                 schedule: StepSchedule | None = None, callbacks: list[Callback] | None = None,
                 precision: torch.dtype | None = None, channels_last: bool = True, checkpoint_path: Path | None = None,
                 weights_metadata: dict[str, str] | None = None, log: Callable[[str], None] = print,
                 full_model: nn.Module | None = None, mix: Callable | None = None, accumulate: int = 1,
                 ema_decay: float | None = None, monitor: str = "val_acc", task: Task | None = None,
                 augment: BatchAugment | None = None, teacher: Callable[[torch.Tensor], torch.Tensor] | None = None
                 ) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.task = task or MultiClass()  # what the outputs mean: the training accuracy and validation ask it
        # Inference runs on the module itself: a DistributedDataParallel forward would wait for the other processes,
        # and a compiled one would compile again for every new batch shape.
        inner = getattr(model, "_orig_mod", model)
        self.eval_model = inner.module if isinstance(inner, nn.parallel.DistributedDataParallel) else inner
        self.augment = augment  # batched augmentation of the uint8 batch on the device, before normalising
        self.full_model = full_model if full_model is not None else self.eval_model
        self.processes = ddp.world_size()
        self.train_loader, self.val, self.device, self.epochs = train_loader, val, device, epochs
        self.schedule, self.callbacks = schedule, list(callbacks or [])
        self.mean = torch.tensor(mean, device=device) if mean is not None else None
        self.std = torch.tensor(std, device=device) if std is not None else None
        # float16 needs its gradients scaled (bf16 has float32's range and does not)
        self.precision, self.channels_last = precision, channels_last
        self.scaler = torch.amp.GradScaler(device.type) if precision == torch.float16 else None
        self.checkpoint_path, self.weights_metadata, self.log = checkpoint_path, weights_metadata or {}, log
        self.steps_per_epoch = len(train_loader)
        # ``mix`` (Mixup/CutMix) turns (x, y) into (x, soft targets) for ``loss_fn``; ``accumulate`` batches make one
        # optimizer step (their gradients summed, each loss divided by ``accumulate``).
        self.mix, self.teacher, self.accumulate = mix, teacher, accumulate
        # With ``ema_decay`` an exponential moving average of the weights (timm's ModelEmaV3, decay warming up) is
        # updated after every step and validated beside them; an epoch whose EMA scores better by ``monitor`` offers
        # the EMA as its weights (``use_ema``) to the checkpoints.
        self.ema = None
        if ema_decay:
            from timm.utils import ModelEmaV3  # timm (and torchvision with it) only for a run that keeps an EMA

            self.ema = ModelEmaV3(self.eval_model, decay=ema_decay, use_warmup=True)
        self.monitor, self.use_ema = monitor, False
        self.start_epoch, self.global_step, self.stop_training = 0, 0, False
        self.history: list[dict[str, float]] = []
        # Where an interrupted epoch stands: the shuffle's random state at its start, the steps done, their sums.
        self.epoch_rng: torch.Tensor | None = None
        self.done_steps = 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0}
        self.stop_signal: int | None = None
        self.resume_rng: dict[str, Any] | None = None

    # ---- the loop -------------------------------------------------------------------------------------------
    def fit(self) -> list[dict[str, float]]:
        """Train from ``start_epoch`` to ``epochs``; returns one dict of metrics per epoch run.

        SIGINT (Ctrl-C) or SIGTERM lets the current step finish, saves a checkpoint that resumes exactly there,
        and raises :class:`~imgclf.errors.Interrupted`; a second Ctrl-C stops at once.
        """
        for cb in self.callbacks:
            cb.on_train_begin(self)
        try:
            with self._stop_on_signals():
                epoch = self.start_epoch - 1
                while (epoch := epoch + 1) < self.epochs:  # not a range: a timed run's plan may change self.epochs
                    for cb in self.callbacks:
                        cb.on_epoch_begin(self, epoch)
                    if hasattr(self.train_loader.sampler, "set_epoch"):  # each epoch its own shuffle of the shards
                        self.train_loader.sampler.set_epoch(epoch)
                    logs = self.train_one_epoch(epoch)
                    ddp.average_buffers(self.eval_model)  # batch-norm statistics: each process saw its own shard
                    if self.ema is not None:
                        ddp.average_buffers(self.ema.module)
                    if self.val is not None and len(self.val):
                        started = time.perf_counter()
                        logs.update({f"val_{k}": v for k, v in self.validate(self.val).items()})
                        if self.ema is not None:
                            self._weigh_ema(logs)
                        logs["val_time"] = time.perf_counter() - started
                    elif self.ema is not None:  # nothing to weigh the average on: it is the result (Keras' use_ema)
                        self.use_ema = True
                    self.history.append(logs)
                    for cb in self.callbacks:
                        cb.on_epoch_end(self, epoch, logs)
                    self.save_checkpoint(epoch + 1)
                    if self._stopping():
                        self._interrupted(epoch + 1, 0)
                    if self.stop_training:
                        break
        finally:
            for cb in self.callbacks:
                cb.on_train_end(self)
        return self.history

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: object) -> None:
            if self.stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, keeping the last checkpoint
            self.stop_signal = signum
        for sig in previous:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _weigh_ema(self, logs: dict[str, float]) -> None:
        """Validate the EMA weights; when they beat the live ones by the monitored metric, the epoch's val_* figures
        and its weights are the EMA's. Both are logged (val_live_*, val_ema_*)."""
        ema = self.validate(self.val, self.ema.module)
        key = self.monitor[4:] if self.monitor.startswith("val_") and self.monitor[4:] in ema else "acc"
        live = {k[4:]: v for k, v in logs.items() if k.startswith("val_") and k[4:] in ema}
        better = ema[key] < live[key] if key == "loss" else ema[key] > live[key]
        logs.update({f"val_live_{key}": live[key], f"val_ema_{key}": ema[key], "ema": float(better)})
        self.use_ema = better
        if better:
            logs.update({f"val_{k}": v for k, v in ema.items()})

    def _stopping(self) -> bool:
        """Has a stop signal arrived? Asked of every process at once, so that all stop after the same step."""
        if not ddp.any_process(self.stop_signal is not None):
            return False
        self.stop_signal = self.stop_signal or signal.SIGTERM  # the signal reached another process
        return True

    def _interrupted(self, epoch: int, step: int) -> None:
        ddp.barrier()  # the others wait for rank 0 to finish writing the checkpoint
        name = signal.Signals(self.stop_signal).name
        where = f"during epoch {epoch + 1}, after step {step} of {self.steps_per_epoch}" if step else \
            f"after epoch {epoch}"
        raise Interrupted(f"stopped by {name} {where}; saved {self.checkpoint_path}",
                          128 + int(self.stop_signal))

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch on the device, ready for the model: uint8 images normalised, features as they are."""
        x = x.to(self.device, non_blocking=True)
        return normalize(x, self.mean, self.std, self.channels_last) if self.mean is not None else x

    def train_one_epoch(self, epoch: int = 0) -> dict[str, float]:
        train_mode(self.model)  # frozen batch-norm layers stay in inference mode
        if self.done_steps:  # resuming inside this epoch: replay its shuffle and skip the batches already done
            self.train_loader.generator.set_state(self.epoch_rng)
        else:
            self.epoch_rng = self.train_loader.generator.get_state()
        skip = self.done_steps
        started = time.perf_counter()
        waited, augmenting, seen = 0.0, 0.0, self.partial["seen"]
        loss_sum = torch.tensor(self.partial["loss_sum"], device=self.device)
        correct = torch.tensor(self.partial["correct"], device=self.device, dtype=torch.float32)
        lr = self.optimizer.param_groups[0]["lr"]
        ready = time.perf_counter()
        for step, (x, y) in enumerate(self.train_loader, start=1):
            if step <= skip:
                if step == skip and self.resume_rng is not None:
                    # Fetching the skipped batches drew augmentations; the saved state is the one after them.
                    set_rng_state(self.resume_rng)
                    self.resume_rng = None
                ready = time.perf_counter()
                continue
            waited += time.perf_counter() - ready
            if not len(y):  # every file of the batch failed to decode (--cache none); each was warned about
                ready = time.perf_counter()
                continue
            x = x.to(self.device, non_blocking=True)
            if self.augment is not None:
                began = time.perf_counter()
                x = self.augment(x)
                augmenting += time.perf_counter() - began
            x = self.inputs(x)
            y = y.to(self.device, non_blocking=True)
            x, y, target = self._targets(x, y)
            boundary = step % self.accumulate == 0 or step == self.steps_per_epoch  # this batch ends a step
            logits, loss = self._learn(x, target, step, boundary)
            if boundary:
                lr = self._optimizer_step()
            loss_sum += loss.detach() * len(y)
            correct += self.task.hits(logits.detach(), y)
            seen += len(y)
            # Reading the running metrics syncs with the device: after the first step (a loss shows at once), then
            # every 10. That is when a diverged loss is caught and callbacks hear the running loss and accuracy.
            if step % 10 == 0 or step == 1 or step == self.steps_per_epoch:
                self._running(step, {"loss": (loss_sum / seen).item(), "acc": correct.item() / seen}, lr)
            if boundary and step < self.steps_per_epoch and self._stopping():
                self.done_steps = step
                total_loss, total_correct, total_seen = ddp.all_reduce_sum([loss_sum.item(), correct.item(), seen])
                self.partial = {"loss_sum": total_loss, "correct": float(total_correct), "seen": int(total_seen)}
                self.save_checkpoint(epoch)
                self._interrupted(epoch, step)
            ready = time.perf_counter()
        self.done_steps, self.partial = 0, {"loss_sum": 0.0, "correct": 0, "seen": 0}
        total_loss, total_correct, seen = ddp.all_reduce_sum([loss_sum.item(), correct.item(), seen])
        elapsed = time.perf_counter() - started
        # Where the epoch went: waiting for batches (decoding, per-image augmentation in the workers), batched
        # augmentation here, and the rest (forward, backward, step, metrics), in seconds.
        return {"train_loss": total_loss / max(seen, 1), "train_acc": total_correct / max(seen, 1),
                "lr": lr, "time": elapsed, "data_wait": waited / max(elapsed, 1e-9),
                "images_per_s": seen / max(elapsed, 1e-9), "data_time": waited, "augment_time": augmenting,
                "compute_time": elapsed - waited - augmenting}

    def _targets(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, object]:
        """(images, labels, what the loss compares the output with): the labels; mixed images and soft targets
        (Mixup/CutMix); and, distilling, the teacher's logits beside them (cached with the labels, or online)."""
        if isinstance(self.loss_fn, Distillation) and self.teacher is None:  # cached: [label, logits...]
            labels = y[:, 0].long()
            return x, labels, (labels, y[:, 1:])
        x, target = self.mix(x, y) if self.mix is not None else (x, y)
        if self.teacher is not None:  # it answers the very (augmented, mixed) batch the student sees
            with torch.no_grad(), autocast_for(self.device, self.precision):
                target = (target, self.teacher(x).float())
        return x, y, target

    def _learn(self, x: torch.Tensor, target: torch.Tensor, step: int, boundary: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward for one batch; gradients add up over the ``accumulate`` batches of a step."""
        if (step - 1) % self.accumulate == 0:
            self.optimizer.zero_grad(set_to_none=True)
        # Gradients of the batches inside an accumulation are not exchanged between processes: once a step.
        no_sync = self.model.no_sync() if not boundary and self.processes > 1 else contextlib.nullcontext()
        with no_sync:
            with autocast_for(self.device, self.precision):
                output = self.model(x)
                loss = self.loss_fn(output, target)
            logits = main_logits(output)
            scaled = loss / self.accumulate if self.accumulate > 1 else loss
            if self.scaler is not None and self.scaler.is_enabled():
                self.scaler.scale(scaled).backward()
            else:
                scaled.backward()
        return logits, loss

    def _optimizer_step(self) -> float:
        """One optimizer step, the EMA and the schedule after it; returns the learning rate the step used."""
        if self.scaler is not None and self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.global_step += 1
        if self.ema is not None:
            self.ema.update(self.eval_model, step=self.global_step)
        lr = self.optimizer.param_groups[0]["lr"]
        if self.schedule is not None:
            self.schedule.step(self.global_step)
        return lr

    def _running(self, step: int, live: dict[str, float], lr: float) -> None:
        """The running loss and accuracy: a diverged loss stops training here; callbacks hear them."""
        if not math.isfinite(live["loss"]):
            raise FloatingPointError(f"the loss became {live['loss']} by step {step}: the learning rate "
                                     f"({lr:.3g}) is probably too high; try a lower --lr")
        for cb in self.callbacks:
            cb.on_batch_end(self, step, live)

    @torch.inference_mode()
    def validate(self, images: ImageTensors, model: nn.Module | None = None) -> dict[str, float]:
        """The task's validation figures of ``model`` (default: the one trained) on ``images``: plain loss (no label
        smoothing, no class weights), accuracy, balanced accuracy and macro F1, or for multi-label mAP, macro and
        micro F1. With several processes each takes every N-th image and the task adds up their parts: the figures
        are for the whole split."""
        model = model if model is not None else self.eval_model
        model.eval()
        mine = torch.arange(ddp.rank(), len(images), self.processes)
        stats = validation_for(self.task)
        for index in mine.split(inference_batch(tuple(images.x.shape[1:]))):
            rows = index if self.processes > 1 else slice(int(index[0]), int(index[-1]) + 1)  # one read, in order
            with autocast_for(self.device, self.precision):
                logits = model(self.inputs(images.x[rows])).float().cpu()
            stats.add(logits, images.y[index])
        return stats.result()

    # ---- persistence ----------------------------------------------------------------------------------------
    def save_weights(self, path: Path, metadata: dict[str, str] | None = None) -> None:
        """The model's weights as safetensors, written atomically (temporary file, then rename)."""
        state = {k: v.detach().contiguous().cpu() for k, v in self.epoch_weights().items()}
        tmp = path.with_name(path.name + ".tmp")
        save_file(state, str(tmp), metadata=self.weights_metadata | (metadata or {}))
        tmp.replace(path)

    def epoch_weights(self) -> dict[str, torch.Tensor]:
        """The full model's state: its live weights, or, in an epoch whose EMA scored better, the EMA's in place of
        the trained module's (the whole network, when only its head is trained on cached features)."""
        full = self.full_model.state_dict(keep_vars=True)
        if not self.use_ema:
            return full
        name_of = {id(t): n for n, t in self.eval_model.state_dict(keep_vars=True).items()}
        ema = self.ema.module.state_dict()
        return {k: ema[name_of[id(t)]] if id(t) in name_of else t for k, t in full.items()}

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch, "global_step": self.global_step,
            "model": self.full_model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict() if self.schedule else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "callbacks": {key: cb.state_dict() for key, cb in self._callback_keys()},
            "step": self.done_steps, "partial": self.partial, "processes": self.processes,
            "ema": self.ema.module.state_dict() if self.ema is not None else None, "use_ema": self.use_ema,
            # Each process's random state, in rank order (augmentation and the epoch's worker seeds differ by rank).
            "ranks": ddp.gather({"rng": rng_state(), "loader_rng": self.train_loader.generator.get_state(),
                                 "epoch_rng": self.epoch_rng,
                                 "augment": self.augment.state_dict() if self.augment is not None else None}),
        }

    def _callback_keys(self) -> list[tuple[str, Callback]]:
        """Each callback under its class name and its rank among those of its class ("EarlyStopping:0"): a resumed
        run, or another process, may hold a different set (no progress bar when quiet, no writers off rank 0)."""
        seen: dict[str, int] = {}
        keys = []
        for cb in self.callbacks:
            name = type(cb).__name__
            keys.append((f"{name}:{seen.get(name, 0)}", cb))
            seen[name] = seen.get(name, 0) + 1
        return keys

    def save_checkpoint(self, epoch: int) -> None:
        """Everything needed to resume after ``epoch`` completed epochs, written atomically (by rank 0)."""
        if self.checkpoint_path is None:
            return
        state = self.state_dict(epoch)  # every process takes part: it gathers their random states
        if not ddp.is_main():
            return
        tmp = self.checkpoint_path.with_name(self.checkpoint_path.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint_path)

    def load_checkpoint(self, path: Path) -> None:
        """Continue from a checkpoint written by :meth:`save_checkpoint` (loaded with ``weights_only=True``)."""
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
            raise UserError(f"{path}: not a checkpoint imgclf wrote; refusing to unpickle it ({_first_line(exc)}); "
                            f"train again without --resume, or restore the file") from None
        if not isinstance(state, dict) or "model" not in state:
            raise UserError(f"{path}: not a checkpoint imgclf wrote (no model state in it); train again without "
                            f"--resume, or restore the file")
        self.full_model.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
            self.use_ema = bool(state.get("use_ema"))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None and state["schedule"] is not None:
            self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        saved = state["callbacks"]
        if isinstance(saved, list):  # checkpoints before callbacks were named: by position
            saved = dict(zip((key for key, _ in self._callback_keys()), saved))
        for key, cb in self._callback_keys():
            if key in saved:  # a callback of this run and of the saved one (not a progress bar added by --quiet)
                cb.load_state_dict(saved[key])
        mine = state["ranks"][ddp.rank()] if "ranks" in state else state  # "ranks": since distributed training
        if state.get("step"):  # mid-epoch: applied once the epoch's finished batches have been skipped
            self.resume_rng = mine["rng"]
        else:
            set_rng_state(mine["rng"])
        self.train_loader.generator.set_state(mine["loader_rng"])
        if self.augment is not None and mine.get("augment") is not None:  # no batch skipped on resume drew from it
            self.augment.load_state_dict(mine["augment"])
        self.start_epoch, self.global_step = state["epoch"], state["global_step"]
        self.done_steps, self.epoch_rng = state.get("step", 0), mine.get("epoch_rng")
        if ddp.is_main():  # the epoch's sums so far, over every process: counted once, by rank 0
            self.partial = state.get("partial") or self.partial
