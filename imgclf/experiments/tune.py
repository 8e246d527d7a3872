"""``imgclf tune``: hyperparameter search with Optuna, every trial an ordinary run directory.

``runs/NAME/`` holds ``tune.json`` (what was asked), ``study.db`` (Optuna's SQLite storage, so a killed search
resumes where it stopped), ``trial-NNN/`` (each a complete run), ``best.json`` and the search's figures
(``history.png``, ``importances.png``). The sampler is TPE; a pruner fed each epoch's validation metric stops trials
that are clearly behind the others at the same epoch.
"""
from __future__ import annotations

import json
import math
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..config import TrainConfig, default_lr
from ..data.sources import load_source
from ..errors import Interrupted, UserError
from ..metrics.monitor import monitor_mode
from ..models.cnn import DEFAULT_SPEC
from ..run import RunDir, check_run_name, fresh_path, slug
from ..task import get_task
from ..training import job
from ..training.batch_size import RECIPE_BATCH
from ..training.callbacks import Callback
from ..training.setup import data_path, resolve_task
from .folders import resumed

if TYPE_CHECKING:
    import optuna

    from ..training.trainer import Trainer

TUNE_FILE, STUDY_DB = "tune.json", "study.db"
PRUNERS = ("median", "halving", "none")
# CNN specs the ``model`` space picks from: the default, one with a second conv at 14 px, and a wider one
CNN_CHOICES = ("cnn", "cnn:32-m-64-64-m-128-m-d0.1-fc256-d0.1", "cnn:48-m-96-m-192-m-d0.2-fc256-d0.2")
FINE_TUNE_CHOICES = ("efficientnet_lite0", "mobilenetv3_large_100", "resnet18")


@dataclass(frozen=True)
class Param:
    """One searchable setting: how Optuna draws it (``log``-uniform, ``uniform`` or ``choice``)."""

    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()


def space_for(name: str, mode: str, cfg: TrainConfig) -> Param:
    """The default range of the setting ``name`` for ``mode`` around the run's own defaults."""
    lr = default_lr(cfg.optimizer, mode)
    params = {
        "lr": Param("log", lr / 10, lr * 3),
        "weight_decay": Param("log", 1e-5 if mode != "scratch" else 1e-4, 0.3),
        "dropout": Param("uniform", 0.0, 0.5),
        "label_smoothing": Param("uniform", 0.0, 0.2),
        "mixup": Param("uniform", 0.0, 0.4),
        "augment": Param("choice", choices=("none", "light", "standard") if mode == "scratch" else
                         ("light", "standard", "strong")),
        "batch_size": Param("choice", choices=(32, 64, 128, 256)),
        "optimizer": Param("choice", choices=("adamw", "sgd")),
        "model": Param("choice", choices=CNN_CHOICES if mode == "scratch" else FINE_TUNE_CHOICES),
        "backbone_lr_scale": Param("log", 0.05, 1.0),
    }
    if name not in params:
        raise UserError(f"--space: {name!r} is not a parameter imgclf can search; use some of: "
                        f"{', '.join(ALIASES)}, {', '.join(params)}")
    return params[name]


ALIASES = {"wd": "weight_decay", "ls": "label_smoothing", "batch": "batch_size", "bs": "batch_size"}
DEFAULT_SPACES = {"scratch": ("lr", "weight_decay", "dropout", "label_smoothing"),
                  "feature-extract": ("lr", "weight_decay", "label_smoothing"),
                  "fine-tune": ("lr", "weight_decay", "backbone_lr_scale", "augment")}


def parse_space(text: str | list[str] | None, mode: str) -> list[str]:
    """The searched settings: ``lr,wd,dropout`` (aliases allowed), or the mode's default space."""
    if text is None:
        return list(DEFAULT_SPACES[mode])
    given = text.split(",") if isinstance(text, str) else list(text)
    names = [ALIASES.get(n.strip().lower(), n.strip().lower().replace("-", "_")) for n in given if n.strip()]
    if not names:
        raise UserError("--space is empty; name settings to search, e.g. --space lr,wd,dropout")
    return list(dict.fromkeys(names))


