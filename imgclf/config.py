"""Training configuration: every knob, its default, and its round trip through ``config.yaml``."""
from __future__ import annotations

import dataclasses
import difflib
import re
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .resources import default_workers

OPTIMIZERS = ("sgd", "adam", "adamw")
TASKS = ("auto", "multiclass", "multilabel")  # see imgclf.task; auto: multilabel when a CSV row has several labels
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")  # PIL resampling filters (imgclf.data.decode)
SCHEDULERS = ("onecycle", "cosine", "plateau", "none")
AUGMENTS = ("none", "light", "standard", "strong")
MODES = ("scratch", "feature-extract", "fine-tune")
FEATURE_CACHES = ("disk", "ram", "none")  # the words of --cache: where the frozen backbone's features live
FEATURE_CACHE_ALIASES = {"memory": "ram", "off": "none"}  # the spellings before, still accepted
CACHES = ("auto", "ram", "disk", "none")
MONITORS = ("val_acc", "val_loss", "val_balanced_acc", "val_macro_f1", "val_map", "val_micro_f1", "train_acc",
            "train_loss")  # which apply depends on the task (imgclf.task); val_map and val_micro_f1 are multi-label's
# what imgclf benchmark measures (here, not in deploy/, so that --help lists them without importing torch)
BENCHMARK_ENGINES = ("pytorch", "pytorch-compiled", "onnxruntime", "onnxruntime-int8", "openvino", "training")
# --formats all: a row per export target (web: the app in headless Chromium; coreml: converted, sized, not run here)
EXPORT_MATRIX = ("pytorch", "onnxruntime", "onnxruntime-int8", "openvino", "litert", "litert-int8", "web", "coreml")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # autocast dtypes; auto: see imgclf.device.autocast_dtype
LOGGERS = ("tensorboard", "mlflow")  # experiment trackers (imgclf.training.trackers)
LOSSES = ("default", "asymmetric")  # default: cross-entropy, or binary cross-entropy for multi-label; asymmetric: ASL
CLASS_WEIGHTS = ("none", "balanced")  # balanced: scikit-learn's inverse-frequency weights in the loss
SAMPLERS = ("random", "balanced")  # balanced: every class equally likely in each batch
# Above this ratio of the largest to the smallest training class, training warns and ``imgclf check`` counts a problem.
IMBALANCE_WARN = 10.0
RESIZE_MODES = ("crop", "squash")
# Learning rates that work for each optimizer with the default batch size; --lr overrides.
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 3e-3}
# A lone linear head on fixed features needs (and tolerates) a higher rate than a whole network.
FEATURE_EXTRACT_LR_SCALE = 3
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adam": 0.0, "adamw": 0.05}


# Named recipes (--recipe NAME): settings that go together, under the options given (which win).
RECIPES = {
    "accurate": ({"ema": True, "val_split": 0.0, "tta": True},
                 "the most accuracy from the time it has (with --time, or --epochs): every training image trained "
                 "on (no validation split; the schedule decides the end), an EMA of the weights kept as the "
                 "result, and the final evaluation with test-time augmentation"),
}


