"""``imgclf.train``: the whole training job, config -> data -> model -> trainer -> run directory -> evaluation."""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .. import distributed as ddp
from ..config import TrainConfig
from ..data.batch_augment import BatchAugment
from ..data.dataset import Source
from ..data.decode import Preprocess
from ..data.loader import per_process_batch, train_loader
from ..data.prepare import Prepared, prepare
from ..data.sampler import shard_sampler
from ..data.tensors import ImageTensors, channel_stats
from ..data.transforms import augmentation
from ..device import autocast_dtype, resolve_device
from ..errors import Interrupted, UserError
from ..inference.classifier import Classifier
from ..metrics.diagnose import collapse_note, diagnose
from ..models import CUSTOM, count_parameters, is_custom
from ..plots import plot_curves
from ..reports.report import Overview, start_data_overview, write_report
from ..run import BEST, EVALUATION, LAST, THRESHOLD, RunDir, RunLock, RunStatus, check_run_name, kept_epoch
from ..task import get_task
from .callback_list import default_callbacks, for_this_process, plateau_from_callbacks, with_user_callbacks
from .batch_size import fit_batch_size, plan_batch
from .callbacks import Callback
from .distill import Distillation, online_teacher, teacher_logits, with_teacher
from .loss import create_criterion
from .mix import mixing
from .optim import create_optimizer, create_schedule
from .precision import settle_precision
from .setup import build_model, check_memory, fit_input, load_data, new_config, seed_everything
from .thresholds import check_positive, tune_thresholds
from .time_budget import TimeLimit, plan_epochs
from .trainer import Trainer
from .modes import cached_probabilities, mode_setup


def _logger(run: RunDir, quiet: bool) -> Callable[[str], None]:
    if not ddp.is_main():  # one process of a run writes its log and prints
        return lambda message: None
    log_file = run / "train.log"

    def log(message: str) -> None:
        with log_file.open("a", encoding="utf-8") as f:
            f.write(message + "\n")
        if not quiet:
            print(message, flush=True)
    return log


def _already_finished(options: dict[str, Any], epochs: int | None, model: str | nn.Module) -> Classifier | None:
    """``--resume`` of a run that trained all its epochs: say so and give it back, without evaluating it again."""
    name, project = options.get("name"), options.get("project", "runs")
    run = RunDir.open(Path(project) / check_run_name(name)) if name else RunDir.latest(project)
    cfg, rows = run.config(), run.metrics()
    complete = (run / BEST).exists() and (run / "eval.json").exists()  # else its end is redone, as before
    if RunStatus.read(run).get("status") != "finished" or not complete or len(rows) < max(cfg.epochs, epochs or 0):
        return None
    further = "add --epochs N to train further" if cfg.scheduler not in ("onecycle", "cosine") else \
        f"its {cfg.scheduler} schedule is complete; to train further, start a new run from its weights (--weights " \
        f"{run / BEST})"
    if not options.get("quiet"):
        print(f"{run.path} is finished ({len(rows)} of {cfg.epochs} epochs); {further}", flush=True)
    return Classifier.load(run.path, device="cpu", model=model if isinstance(model, nn.Module) else None)


def _resume_config(project: str, name: str | None, epochs: int | None) -> tuple[RunDir, TrainConfig]:
    run = RunDir.open(Path(project) / check_run_name(name)) if name else RunDir.latest(project)
    if not (run / LAST).exists():
        raise UserError(f"--resume: {run.path} has no checkpoint ({LAST}) to resume from")
    cfg = run.config()
    if cfg.processes != ddp.world_size():
        how = f"--devices {cfg.processes}" if cfg.processes > 1 else "one process (no --devices)"
        raise UserError(f"--resume: {run.path} was trained by {cfg.processes} process(es), this is "
                        f"{ddp.world_size()}; resume it with {how}, so every process continues its own shard")
    if epochs is not None and epochs != cfg.epochs:
        if cfg.scheduler in ("onecycle", "cosine"):
            raise UserError(f"--resume: the {cfg.scheduler} schedule of {run.path} was planned for {cfg.epochs} "
                            f"epochs; resume without --epochs, or start a new run")
        cfg.epochs = epochs
    return run, cfg