def with_dropout(model: str, p: float) -> str:
    """The cnn spec ``model`` with each dropout layer's rate set to ``p``."""
    spec = model[4:] if model.startswith("cnn:") else DEFAULT_SPEC
    if not re.search(r"(^|[-,\s])d(0?\.\d+|0|1)", spec):
        raise UserError(f"--space dropout: the model {model} has no dropout layer to tune; give a cnn spec with "
                        f"one (e.g. cnn:32-m-64-m-d0.3-fc128-d0.3) or leave dropout out")
    return "cnn:" + re.sub(r"(^|[-,\s])d(0?\.\d+|0|1(?:\.0*)?)(?=$|[-,\s])", lambda m: f"{m.group(1)}d{p:.3g}",
                           spec)


def parse_duration(text: str | float | None) -> float | None:
    """Seconds from ``90``, ``90s``, ``30m``, ``1.5h``."""
    if text is None or isinstance(text, (int, float)):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text).lower())
    if not match:
        raise UserError(f"--timeout {text!r}: give a duration such as 600, 30m or 2h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


class Pruning(Callback):
    """Reports each epoch's ``monitor`` to the Optuna trial and stops the run when the pruner says so."""

    def __init__(self, trial: "optuna.Trial", monitor: str) -> None:
        self.trial, self.monitor, self.pruned_at = trial, monitor, None

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            return
        self.trial.report(logs[self.monitor], epoch)
        if epoch + 1 < trainer.epochs and self.trial.should_prune():  # after the last epoch, nothing is saved
            self.pruned_at = epoch + 1
            trainer.stop_training = True
            trainer.log(f"pruned after epoch {epoch + 1}: {self.monitor} {logs[self.monitor]:.4f} is behind the "
                        f"other trials at this epoch")


def _pruner(name: str, epochs: int) -> "optuna.pruners.BasePruner":
    import optuna

    if name not in PRUNERS:
        raise UserError(f"--pruner {name!r} is not one of: {', '.join(PRUNERS)}")
    # Judged from the middle of the run on, once 5 trials have finished (Optuna's default): under a one-cycle or
    # cosine schedule the early epochs' accuracy says little about the last, and a high learning rate starts slow.
    return {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, epochs // 2)),
            "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, epochs // 4),
                                                                      reduction_factor=3),
            "none": optuna.pruners.NopPruner}[name]()


def train_command(data: str, model: str, epochs: int | None, options: dict[str, Any]) -> str:
    """The ``imgclf train`` command line for these settings (only those that differ from the defaults)."""
    import shlex

    defaults = TrainConfig().to_dict() | {"batch_size": RECIPE_BATCH}  # auto asks for 128: the same run
    parts = ["imgclf", "train", shlex.quote(data)]
    if model != defaults["model"]:
        parts += ["--model", shlex.quote(model)]
    if epochs is not None:
        parts += ["--epochs", str(epochs)]
    negative = {"flip": "--no-flip", "plots": "--no-plots", "report": "--no-report", "channels_last": None}
    for key, value in options.items():
        if key in ("project", "name", "quiet", "exist_ok") or value == defaults.get(key, object()):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flag = flag if value else negative.get(key)
            parts += [flag] if flag else []
        elif isinstance(value, list):
            parts += [flag, ",".join(map(str, value))] if value else []
        elif value is not None:
            parts += [flag, shlex.quote(f"{value:.4g}" if isinstance(value, float) else str(value))]
    return " ".join(parts)


def _suggest(trial: "optuna.Trial", names: list[str], mode: str, cfg: TrainConfig) -> dict[str, Any]:
    picked: dict[str, Any] = {}
    for name in names:
        p = space_for(name, mode, cfg)
        if p.kind == "choice":
            picked[name] = trial.suggest_categorical(name, list(p.choices))
        else:
            picked[name] = trial.suggest_float(name, p.low, p.high, log=p.kind == "log")
    return picked