def with_recipe(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` over the settings of their ``recipe`` (when one is named): what the user gave wins."""
    name = options.get("recipe")
    if name is None:
        return options
    if name not in RECIPES:
        raise UserError(f"--recipe {name!r} is not one of: {', '.join(RECIPES)}")
    return RECIPES[name][0] | options


# --time without --epochs: the budget alone decides how many epochs (up to this many)
MAX_PLANNED_EPOCHS = 1000
DURATION_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``--time``: a number of seconds, or with a unit, ``90s``, ``10m``, ``1.5h``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*", str(value).lower())
        if not match:
            raise UserError(f"--time {value!r} is not a duration; give one such as 90s, 10m or 1h")
        seconds = float(match[1]) * DURATION_UNITS[match[2] or "s"]
    if seconds <= 0:
        raise UserError(f"--time must be more than 0 seconds, got {value!r}")
    return seconds


def duration(seconds: float) -> str:
    """``600`` -> ``10m``, ``90`` -> ``90s``, ``5400`` -> ``1.5h``: the unit that writes it shortest exactly."""
    if seconds >= 3600 and seconds % 1800 == 0:
        return f"{seconds / 3600:g}h"
    return f"{seconds / 60:g}m" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g}s"


def default_lr(optimizer: str, mode: str | None) -> float:
    """The learning rate used when --lr is not given, per optimizer and mode."""
    return round(DEFAULT_LR[optimizer] * (FEATURE_EXTRACT_LR_SCALE if mode == "feature-extract" else 1), 12)


def default_warmup_epochs(scheduler: str, epochs: int) -> float:
    """One-cycle warms up for its first quarter (fastai's default), cosine for one epoch (at most a quarter);
    the other schedules have no warm-up."""
    if scheduler == "onecycle":
        return epochs / 4
    return min(1.0, epochs / 4) if scheduler == "cosine" else 0.0


_CHECKS = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
           "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
           "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool), "None": lambda v: v is None,
           "list[float]": lambda v: isinstance(v, list) and all(_CHECKS["float"](x) for x in v),
           "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)}
_WORDS = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true or false", "None": "empty",
          "list[float]": "a list of numbers", "list[str]": "a list of names"}


def _fits(value: Any, annotation: str) -> bool:
    """Whether a value read from config.yaml has the field's type (``int | None``...)."""
    kinds = [k.strip() for k in annotation.split("|")]
    return any(_CHECKS[k](value) for k in kinds if k in _CHECKS) or not any(k in _CHECKS for k in kinds)


def _readable(annotation: str) -> str:
    return " or ".join(_WORDS.get(k.strip(), k.strip()) for k in annotation.split("|"))


@dataclass
class TrainConfig:
    """Everything needed to rebuild a run and to re-run it. ``None`` means "choose from the data/model"."""

    data: str = ""
    task: str = "auto"  # multiclass or multilabel; auto: multilabel when a CSV row has several labels
    model: str = "cnn"
    pretrained: bool = False
    weights: str | None = None
    mode: str | None = None
    unfreeze: str = "all"
    head_epochs: int | None = None
    backbone_lr_scale: float = 0.5
    freeze_bn: bool = False
    feature_cache: str = "disk"
    cache: str = "auto"
    epochs: int = 20
    time: float | None = None  # seconds the run may take (--time 10m): the epochs are planned to fit them
    batch_size: int | None = None  # None: auto, 128 measured against the memory (imgclf.training.batch_size)
    batch_plan: str | None = None  # what the measurement found, as the log said it (set by the run)
    grad_checkpointing: bool = False  # recompute activations in the backward pass (timm's set_grad_checkpointing)
    img_size: int | None = None
    channels: int | None = None
    resize: str = "crop"
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    optimizer: str = "adamw"
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    scheduler: str = "onecycle"
    warmup_epochs: float | None = None
    label_smoothing: float = 0.1
    loss: str = "default"
    class_weights: str = "none"
    sampler: str = "random"
    mixup: float = 0.0  # timm Mixup alpha; 0 = off
    cutmix: float = 0.0  # timm CutMix alpha; 0 = off
    accumulate: int = 1  # batches per optimizer step
    ema: bool = False  # an exponential moving average of the weights (timm ModelEmaV3), kept when it validates better
    ema_decay: float = 0.999
    tta: bool = False  # the final evaluation averages the test-time views (imgclf.inference.tta)
    recipe: str | None = None  # the named recipe (RECIPES) the options were filled from
    layer_decay: float | None = None  # fine-tuning: each block down from the head at this times its upper's rate
    augment: str | None = None
    flip: bool | None = None
    val_split: float = 0.1
    limit: int | None = None  # train on a stratified sample of this many training images
    positive: str | None = None  # two classes: the one the run detects (None: by name, see training.thresholds)
    folds: int | None = None  # a cross-validation fold's run: fold ``fold`` (from 0) of ``folds`` is its validation
    fold: int | None = None
    test_split: bool = True  # decode and score the data's test split; off for the label check's folds, which need
    # only their out-of-fold predictions (5 passes over a test set of photos through a backbone, for nothing)
    seed: int = 0
    name: str | None = None
    project: str = "runs"
    data_root: str | None = None
    device: str = "auto"
    processes: int = 1  # training processes, as used (torchrun / --devices); resume needs as many
    sync_bn: bool = False
    precision: str = "auto"  # autocast dtype: bf16 where it is the faster (imgclf.device, training.precision)
    batch_augment: bool | None = None  # light augmentation as batched tensor ops in the trainer; None: for light
    erase: float = 0.0  # random erasing's probability per image, with the batched light augmentation
    teacher: str | None = None  # a trained run to distil from (training/distill.py)
    kd_weight: float = 0.9  # the distillation term's share of the loss, the labels' (1 - kd_weight)
    kd_temperature: float = 4.0  # the temperature both outputs are softened at
    kd_logits: str = "auto"  # online: the teacher answers every batch; cached: once, before training; auto: online
    # where the student's views are augmented or mixed
    compile: bool = False  # torch.compile the training forward/backward
    log: list[str] = dataclasses.field(default_factory=list)  # experiment trackers: tensorboard, mlflow
    channels_last: bool = True
    workers: int | None = None
    monitor: str | None = None  # None: the task's (val_acc, or val_map for multi-label)
    patience: int = 0
    min_delta: float = 0.0
    plateau_patience: int = 2
    plateau_factor: float = 0.2
    deterministic: bool = False
    max_bad_fraction: float = 0.1
    plots: bool = True
    report: bool = True
    quiet: bool = False
    mean: list[float] | None = None
    std: list[float] | None = None

    def __post_init__(self) -> None:
        self.feature_cache = FEATURE_CACHE_ALIASES.get(self.feature_cache, self.feature_cache)
        self.time = None if self.time is None else parse_duration(self.time)
        self.validate()

    def validate(self) -> None:
        """Reject impossible values with a message naming the option and the allowed values."""
        choices = {"optimizer": OPTIMIZERS, "scheduler": SCHEDULERS, "augment": AUGMENTS, "resize": RESIZE_MODES,
                   "mode": MODES, "feature_cache": FEATURE_CACHES, "cache": CACHES,
                   "class_weights": CLASS_WEIGHTS, "sampler": SAMPLERS, "task": TASKS, "loss": LOSSES,
                   "precision": PRECISIONS, "recipe": tuple(RECIPES)}
        for key, allowed in choices.items():
            if getattr(self, key) not in (*allowed, None):
                raise UserError(f"--{key.replace('_', '-')} {getattr(self, key)!r} is not one of: "
                                f"{', '.join(allowed)}")
        at_least = {"epochs": 1, "batch_size": 1, "seed": 0, "patience": 0, "plateau_patience": 0, "workers": 0,
                    "weight_decay": 0, "warmup_epochs": 0, "min_delta": 0, "mixup": 0, "cutmix": 0, "accumulate": 1,
                    "limit": 1}
        for key, low in at_least.items():
            value = getattr(self, key)
            if value is not None and value < low:
                raise UserError(f"--{key.replace('_', '-')} must be at least {low}, got {value}")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise UserError(f"--layer-decay must be in (0, 1], got {self.layer_decay}")
        if not 0.0 < self.ema_decay < 1.0:
            raise UserError(f"--ema-decay must be between 0 and 1, got {self.ema_decay}")
        if not 0.0 <= self.momentum < 1.0:
            raise UserError(f"--momentum must be in [0, 1), got {self.momentum}")
        if not 0.0 < self.plateau_factor < 1.0:
            raise UserError(f"--plateau-factor must be between 0 and 1 (the learning rate is multiplied by it), "
                            f"got {self.plateau_factor}")
        if self.img_size is not None and self.img_size < 8:
            raise UserError(f"--img-size must be at least 8 pixels, got {self.img_size}")
        for key in ("val_split", "label_smoothing", "erase"):  # shares of something: from 0, under 1
            if not 0.0 <= getattr(self, key) < 1.0:
                raise UserError(f"--{key.replace('_', '-')} must be in [0, 1), got {getattr(self, key)}")
        if self.lr is not None and self.lr <= 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"interpolation {self.interpolation!r} is not one of: {', '.join(INTERPOLATIONS)}")
        if not 0.1 <= self.crop_pct <= 1.0:
            raise UserError(f"crop_pct must be in [0.1, 1], got {self.crop_pct}")
        if self.channels not in (None, 1, 3):
            raise UserError(f"--channels must be 1 or 3, got {self.channels}")
        self.unfreeze = str(self.unfreeze).strip().lower()
        if self.unfreeze != "all" and not (self.unfreeze.isdigit() and int(self.unfreeze) > 0):
            raise UserError(f"--unfreeze must be a number of blocks (1 or more) or 'all', got {self.unfreeze!r}")
        if self.head_epochs is not None and self.head_epochs < 0:
            raise UserError(f"--head-epochs must be 0 or more, got {self.head_epochs}")
        if self.mode == "fine-tune" and self.head_epochs is not None and self.head_epochs >= self.epochs:
            raise UserError(f"--head-epochs ({self.head_epochs}) leaves no epoch of --epochs ({self.epochs}) to "
                            f"fine-tune in; lower it, raise --epochs, or use --mode feature-extract")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise UserError(f"--max-bad-fraction must be in [0, 1], got {self.max_bad_fraction}")
        if self.backbone_lr_scale <= 0:
            raise UserError(f"--backbone-lr-scale must be positive, got {self.backbone_lr_scale}")
        self.log = [self.log] if isinstance(self.log, str) else list(self.log or [])
        if unknown := [name for name in self.log if name not in LOGGERS]:
            raise UserError(f"--log {unknown[0]!r} is not one of: {', '.join(LOGGERS)}")
        if "mlflow" in self.log and importlib.util.find_spec("mlflow") is None:
            raise UserError("--log mlflow needs MLflow: pip install 'imgclf[mlflow]'")
        if self.monitor not in (*MONITORS, None):
            raise UserError(f"--monitor {self.monitor!r} is not one of: {', '.join(MONITORS)}")

    def resolve_mode(self) -> None:
        """Fill in every "choose for me" value that does not need the data: ``mode`` (fine-tune when starting
        from trained weights, else scratch), ``augment`` (none for feature extraction, so that its features can be
        cached), the learning rate, weight decay, warm-up, head epochs and workers. ``config.yaml`` then holds the
        values actually used."""
        transfer = self.pretrained or bool(self.weights)
        self.mode = self.mode or ("fine-tune" if transfer else "scratch")
        if self.mode != "scratch" and not transfer:
            raise UserError(f"--mode {self.mode} starts from trained weights: add --pretrained (ImageNet weights) "
                            f"or --weights FILE")
        if self.mode == "scratch" and transfer:
            raise UserError("--mode scratch trains from random weights: drop --pretrained/--weights, or use "
                            "--mode fine-tune or --mode feature-extract")
        self.augment = self.augment or ("none" if self.mode == "feature-extract" else "light")
        if self.batch_augment is None:  # the presets it covers: light's shifts and flips
            self.batch_augment = self.augment == "light"
        if self.erase and not (self.batch_augment and self.augment == "light"):
            raise UserError(f"--erase works with the batched light augmentation (--augment light); --augment "
                            f"{self.augment} {'erases already' if self.augment == 'strong' else 'runs per image'}")
        if self.batch_augment and self.augment not in ("light", "none"):
            raise UserError(f"batch_augment covers --augment light (shifts and flips); --augment {self.augment} "
                            f"runs per image in worker processes")
        if self.head_epochs is None:  # fastai's fine_tune: one epoch for the new head; no separate head phase else
            self.head_epochs = (1 if self.epochs > 1 else 0) if self.mode == "fine-tune" else 0
        self.lr = self.lr if self.lr is not None else default_lr(self.optimizer, self.mode)
        self.weight_decay = self.weight_decay if self.weight_decay is not None else \
            DEFAULT_WEIGHT_DECAY[self.optimizer]
        if self.warmup_epochs is None:
            self.warmup_epochs = default_warmup_epochs(self.scheduler, self.epochs)
        self.workers = self.workers if self.workers is not None else default_workers()
        mixing = self.mixup > 0 or self.cutmix > 0
        if mixing and self.mode == "feature-extract" and self.augment == "none" and self.feature_cache != "none":
            raise UserError("--mixup/--cutmix mix images, and feature extraction trains on cached features; add "
                            "--augment light (the backbone then sees every mixed batch) or leave them out")
        if self.teacher and (self.mode == "feature-extract" or self.task == "multilabel"):
            raise UserError("--teacher distils into the whole student from one class per image; it does not go with "
                            "--mode feature-extract or multi-label data")
        if self.kd_logits not in ("auto", "online", "cached"):
            raise UserError(f"--kd-logits must be auto, online or cached, not {self.kd_logits!r}")
        if self.kd_logits == "auto" and self.teacher:
            self.kd_logits = "online" if self.augment != "none" or mixing else "cached"
        if self.teacher and mixing and self.kd_logits == "cached":
            raise UserError("--kd-logits cached has no teacher answer for mixed images; use --kd-logits online with "
                            "--mixup/--cutmix")
        if not 0 <= self.kd_weight <= 1 or self.kd_temperature <= 0:
            raise UserError(f"--kd-weight must be within 0-1 (got {self.kd_weight}) and --kd-temperature positive "
                            f"(got {self.kd_temperature})")
        if mixing and self.class_weights != "none":
            raise UserError("--class-weights does not apply to the soft targets of --mixup/--cutmix; use --sampler "
                            "balanced for imbalanced classes instead")
        self.validate()

    @property
    def unfreeze_blocks(self) -> int | str:
        """``--unfreeze`` as a block count, or ``"all"``."""
        return self.unfreeze if self.unfreeze == "all" else int(self.unfreeze)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else default_lr(self.optimizer, self.mode)

    @property
    def wd(self) -> float:
        return self.weight_decay if self.weight_decay is not None else DEFAULT_WEIGHT_DECAY[self.optimizer]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        import yaml  # here, not at the top: `imgclf --help` needs the options, not their file format

        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = dict(values)
        if "amp" in values:  # runs from before --precision: amp true was "mixed precision on CUDA"
            values.setdefault("precision", "auto" if values.pop("amp") else "fp32")
        unknown = sorted(set(values) - known)
        if unknown:
            guesses = [difflib.get_close_matches(u, sorted(known), 1) for u in unknown]
            hints = [f"{u} (did you mean {g[0]}?)" if g else u for u, g in zip(unknown, guesses)]
            raise UserError(f"unknown training option(s): {', '.join(hints)}")
        return cls(**values)

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        import yaml

        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise UserError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
        fix = "fix the file, or train the run again"
        if not isinstance(values, dict):
            raise UserError(f"{path}: expected training options (name: value lines), got a {type(values).__name__}; "
                            f"{fix}")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for name, value in values.items():
            if name in types and not _fits(value, str(types[name])):
                raise UserError(f"{path}: {name}: {value!r} is not {_readable(str(types[name]))}; {fix}")
        try:
            return cls.from_dict(values)
        except UserError as exc:
            raise UserError(f"{path}: {exc}; {fix}") from None