def train(data: str | None = None, model: str | nn.Module = "cnn", epochs: int | None = None, *, resume: bool = False,
          exist_ok: bool = False, callbacks: list[Callback] | None = None, **options: Any) -> Classifier:
    """Train a classifier on ``data`` and return it, Keras-style.

    ``data`` is an image folder, a CSV (paths or pixels) or a built-in dataset name. ``model`` is a name (cnn,
    cnn:SPEC, a timm architecture) or your own ``torch.nn.Module`` giving one logit per class (its weights are
    saved; load the run with ``imgclf.load(run, model=YourModel())``). ``options`` are the fields
    of :class:`~imgclf.config.TrainConfig` (batch_size, img_size, optimizer, lr, augment, val_split, seed,
    name, ...). ``callbacks`` are added to the defaults (progress bar, CSV log, best checkpoint, and early
    stopping / reduce-LR-on-plateau when asked for); one of the same class as a default replaces it.
    Everything is written to ``runs/<name>/``.

    In a process started by ``torchrun`` (or ``imgclf train --devices N``) the processes train one model together
    with DistributedDataParallel; global rank 0 writes the run directory and evaluates the result alone.
    """
    if resume and (done := _already_finished(options, epochs, model)) is not None:
        return done
    status = RunStatus()  # status.json: running, then finished, interrupted or failed (imgclf runs lists it)
    try:
        if not ddp.launched():
            clf = _train(data, model, epochs, resume, exist_ok, callbacks, options, None, status)
        else:
            clf = _train_distributed(data, model, epochs, resume, exist_ok, callbacks, options, status)
    except (Interrupted, KeyboardInterrupt) as exc:
        status.end("interrupted", str(exc))
        raise
    except BaseException as exc:
        status.end("failed", f"{type(exc).__name__}: {exc}")
        raise
    status.end("finished")
    return clf


def _train_distributed(data: str | None, model: str | nn.Module, epochs: int | None, resume: bool, exist_ok: bool,
                       callbacks: list[Callback] | None, options: dict[str, Any], status: RunStatus) -> Classifier:
    device = ddp.setup(options.get("device", "auto"))
    try:
        return _train(data, model, epochs, resume, exist_ok, callbacks, options, device, status)
    except RuntimeError as exc:
        if not ddp.lost_peer(exc):
            raise
        raise Interrupted(f"another process of this run stopped ({str(exc).splitlines()[0][:160]}), so this one "
                          f"stops too", 1) from None
    finally:
        ddp.teardown()


def _train(data: str | None, model: str | nn.Module, epochs: int | None, resume: bool, exist_ok: bool,
           callbacks: list[Callback] | None, options: dict[str, Any], device: torch.device | None,
           status: RunStatus) -> Classifier:
    """The training job, step by step: open the run (its configuration, data, model and folder), prepare the
    images, settle every remaining choice and write config.yaml from it, then build the trainer, fit, and finish
    the run directory (best weights, curves, thresholds, evaluation, report)."""
    own = model if isinstance(model, nn.Module) else None  # a user's network: its class name goes in the config
    cfg, run, source, net = _open_run(data, model, epochs, resume, exist_ok, options, own)
    with RunLock(run) if ddp.is_main() else contextlib.nullcontext():  # one writer per run, for its whole life
        return _train_run(cfg, run, source, net, own, resume, callbacks, device, status)