def _figures(study: "optuna.Study", folder: Path) -> list[Path]:
    """Optuna's own matplotlib figures of the search: the optimisation history and, with two or more finished
    trials, the parameters' importances."""
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ov

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    written = []
    plots: list[tuple[str, Callable]] = [("history.png", ov.plot_optimization_history)]
    if len(done) >= 2 and len({json.dumps(t.params, sort_keys=True) for t in done}) >= 2:
        plots.append(("importances.png", ov.plot_param_importances))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib figures experimental
        for file, plot in plots:
            try:
                ax = plot(study)
            except (ValueError, RuntimeError):  # too few distinct trials for importances
                continue
            figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            figure.set_size_inches(8, 4.5)
            figure.tight_layout()
            figure.savefig(folder / file, dpi=100)
            plt.close(figure)
            written.append(folder / file)
    return written


def _default_monitor(cfg: TrainConfig) -> str:
    """The task's monitor (mAP for multi-label data); ``task="auto"`` is resolved from the data, read only then."""
    task = cfg.task if cfg.task != "auto" else resolve_task(cfg.task, load_source(cfg.data, cfg.data_root))
    return get_task(task).default_monitor


def _study(folder: Path, pruner: str, cfg: TrainConfig, monitor: str) -> "optuna.Study":
    """The search's Optuna study in ``folder``'s SQLite file, new or resumed (a killed search's last trial, left
    running, is marked failed)."""
    import optuna

    direction = "minimize" if monitor_mode(monitor) == "min" else "maximize"
    study = optuna.create_study(study_name=folder.name, storage=f"sqlite:///{(folder / STUDY_DB).resolve()}",
                                load_if_exists=True, direction=direction, pruner=_pruner(pruner, cfg.epochs),
                                # seeded by the trial count, so a resumed search does not draw the same points again
                                sampler=optuna.samplers.TPESampler(seed=cfg.seed + len(_existing(folder))))
    for stale in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)
    return study


def tune(data: str | None = None, model: str = "cnn", epochs: int | None = None, *, trials: int = 20,
         timeout: str | float | None = None, space: str | list[str] | None = None, pruner: str = "median",
         resume: bool = False, **options: Any) -> dict[str, Any]:
    """Search the training settings ``space`` (e.g. ``"lr,wd,dropout"``; default: the mode's) with Optuna for
    the best validation ``monitor``, in ``trials`` runs (in all, so a resumed search runs the rest) or until
    ``timeout`` (seconds, or ``"30m"``); the other ``options`` are :func:`imgclf.train`'s and apply to every trial.
    Returns the best trial's number, value, settings and the ``imgclf train`` command that reproduces it."""
    import optuna

    quiet = options.get("quiet", False)
    folder, spec = _tune_folder(data, model, epochs, trials, space, pruner, resume, options)
    data, model, epochs, options = spec["data"], spec["model"], spec["epochs"], spec["options"] | {"quiet": quiet}
    cfg = TrainConfig(data=data, model=model, **{k: v for k, v in options.items() if k not in ("exist_ok",)},
                      **({"epochs": epochs} if epochs else {}))
    cfg.resolve_mode()
    monitor = cfg.monitor or _default_monitor(cfg)
    names = spec["space"]  # checked by _tune_folder when the search was made
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study(folder, spec["pruner"], cfg, monitor)

    def objective(trial: optuna.Trial) -> float:
        picked = _suggest(trial, names, cfg.mode, cfg)
        run_model = picked.pop("model", model)
        if "dropout" in picked:
            run_model = with_dropout(run_model, picked.pop("dropout"))
            trial.set_user_attr("model", run_model)
        pruning = Pruning(trial, monitor)
        trial_options = options | picked | {"project": str(folder), "name": f"trial-{trial.number:03d}",
                                            "exist_ok": True}
        if not quiet:
            print(f"\n== trial {trial.number} ({len(study.trials)} of {spec['trials']}): "
                  + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in trial.params.items())
                  + " ==", flush=True)
        clf = job.train(data, run_model, epochs, callbacks=[pruning], **trial_options)
        trial.set_user_attr("command", train_command(data, run_model, epochs, options | picked))
        rows = clf.run.metrics()
        values = [r[monitor] for r in rows if monitor in r]
        if not values:
            raise UserError(f"trial {trial.number} logged no {monitor}; tuning needs a validation split")
        if pruning.pruned_at is not None:
            raise optuna.TrialPruned()
        return min(values) if study.direction == optuna.study.StudyDirection.MINIMIZE else max(values)

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    left = spec["trials"] - len(study.get_trials(states=finished))
    started = time.time()
    if left > 0:
        # a trial that fails (a diverged loss, settings that do not fit the data) is marked failed; the search goes on
        try:
            study.optimize(objective, n_trials=left, timeout=parse_duration(timeout), catch=(UserError,),
                           callbacks=[optuna.study.MaxTrialsCallback(spec["trials"], states=finished)])
        except Interrupted as exc:  # Ctrl-C: the trial is marked failed; the search resumes with a new one
            raise Interrupted(f"search stopped during trial {len(study.trials) - 1}; continue it with: imgclf tune "
                              f"--resume --name {folder.name} --project {folder.parent}", exc.exit_code) from None
    elif not quiet:
        print(f"{folder}: all {spec['trials']} trials are done; raise --trials to search further")
    return _summarise(study, folder, monitor, quiet, time.time() - started)


