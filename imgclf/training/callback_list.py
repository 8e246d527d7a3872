"""The callbacks a run gets: the defaults, merged with the user's, and those this process keeps (as Keras'
``CallbackList`` owns the defaults and the merging in one place)."""
from __future__ import annotations

from typing import Callable

from .. import distributed as ddp
from ..config import TrainConfig
from ..errors import UserError
from ..run import BEST, METRICS, RunDir
from .callbacks import Callback, CSVLogger, EarlyStopping, ModelCheckpoint, ProgressBar, ReduceLROnPlateau
from .trackers import loggers

# Defaults a user's callback of the same kind replaces; the run's own CSV log and best checkpoint always stay,
# since the run directory (curves, report, imgclf.load) is built on them.
REPLACEABLE = (ProgressBar, EarlyStopping, ReduceLROnPlateau)


def with_user_callbacks(defaults: list[Callback], extra: list[Callback], run: RunDir) -> list[Callback]:
    """The user's callbacks added to the defaults: a progress bar, early stopping or plateau callback of the
    user's replaces the default one; a user's checkpoint saves where it says, beside the run's own."""
    for cb in extra:
        if isinstance(cb, ModelCheckpoint) and cb.path.resolve() == (run / BEST).resolve():
            raise UserError(f"ModelCheckpoint({cb.path}) would overwrite the run's own best checkpoint; give it "
                            f"another path")
    kept = [cb for cb in defaults if not (isinstance(cb, REPLACEABLE) and any(isinstance(u, type(cb)) for u in extra))]
    return kept + extra


def default_callbacks(cfg: TrainConfig, run: RunDir) -> list[Callback]:
    """The classic workflow: progress, CSV log, best checkpoint, plateau/early stopping and trackers when asked
    for."""
    callbacks: list[Callback] = [] if cfg.quiet else [ProgressBar()]
    callbacks += [CSVLogger(run / METRICS),
                  ModelCheckpoint(run / BEST, cfg.monitor, save_best_only=True, min_delta=cfg.min_delta)]
    if cfg.scheduler == "plateau":
        loss_monitor = cfg.monitor.split("_")[0] + "_loss"  # val_acc, val_macro_f1 -> val_loss
        callbacks.append(ReduceLROnPlateau(loss_monitor, cfg.plateau_factor, cfg.plateau_patience, verbose=1,
                                           min_delta=cfg.min_delta))
    if cfg.patience > 0:
        callbacks.append(EarlyStopping(cfg.monitor, cfg.min_delta, cfg.patience))
    return callbacks + loggers(cfg.log)


def plateau_from_callbacks(cfg: TrainConfig, callbacks: list[Callback], log: Callable[[str], None]) -> None:
    """A user's ReduceLROnPlateau sets the learning rate, so the per-step schedule must not (it would undo every
    reduction at the next step): the run's scheduler becomes ``plateau``, and the log says so."""
    if cfg.scheduler != "plateau" and any(isinstance(cb, ReduceLROnPlateau) for cb in callbacks):
        log(f"a ReduceLROnPlateau callback was given: it sets the learning rate instead of the {cfg.scheduler} "
            f"schedule (scheduler: plateau)")
        cfg.scheduler, cfg.warmup_epochs = "plateau", 0.0


def for_this_process(callbacks: list[Callback]) -> list[Callback]:
    """Rank 0 keeps every callback; the others leave out those that print or write files (``rank_zero_only``: the
    progress bar, the CSV log, checkpoints, trackers), and keep those that decide (early stopping, plateau,
    fine-tuning), which see the same all-reduced metrics everywhere and so decide alike."""
    if ddp.is_main():
        return callbacks
    return [cb for cb in callbacks if not getattr(cb, "rank_zero_only", False)]