def _train_run(cfg: TrainConfig, run: RunDir, source: Source, net: nn.Module, own: nn.Module | None, resume: bool,
               callbacks: list[Callback] | None, device: torch.device | None, status: RunStatus) -> Classifier:
    """The steps after the run is opened and locked."""
    log = _logger(run, cfg.quiet)
    plateau_from_callbacks(cfg, list(callbacks or []), log)
    prepared = _prepare_images(cfg, source, run, resume, log)
    device = device or resolve_device(cfg.device)
    net = net.to(device, memory_format=torch.channels_last) if cfg.channels_last else net.to(device)
    try:  # the last choices: from here on the configuration is the run's, as saved
        limit = _settle(cfg, prepared, None if resume else net, device, status.began, log)
    except UserError:
        if not resume and ddp.is_main():
            run.remove_if_unused("train.log")
        raise
    if ddp.is_main():
        cfg.save(run / "config.yaml")
        run.save_labels(prepared.classes)
        if limit is not None:
            limit.config_file = run / "config.yaml"
    overview = _announce(cfg, run, net, prepared, device, resume, status, log)
    extra = [*([limit] if limit else []), *([_AfterFirstStep(overview.begin)] if overview else [])]
    trainer = _build_trainer(cfg, net, prepared, source, run, device, [*extra, *(callbacks or [])], log)
    if resume:
        trainer.load_checkpoint(run / LAST)
        log(f"resuming after epoch {trainer.start_epoch} of {cfg.epochs}")
    try:
        _fit(trainer, cfg, run)
    finally:
        if overview is not None and (error := overview.finish()):
            log(f"warning: {error}")
    if ddp.is_main() and not (run / BEST).exists():
        trainer.save_weights(run / BEST)
    if ddp.world_size() > 1:
        log(ddp.same_weights(net))
        ddp.barrier()
        ddp.teardown()  # rank 0 evaluates alone; the other processes are done
        if not ddp.is_main():
            return Classifier.load(run.path, device="cpu", model=net if own is not None else None)
    return _finish(cfg, run, prepared, trainer, net if own is not None else None, log)


class _AfterFirstStep(Callback):
    """Calls ``then`` once training has taken its first step (the data overview's figures wait for it)."""

    def __init__(self, then: Callable[[], None]) -> None:
        self.then = then

    def on_batch_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        self.then()


def _announce(cfg: TrainConfig, run: RunDir, net: nn.Module, prepared: Prepared, device: torch.device, resume: bool,
              status: RunStatus, log: Callable[[str], None]) -> Overview | None:
    """Say what is about to train and how long getting ready took (status.json: running); start drawing the data
    overview in a thread beside training (given back, to be waited for)."""
    overview = start_data_overview(run, prepared, cfg) if cfg.plots and not resume and ddp.is_main() else None
    if overview is not None:
        log("the data overview (samples.png, class_counts.png, augmentation.png) is drawn once training has begun")
    total, _ = count_parameters(net)
    sizes = ", ".join(f"{k} {len(v)}" for k, v in prepared.splits.items())
    kind = "labels (multi-label)" if cfg.task == "multilabel" else "classes"
    log(f"{'resuming' if resume else 'training'} {cfg.model} ({total:,} parameters) on {cfg.data}: "
        f"{len(prepared.classes)} {kind}, {sizes} images at {cfg.channels}x{cfg.img_size}x{cfg.img_size}, "
        f"device {device}, run {run.path}; ready {time.time() - status.began:.1f} s after the start")
    if ddp.is_main():
        status.start(run, parameters=total, processes=cfg.processes,
                     images={k: len(v) for k, v in prepared.splits.items()})
    return overview


def _open_run(data: str | None, model: str | nn.Module, epochs: int | None, resume: bool, exist_ok: bool,
              options: dict[str, Any], own: nn.Module | None) -> tuple[TrainConfig, RunDir, Source, nn.Module]:
    """The run's configuration (from the arguments, or the run being resumed), its data, its network and its
    folder; the folder is made only once the data and the model are known to be good."""
    model = f"{CUSTOM}{type(own).__name__}" if own is not None else model
    if own is not None and (options.get("pretrained") or options.get("weights")):
        raise UserError("pretrained=/weights= load weights into the architectures imgclf builds; load them into "
                        "your own model before passing it")
    if resume:
        run, cfg = _resume_config(options.get("project", "runs"), options.get("name"), epochs)
        cfg.quiet = options.get("quiet", cfg.quiet)
    else:
        cfg = new_config(data, model, epochs, options)
    cfg.resolve_mode()
    seed_everything(cfg.seed, cfg.deterministic)
    source = load_data(cfg)
    if resume:
        if is_custom(cfg.model) and own is None:
            raise UserError(f"{run.path} was trained with your own model ({cfg.model[len(CUSTOM):]}); resume it "
                            f"from Python: imgclf.train(resume=True, name=..., model=YourModel())")
        return cfg, run, source, build_model(cfg, len(source.classes), own, weights=False)
    fit_input(cfg, source)
    check_positive(cfg.positive, source.classes, cfg.task)
    check_memory(cfg, len(source.classes), len(source.splits["train"]))
    net = build_model(cfg, len(source.classes), own)  # before the run directory exists: a bad model leaves none
    run = RunDir.create(cfg.project, cfg.name, f"{source.name}-{cfg.model.split(':')[0]}", exist_ok) \
        if ddp.is_main() else None
    run = RunDir(ddp.broadcast(run.path if run else None))  # rank 0 chose the folder; the others use it
    cfg.name, cfg.processes = run.name, ddp.world_size()
    return cfg, run, source, net