def _existing(folder: Path) -> list[Path]:
    return sorted(folder.glob("trial-*"))


def _tune_folder(data: str | None, model: str, epochs: int | None, trials: int, space: Any, pruner: str,
                 resume: bool, options: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The search's folder and what it searches: a new one (checked before anything is written), or the one
    ``name`` (default: the latest) to resume, with ``trials`` as its new size."""
    project = Path(options.get("project", "runs"))
    if trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    if resume:
        folder, spec = resumed(project, options.get("name"), TUNE_FILE,
                               f"--resume: no search to continue under {project}; start one with imgclf tune DATA")
        spec["trials"] = max(trials, 1)
        (folder / TUNE_FILE).write_text(json.dumps(spec, indent=1), encoding="utf-8")
        return folder, spec
    data = data_path(data)
    kept = {k: v for k, v in options.items() if k not in ("name", "project", "exist_ok", "quiet")}
    # bad options fail here, before anything is written
    cfg = TrainConfig(data=data, model=model, **kept, **({"epochs": epochs} if epochs else {}))
    cfg.resolve_mode()
    names = parse_space(space, cfg.mode)
    for name in names:
        space_for(name, cfg.mode, cfg)
    if "dropout" in names:
        with_dropout(model, 0.0)
    _pruner(pruner, cfg.epochs)
    if options.get("name"):
        folder = project / check_run_name(options["name"])
        if (folder / TUNE_FILE).exists():
            raise UserError(f"{folder} already holds a search: pass --resume to continue it, or choose another "
                            f"--name")
    else:
        folder = fresh_path(project / slug(f"{Path(data).stem if Path(data).exists() else data}-tune"), folder=True)
    folder.mkdir(parents=True, exist_ok=True)
    # trials skip report.html (its Grad-CAM examples cost more than a small trial); imgclf report RUN writes it
    spec = {"data": data, "model": model, "epochs": epochs, "trials": trials, "space": names, "pruner": pruner,
            "options": {"report": False} | kept}
    (folder / TUNE_FILE).write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return folder, spec


def _summarise(study: "optuna.Study", folder: Path, monitor: str, quiet: bool, seconds: float) -> dict[str, Any]:
    import optuna

    states = [t.state for t in study.trials]
    count = {s.name.lower(): states.count(s) for s in optuna.trial.TrialState if states.count(s)}
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise UserError(f"no trial of {folder} finished ({count}); see the trials' run directories there")
    best = study.best_trial
    result = {"best_trial": best.number, "run": str(folder / f"trial-{best.number:03d}"), "monitor": monitor,
              "value": best.value, "params": best.params, "command": best.user_attrs.get("command"),
              "trials": count, "seconds": round(seconds, 1)}
    (folder / "best.json").write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    figures = _figures(study, folder)
    if not quiet:
        value = f"{best.value:.4f}" if math.isfinite(best.value) else str(best.value)
        print(f"\n{len(study.trials)} trials ({', '.join(f'{n} {k}' for k, n in count.items())}); best: trial "
              f"{best.number}, {monitor} {value}, in {RunDir(folder / f'trial-{best.number:03d}').path}")
        print(f"reproduce it with:\n  {result['command']}")
        print(f"figures: {', '.join(str(f) for f in figures)}")
    return result