def _prepare_images(cfg: TrainConfig, source: Source, run: RunDir, resume: bool, log: Callable[[str], None]
                    ) -> Prepared:
    """The decoded splits (in memory, in the store on disk, or decoded per batch), with what could not be read
    listed in the run and validation images that copy training images pointed out."""
    files = any(split.pixels is None for split in source.splits.values())  # pixels in memory need no store
    if ddp.world_size() > 1 and cfg.cache in ("auto", "ram") and files:
        log(f"{ddp.world_size()} processes share one decoded-image store on disk through the page cache (--cache "
            f"disk), built once per machine, instead of a copy in each process's memory")
        cfg.cache = "disk"
    try:
        with ddp.local_main_first():  # the machine's local rank 0 decodes; the others then find its store
            prepared = prepare(source, Preprocess.of(cfg), quiet=cfg.quiet or not ddp.is_main(),
                               max_bad_fraction=cfg.max_bad_fraction, cache=cfg.cache)
    except UserError:
        if not resume and ddp.is_main():
            run.remove_if_unused()
        raise
    for name, images in prepared.splits.items():
        if images.where != "ram":
            log(f"{name}: decoded images in {images.where}")
    if prepared.skipped:
        log(f"skipped {len(prepared.skipped)} unreadable file(s), listed in {run / 'skipped.csv'}:")
        for path, reason in prepared.skipped[:10]:
            log(f"  {path}: {reason}")
    if ddp.is_main():
        run.save_skipped(prepared.skipped)
    if prepared.leaked:
        log(f"warning: {len(prepared.leaked)} validation/test image(s) are exact copies of training images (e.g. "
            f"{prepared.leaked[0]}), so their scores will be too good; imgclf check DATA --fix clean.csv writes a "
            f"file list without them")
    return prepared


def _settle(cfg: TrainConfig, prepared: Prepared, net: nn.Module | None, device: torch.device, began: float,
            log: Callable[[str], None]) -> TimeLimit | None:
    """The choices that need the decoded images or the model: the normalisation, the batch that fits the memory,
    the precision where the device leaves it open and the epochs that fit ``--time`` (all measured on ``net``; a
    resumed run, given none, keeps its own), the batch size and schedule that fit the training split, and where the
    features of a frozen backbone are kept when several processes share them. Gives the callback that holds a timed
    run to its budget."""
    if cfg.mean is None:
        cfg.mean, cfg.std = channel_stats(prepared.splits["train"].x)
    limit = None
    if net is not None:
        plan_batch(cfg, net, device, len(prepared.splits["train"]), log)
        timed = settle_precision(cfg, net, prepared, device, log)
        if cfg.time is not None:
            limit = plan_epochs(cfg, net, prepared, device, began, log, timed)
    fit_batch_size(cfg, len(prepared.splits["train"]), log)
    if cfg.mode == "feature-extract" and cfg.augment == "none" and cfg.feature_cache == "ram" \
            and ddp.world_size() > 1:
        log("feature extraction with several processes: the features go to the disk cache, computed once per "
            "machine (--feature-cache disk)")
        cfg.feature_cache = "disk"
    return limit


def _build_trainer(cfg: TrainConfig, net: nn.Module, prepared: Prepared, source: Source, run: RunDir,
                   device: torch.device, callbacks: list[Callback], log: Callable[[str], None]) -> Trainer:
    """The model as the mode trains it, its loader, loss, optimizer, schedule and callbacks, in one trainer."""
    model, params, mean, std, splits, extra = mode_setup(cfg, net, prepared.splits, device, log)
    train, teacher = splits["train"], None
    if cfg.teacher and cfg.kd_logits == "cached":
        train = with_teacher(train, teacher_logits(cfg, source, train, prepared.classes, device, log))
    elif cfg.teacher:
        teacher = online_teacher(cfg, prepared.classes, mean, std, device, log)
    # light augmentation runs batched in the trainer (BatchAugment), the other presets per image in the workers
    batched = cfg.batch_augment and cfg.augment == "light" and mean is not None
    transform = augmentation(cfg.augment, cfg.img_size, cfg.channels, cfg.flip) \
        if mean is not None and not batched else None
    per_process = per_process_batch(cfg.batch_size, len(splits["train"]), log)
    # Random resized crops come from the whole photo where the files are decoded per batch (--cache none).
    loader = train_loader(train, per_process, transform, cfg.workers, cfg.seed + ddp.rank(),
                          pin_memory=device.type == "cuda",
                          sampler=shard_sampler(splits["train"].y, cfg.seed, cfg.sampler == "balanced"),
                          full_res=cfg.augment in ("standard", "strong"))
    task = get_task(cfg.task)
    precision = autocast_dtype(cfg.precision, device)
    if cfg.precision == "auto":  # config.yaml keeps "auto" where the device decides; the log says what it is here
        log(f"precision auto: {str(precision).removeprefix('torch.') if precision else 'fp32'} on {device}")
    mix, mix_loss = mixing(cfg.mixup, cfg.cutmix, len(prepared.classes), cfg.label_smoothing, task.multilabel)
    loss = mix_loss or create_criterion(task, splits["train"].y, prepared.classes, cfg, log)
    loss = Distillation(loss, cfg.kd_weight, cfg.kd_temperature) if cfg.teacher else loss
    optimizer = create_optimizer(params, cfg)
    model = ddp.parallel(model, device, cfg.sync_bn, find_unused=cfg.mode == "fine-tune")
    if cfg.compile:  # after DDP, as PyTorch advises; the trainer validates and saves the module itself
        model = torch.compile(model)
    return Trainer(
        model, optimizer, loss.to(device), loader, splits.get("val"), mean, std, device, cfg.epochs,
        schedule=create_schedule(optimizer, cfg, math.ceil(len(loader) / cfg.accumulate)),  # optimizer steps
        callbacks=for_this_process(extra + with_user_callbacks(default_callbacks(cfg, run), callbacks, run)),
        precision=precision,
        augment=BatchAugment(cfg.img_size, cfg.flip, seed=cfg.seed * 1000 + ddp.rank(), erase=cfg.erase) if batched else None,
        channels_last=cfg.channels_last, checkpoint_path=run / LAST, log=log, full_model=net,
        mix=mix, teacher=teacher, accumulate=cfg.accumulate, monitor=cfg.monitor, ema_decay=cfg.ema_decay if cfg.ema else None,
        task=task, weights_metadata={"model": cfg.model, "task": task.name,
                                     "classes": json.dumps(prepared.classes, ensure_ascii=False)})


def _fit(trainer: Trainer, cfg: TrainConfig, run: RunDir) -> None:
    """Train, turning what can stop a run into a message that names the way on."""
    try:
        trainer.fit()
    except FloatingPointError as exc:
        raise UserError(f"training stopped: {exc}; the last good checkpoint is {run / LAST}") from None
    except torch.OutOfMemoryError:
        raise UserError(f"out of GPU memory at --batch-size {cfg.batch_size}; try --batch-size "
                        f"{max(1, cfg.batch_size // 2)} (or a smaller --img-size); the last checkpoint is "
                        f"{run / LAST}") from None
    except Interrupted as exc:
        devices = f" --devices {cfg.processes}" if cfg.processes > 1 else ""
        raise Interrupted(f"{exc}; continue with: imgclf train --resume --name {run.name} --project {cfg.project}"
                          f"{devices}", exc.exit_code) from None


def _finish(cfg: TrainConfig, run: RunDir, prepared: Prepared, trainer: Trainer, own: nn.Module | None,
            log: Callable[[str], None]) -> Classifier:
    """The run directory completed: the curves and their diagnosis, the tuned thresholds, the evaluation of the
    best weights on the test (else validation) split, the report, and the trackers told."""
    kept = kept_epoch(run / BEST)
    rows = run.metrics()
    if kept is not None and rows:
        row = next((r for r in rows if int(r["epoch"]) == kept), None)
        monitored = f"{cfg.monitor} {row[cfg.monitor]:.4f}" if row and cfg.monitor in row else cfg.monitor
        log(f"best: {monitored} at epoch {kept} of {len(rows)}; those weights are kept in {run / BEST}")
    n_val = len(prepared.splits["val"]) if "val" in prepared.splits else None
    plot_curves(rows, run / "curves.png", cfg.monitor, kept, cfg, n_val)
    log(diagnose(rows, cfg.monitor, kept, cfg, n_val).text)
    clf = Classifier.load(run.path, device=cfg.device, model=own)
    if "val" in prepared.splits and len(prepared.splits["val"]):
        tune_thresholds(clf, run, prepared.splits["val"], cfg.positive, log)
    final = "test" if "test" in prepared.splits else "val" if "val" in prepared.splits else None
    if final is not None and len(prepared.splits[final]):
        _evaluate(clf, cfg, prepared.splits[final], final, prepared.classes, log)
    results = _results(clf, final, cfg.monitor, rows, kept)
    for cb in trainer.callbacks:  # the trackers log the finished run
        cb.on_run_end(trainer, run.path, results)
    log(f"run directory: {run.path}")
    return clf


def _evaluate(clf: Classifier, cfg: TrainConfig, images: ImageTensors, final: str, classes: list[str],
              log: Callable[[str], None]) -> None:
    """The best weights scored on the ``final`` split, saved in the run with its figures and report."""
    ev, probs = clf.score(images, cfg.tta, plain=cached_probabilities(cfg, clf.model, clf.task.probabilities,
                                                                        images, clf.device))
    clf.evaluation = ev
    ev.save(clf.run.path, images.x, figures=cfg.plots)
    np.savez_compressed(clf.run / EVALUATION, y_true=ev.y_true, probs=probs.astype(np.float32))
    saved = clf.run / "eval.json"  # which split it scored, so that `imgclf runs` calls the figure what it is
    scores = {"split": final} | json.loads(saved.read_text(encoding="utf-8"))
    fitted = json.loads((clf.run / THRESHOLD).read_text(encoding="utf-8")).get("cross_fitted_accuracy") \
        if (clf.run / THRESHOLD).is_file() else None
    if final == "val" and fitted is not None and "binary" in scores:  # the threshold was tuned on this very split
        scores["binary"] |= {"tuned_on_this_split": True, "cross_fitted_accuracy_at_threshold": fitted}
        log(f"the decision threshold was tuned on this validation split, so its accuracy here flatters it; on "
            f"images it was not tuned on (cross-fitted halves): {fitted:.4f}")
    saved.write_text(json.dumps(scores, indent=1, ensure_ascii=False), encoding="utf-8")
    if clf.task.multilabel:
        log(f"{final} {ev.headline}, exact match {ev.exact_match:.4f}, hamming loss {ev.hamming:.4f} on "
            f"{len(images)} images with the best weights")
    else:
        log(f"{final} accuracy {ev.accuracy:.4f}{ev.top_k_text}, balanced accuracy {ev.balanced_accuracy:.4f}, "
            f"macro F1 {ev.macro_f1:.4f} on {len(images)} images with the best weights")
        if note := collapse_note(ev.y_true, ev.y_pred, classes, f"{final} split"):
            log(note)
    if cfg.tta:
        log(ev.tta_text)
    if cfg.plots and cfg.report:
        log(f"report: {write_report(clf, ev, images, f'{final} split, {len(images)} images')}")


def _results(clf: Classifier, final: str | None, monitor: str, rows: list[dict[str, float]], kept: int | None
             ) -> dict[str, float]:
    """The run's headline figures for the trackers: the final evaluation's (``test_accuracy``...) and the kept
    epoch's monitored value (``best_val_acc``)."""
    figures = {f"{final}_{k}": float(v) for k, v in clf.evaluation.as_dict().items()
               if isinstance(v, (int, float)) and k != "images"} if clf.evaluation is not None and final else {}
    row = next((r for r in rows if int(r["epoch"]) == kept), None)
    return figures | ({f"best_{monitor}": row[monitor]} if row and monitor in row else {})
