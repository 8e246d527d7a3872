"""The ``imgclf`` command line's arguments: every command, option, default and help text (argparse)."""
from __future__ import annotations

import argparse
from typing import Callable

from . import __version__
from .config import (AUGMENTS, CACHES, CLASS_WEIGHTS, DEFAULT_LR, DEFAULT_WEIGHT_DECAY, FEATURE_CACHES,
                     FEATURE_EXTRACT_LR_SCALE, LOGGERS, LOSSES, MODES, MONITORS, OPTIMIZERS, PRECISIONS,
                     RESIZE_MODES, SAMPLERS, SCHEDULERS, TrainConfig)
from .task import TASKS

BENCHMARK_ENGINES = ("pytorch", "pytorch-compiled", "onnxruntime", "onnxruntime-int8", "training")

DEFAULTS = TrainConfig()


def number(kind: type = int, low: float | None = None, high: float | None = None, above: float | None = None,
           below: float | None = None) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` within bounds (``low``/``high`` inclusive, ``above``/``below``
    exclusive), so that ``--epochs 0`` is a one-line error rather than a silent default or a crash later."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") \
                from None
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {text}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be more than {above}, got {text}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"must be less than {below}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def names(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of ``choices`` (``--log tensorboard,mlflow``)."""
    def parse(text: str) -> list[str]:
        given = [name.strip().lower() for name in text.split(",") if name.strip()]
        if unknown := [name for name in given if name not in choices]:
            raise argparse.ArgumentTypeError(f"{unknown[0]!r} is not one of: {', '.join(choices)}")
        return given
    parse.__name__ = "list"
    return parse


COUNT, SOME, SIZE = number(int, 0), number(int, 1), number(int, 8)
FRACTION, POSITIVE = number(float, 0, below=1), number(float, above=0)


class _Formatter(argparse.HelpFormatter):
    """Show every option's default, unless its help already explains it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or not action.option_strings or \
                action.nargs == 0:  # a flag: its default is that it is off
            return text
        return f"{text} (default: %(default)s)".strip()


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line that points to --help rather than the whole usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace existing files instead of writing new numbered "
                                                            "ones")


def _add_photo_output(p: argparse.ArgumentParser, default: str) -> None:
    """The lessons on a photo: its size, and where the picture goes."""
    p.add_argument("--max-side", type=SIZE, default=None, help="shrink the photo first so that its longer side is "
                                                                 "at most this (default: keep its size)")
    p.add_argument("--output", default=None, help=f"where to save the picture (default: {default}, numbered when "
                                                  f"taken)")
    _add_overwrite(p)


DATA_HELP = ("an image folder (one sub-folder per class, or train/ val/ test/ folders of them), a CSV of "
             "path,label[,split], a CSV of pixels (label,pixel1,...), or a built-in dataset: fashion-mnist, mnist, "
             "cifar10, food101, fashion-mnist-sample.")


def _add_train(sub: argparse._SubParsersAction, command: str = "train") -> None:
    """``train``, or ``cv`` (the same options, and --folds): k-fold cross-validation, one training run per fold."""
    if command == "cv":
        p = sub.add_parser("cv", formatter_class=_Formatter, help="k-fold cross-validation: a run per fold",
                           description="Cross-validate on DATA (" + DATA_HELP + ") Stratified folds of its train "
                           "(and validation) images, one run per fold under runs/NAME/fold-K/, a summary, "
                           "out-of-fold predictions (oof.csv); predict and evaluate on runs/NAME use the folds as "
                           "an ensemble. Every train option applies to each fold.")
        p.add_argument("--folds", type=number(int, 2), default=5, help="number of folds")
    elif command == "tune":
        p = sub.add_parser("tune", formatter_class=_Formatter, help="hyperparameter search with Optuna",
                           description="Search training settings on DATA (" + DATA_HELP + ") with Optuna: a TPE "
                           "sampler, a pruner fed each epoch's validation metric (bad trials stop early), the "
                           "study in SQLite inside runs/NAME (--resume continues a killed search), every trial a "
                           "run directory runs/NAME/trial-NNN, and the best trial printed as the imgclf train "
                           "command that reproduces it. Every train option applies to each trial.")
        p.add_argument("--trials", type=SOME, default=20, help="trials in the search (a resumed search runs the "
                                                               "rest; raise it to search further)")
        p.add_argument("--timeout", default=None, help="stop starting trials after this long: 600, 30m, 2h")
        p.add_argument("--space", default=None,
                       help="settings to search, comma-separated, from: lr, wd (weight_decay), dropout (cnn), "
                            "label_smoothing, mixup, augment, batch_size, optimizer, model, backbone_lr_scale "
                            "(default: lr,wd,dropout,label_smoothing from scratch; lr,wd,backbone_lr_scale,augment "
                            "for fine-tuning)")
        p.add_argument("--pruner", choices=("median", "halving", "none"), default="median",
                       help="stop a trial whose metric is below the median of the others at the same epoch "
                            "(judged from mid-run on, once 5 trials finished), or successive halving")
    elif command == "lr-find":
        p = sub.add_parser("lr-find", formatter_class=_Formatter, help="find a learning rate: the range test",
                           description="The learning-rate range test on DATA (" + DATA_HELP + ") The real model "
                           "trains for --steps batches while the rate grows exponentially from --start-lr to "
                           "--end-lr; the smoothed loss curve is saved as runs/NAME/lr_find.png and the rate of its "
                           "steepest descent is suggested, with the train command that uses it. The weights are "
                           "not kept. Every train option applies.")
        p.add_argument("--start-lr", type=POSITIVE, default=1e-7, help="the first learning rate")
        p.add_argument("--end-lr", type=POSITIVE, default=10.0, help="the last learning rate")
        p.add_argument("--steps", type=number(int, 10), default=100, help="batches to train")
    else:
        p = sub.add_parser("train", formatter_class=_Formatter, help="train a classifier",
                           description="Train a classifier on DATA: " + DATA_HELP)
    p.add_argument("data", nargs="?", help="image folder, CSV or dataset name (optional with --resume)")
    p.add_argument("--task", choices=TASKS, default=DEFAULTS.task,
                   help="multiclass: one class per image (softmax); multilabel: any number of labels per image "
                        "(a sigmoid each, from a CSV 'labels' column holding cat|dog or cat;dog, or one 0/1 column "
                        "per label); auto: multilabel when a CSV row has several labels")
    p.add_argument("--model", default=DEFAULTS.model, help="cnn, cnn:SPEC (e.g. cnn:32-32-m-64-64-m-fc128) or a timm "
                                                            "architecture (resnet18, efficientnet_lite0, ...)")
    p.add_argument("--pretrained", action="store_true", help="start from ImageNet weights (built in for "
                                                              "efficientnet_lite0, else downloaded by timm)")
    p.add_argument("--weights", default=None, help="start from a local state dict (.safetensors, .pth, .pt)")
    t = p.add_argument_group("transfer learning (with --pretrained or --weights)")
    t.add_argument("--mode", choices=MODES, default=None,
                   help="scratch: train every layer from random weights (default without --pretrained/--weights); "
                        "feature-extract: freeze the backbone, train a new head on its cached features; "
                        "fine-tune: train the new head, then unfreeze the backbone's top blocks (default with "
                        "--pretrained/--weights)")
    t.add_argument("--unfreeze", default=DEFAULTS.unfreeze, help="fine-tune: how many of the backbone's top blocks "
                                                                 "to unfreeze after the head epochs, or 'all'")
    t.add_argument("--head-epochs", type=COUNT, default=None,
                   help="fine-tune: epochs (counted in --epochs) that train only the new head (default: 1, or 0 "
                        "when --epochs is 1)")
    t.add_argument("--backbone-lr-scale", type=POSITIVE, default=DEFAULTS.backbone_lr_scale,
                   help="fine-tune: the backbone's learning rate as a fraction of --lr")
    t.add_argument("--freeze-bn", action="store_true", help="fine-tune: keep every batch-norm layer's ImageNet "
                                                            "statistics (for small data sets); frozen blocks always "
                                                            "keep theirs")
    t.add_argument("--feature-cache", choices=FEATURE_CACHES, default=DEFAULTS.feature_cache,
                   help="feature-extract: keep backbone features on disk ($IMGCLF_CACHE_DIR, else "
                        "~/.cache/imgclf/features), in memory, or recompute them every batch")
    p.add_argument("--epochs", type=SOME, default=None, help=f"epochs to train (default: {DEFAULTS.epochs})")
    p.add_argument("--batch-size", type=SOME, default=DEFAULTS.batch_size,
                   help="images per training step (at most the training split's size)")
    p.add_argument("--img-size", type=SIZE, default=None, help="input side in pixels (default: the images' own size "
                                                                "when small and uniform, else 96 for cnn or the "
                                                                "architecture's size)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None, help="input channels (default: 1 if every "
                                                                                "image is grayscale, else 3)")
    p.add_argument("--devices", type=SOME, default=1,
                   help="training processes on this machine, through torch.distributed.run: one per GPU (NCCL), or "
                        "that many CPU processes (gloo); --batch-size stays the global batch, split between them. "
                        "For several machines use torchrun -m imgclf train (see the README)")
    p.add_argument("--sync-bn", action="store_true", help="with several GPU processes: batch-norm statistics over "
                                                          "the global batch (SyncBatchNorm)")
    p.add_argument("--cache", choices=CACHES, default=DEFAULTS.cache,
                   help="where the decoded images live: ram; disk (a store under $IMGCLF_CACHE_DIR, else "
                        "~/.cache/imgclf/images, reused by later runs on the same files; memory stays flat); none: "
                        "decode the files per batch in the loader's workers (no store; --augment standard then crops "
                        "from the full-resolution photo); auto: ram while a split takes under a quarter of the "
                        "available memory, else disk while it fits there, else none")
    p.add_argument("--resize", choices=RESIZE_MODES, default=DEFAULTS.resize,
                   help="crop: keep aspect ratio and crop the centre; squash: stretch")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULTS.optimizer, help="sgd = SGD with Nesterov momentum")
    p.add_argument("--lr", type=POSITIVE, default=None,
                   help=f"peak learning rate (default: {', '.join(f'{v:g} {k}' for k, v in DEFAULT_LR.items())}; "
                        f"{FEATURE_EXTRACT_LR_SCALE}x that for --mode feature-extract, whose lone head needs it)")
    p.add_argument("--weight-decay", type=number(float, 0), default=None,
                   help=f"(default: {', '.join(f'{v:g} {k}' for k, v in DEFAULT_WEIGHT_DECAY.items())})")
    p.add_argument("--momentum", type=number(float, 0, below=1), default=DEFAULTS.momentum, help="SGD momentum")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=DEFAULTS.scheduler,
                   help="learning-rate schedule; plateau = reduce-LR-on-plateau")
    p.add_argument("--warmup-epochs", type=number(float, 0), default=None,
                   help="epochs of learning-rate warm-up (default: a quarter of training for onecycle, 1 for cosine)")
    p.add_argument("--label-smoothing", type=FRACTION, default=DEFAULTS.label_smoothing,
                   help="label smoothing of the cross-entropy loss (multi-label: each target moves towards 0.5 "
                        "by half of it)")
    p.add_argument("--loss", choices=LOSSES, default=DEFAULTS.loss,
                   help="default: cross-entropy, binary cross-entropy for multi-label; asymmetric: timm's "
                        "asymmetric loss for multi-label (easy negatives down-weighted)")
    p.add_argument("--class-weights", choices=CLASS_WEIGHTS, default=DEFAULTS.class_weights,
                   help="balanced: weigh each class's loss by the inverse of its share of the training images "
                        "(scikit-learn's compute_class_weight), for imbalanced data; multi-label: each label's "
                        "positives by its negatives over its positives (BCE pos_weight)")
    p.add_argument("--mixup", type=number(float, 0), default=DEFAULTS.mixup,
                   help="mixup alpha (timm): blend pairs of training images and their labels; 0.2 is usual; 0 = off")
    p.add_argument("--cutmix", type=number(float, 0), default=DEFAULTS.cutmix,
                   help="cutmix alpha (timm): paste a patch of one image into another, labels by area; 1.0 is usual")
    p.add_argument("--accumulate", type=SOME, default=DEFAULTS.accumulate,
                   help="batches whose gradients add up to one optimizer step (a larger effective batch)")
    p.add_argument("--ema", action="store_true",
                   help="keep an exponential moving average of the weights (timm ModelEmaV3, warm-up on), validate "
                        "it every epoch and keep it as the epoch's weights when it scores better")
    p.add_argument("--ema-decay", type=number(float, 0, below=1), default=DEFAULTS.ema_decay,
                   help="the EMA's decay per step (its horizon is about 1 / (1 - decay) steps)")
    p.add_argument("--layer-decay", type=number(float, above=0, high=1), default=None,
                   help="fine-tuning: layer-wise learning-rate decay (timm), each block down from the head at this "
                        "times the rate of the one above, e.g. 0.75 (instead of --backbone-lr-scale)")
    p.add_argument("--sampler", choices=SAMPLERS, default=DEFAULTS.sampler,
                   help="balanced: draw training images with replacement so that every class is equally likely "
                        "(a weighted random sampler, sharded between processes); random: each image once an epoch")
    p.add_argument("--augment", choices=AUGMENTS, default=None,
                   help="light: shifts and flips; standard: crops, rotations, colour jitter and flips; strong: "
                        "crops, TrivialAugment, flips and random erasing (default: light, none for feature-extract)")
    p.add_argument("--no-flip", dest="flip", action="store_false", default=None,
                   help="never mirror images (digits, text); default: flip unless the dataset is digits")
    p.add_argument("--val-split", type=FRACTION, default=DEFAULTS.val_split,
                   help="share of train held out for validation when the data has no validation split")
    p.add_argument("--seed", type=COUNT, default=DEFAULTS.seed, help="seed for the split, the weights and the batches")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    p.add_argument("--max-bad-fraction", type=number(float, 0, 1), default=DEFAULTS.max_bad_fraction,
                   help="stop before training when more than this share of the images cannot be read")
    p.add_argument("--monitor", choices=MONITORS, default=DEFAULTS.monitor,
                   help="metric for the best checkpoint and early stopping (default: val_acc, val_map for "
                        "multi-label; balanced accuracy and macro F1 do not hide a minority class)")
    p.add_argument("--patience", type=COUNT, default=DEFAULTS.patience, help="early-stopping patience; 0 = off")
    p.add_argument("--min-delta", type=number(float, 0), default=DEFAULTS.min_delta, help="smallest change that counts")
    p.add_argument("--plateau-patience", type=COUNT, default=DEFAULTS.plateau_patience,
                   help="reduce-LR-on-plateau: epochs without improvement before reducing")
    p.add_argument("--plateau-factor", type=number(float, above=0, below=1), default=DEFAULTS.plateau_factor,
                   help="reduce-LR-on-plateau: multiply the learning rate by this")
    p.add_argument("--name", default=None, help="run name, one folder name (default: a new one under --project)")
    p.add_argument("--project", default=DEFAULTS.project, help="folder that holds the run directories")
    p.add_argument("--exist-ok", action="store_true", help="train into an existing run directory")
    p.add_argument("--resume", action="store_true", help="continue the run --name (default: the latest) from its "
                                                          "last checkpoint")
    p.add_argument("--data-root", default=None, help="where built-in datasets live (default "
                                                     "~/.cache/imgclf/datasets)")
    p.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULTS.precision,
                   help="autocast dtype for training and validation; auto: bf16 where the device computes it "
                        "natively (CUDA from Ampere, CPUs with AVX-512 BF16 or AMX), fp16 on older GPUs, else fp32")
    p.add_argument("--per-image-augment", dest="batch_augment", action="store_false", default=None,
                   help="run --augment light as per-image torchvision transforms in worker processes (default: "
                        "batched tensor operations on the training device, in the training process)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for training (pays off on long "
                                                          "runs; the first steps compile it)")
    p.add_argument("--workers", type=COUNT, default=None, help="augmentation worker processes, 0 for none "
                                                                "(default: the free cores - 1, at most 4)")
    p.add_argument("--log", type=names(LOGGERS), default=[], metavar="TRACKERS",
                   help=f"also log the run to experiment trackers, comma-separated: {', '.join(LOGGERS)} "
                        f"(TensorBoard event files in the run directory; MLflow at $MLFLOW_TRACKING_URI, else "
                        f"PROJECT/mlruns; pip install 'imgclf[mlflow]')")
    p.add_argument("--no-plots", dest="plots", action="store_false",
                   help="draw only the training curves: no data or evaluation figures and no report")
    p.add_argument("--no-report", dest="report", action="store_false",
                   help="skip report.html and its Grad-CAM examples at the end (imgclf report RUN writes it later)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")


def _add_commands(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", formatter_class=_Formatter, help="score a run on labelled images",
                       description="Accuracy, top-k accuracy, per-class precision/recall/F1 and the confusion "
                                   "matrix. Without DATA: the run's test split, else its validation split.")
    e.add_argument("run", help="run directory (runs/NAME) or run name")
    e.add_argument("data", nargs="?", help="labelled images: folder, CSV or dataset name")
    e.add_argument("--split", choices=("train", "val", "test"), default=None, help="which split of the data")
    e.add_argument("--top-k", type=SOME, default=5, help="k of the top-k accuracy")
    e.add_argument("--output-dir", default=None, help="where to write the report (default: the run directory for "
                                                      "its own split, RUN/eval/DATA-NAME/ for other data)")
    e.add_argument("--overwrite", action="store_true", help="replace report files already in --output-dir")
    e.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the image, its mirror (unless the run was trained with "
                        "--no-flip) and two small shifts; the report gives the gain over plain")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")

    p = sub.add_parser("predict", formatter_class=_Formatter, help="top-k classes of images",
                       description="Predict image files, folders (recursively) and glob patterns.")
    p.add_argument("run", help="run directory (runs/NAME), run name, or a pretrained model name such as "
                               "efficientnet_lite0 for its ImageNet classes")
    p.add_argument("inputs", nargs="+", help="images, folders, globs such as 'photos/*.jpg', or a pixel CSV "
                                             "(Kaggle's layout, one image a row)")
    p.add_argument("--top-k", type=SOME, default=5, help="how many classes to show per image")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the image, its mirror (unless the run was trained with "
                        "--no-flip) and two small shifts")
    p.add_argument("--output", default=None, help="write predictions to a .csv or .json file (for a pixel CSV "
                                                  "without labels, a .csv is Kaggle's ImageId,Label submission)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--resume", action="store_true", help="continue an --output .csv file a stopped run left: the "
                                                         "inputs already in it are skipped")
    p.add_argument("--workers", type=COUNT, default=None, help="processes that decode images while the model runs, "
                                                               "0 for none (default: the CPU count, at most 8, when "
                                                               "there are more than two batches of files)")
    p.add_argument("--positive", default=None, help="answer yes/no per image: is it one of these classes "
                                                    "(comma-separated names or ids, e.g. hotdog or 281,282,283)? "
                                                    "Images in positive/ and negative/ (or X/ and not_X/) folders "
                                                    "are scored")
    p.add_argument("--threshold", type=number(float, above=0, below=1), default=None,
                   help="with --positive: yes when the positive classes' probabilities add up to this (default: "
                        "when the top class is positive); for a multi-label model: answer every label from this "
                        "probability on, instead of the per-label thresholds tuned on validation")
    p.add_argument("--batch-size", type=SOME, default=64, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")

    c = sub.add_parser("check", formatter_class=_Formatter, help="find bad, converted, duplicate and leaked images",
                       description="The dataset doctor: reads every image of DATA (folder, CSV or built-in dataset) "
                                   "and reports unreadable files with the reason, decompression bombs, images that "
                                   "get converted, exact and near duplicates, train/validation/test leakage and "
                                   "the class balance. It never modifies a file. Exit code 1 when it finds "
                                   "unreadable files or leakage.")
    c.add_argument("data", help="image folder, CSV or dataset name")
    c.add_argument("--data-root", default=None, help="where built-in datasets live")
    c.add_argument("--max-pixels", type=SOME, default=None, help="refuse images with more pixels than this "
                                                                 "(default: Pillow's limit, about 89 million)")
    c.add_argument("--min-size", type=COUNT, default=16, help="flag images whose shorter side is below this")
    c.add_argument("--near", type=number(int, -1, 64), default=4, help="perceptual-hash distance (0-64) that counts as a near "
                                                       "duplicate; -1 turns the search off")
    c.add_argument("--output", default=None, help="write the whole report to this JSON file")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --output or --fix file")
    c.add_argument("--fix", default=None, help="write a clean file list (CSV of path,label,split) that imgclf "
                                               "train accepts: no unreadable files, no duplicates, no leakage")
    c.add_argument("--workers", type=COUNT, default=None, help="decoding processes (default: the CPU count)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")

    i = sub.add_parser("info", formatter_class=_Formatter, help="what a run holds",
                       description="Classes, model, parameters, best metric and the files of a run.")
    i.add_argument("run", help="run directory (runs/NAME) or run name")
    i.add_argument("--json", action="store_true", help="machine-readable output")

    s = sub.add_parser("summary", formatter_class=_Formatter, help="layers, shapes, parameters and MACs",
                       description="Each layer's output shape, parameters (trainable and frozen) and "
                                   "multiply-accumulates for one image, with the totals.")
    s.add_argument("model", help="cnn, cnn:SPEC, a timm model name, or a run directory")
    s.add_argument("--img-size", type=SIZE, default=None, help="input side (default: the run's, else 28 for cnn "
                                                                "and the architecture's own for timm models)")
    s.add_argument("--channels", type=int, choices=(1, 3), default=None, help="input channels (default: the "
                                                                                "run's, else 1 for cnn, 3 for timm)")
    s.add_argument("--num-classes", type=SOME, default=10, help="outputs, for a model name")

    v = sub.add_parser("viz", formatter_class=_Formatter, help="the convolution lessons on your own images",
                       description="What a filter does to an image, what pooling does, why a 1x1 convolution "
                                   "saves compute.")
    lessons = v.add_subparsers(dest="lesson", required=True, metavar="LESSON")
    k = lessons.add_parser("kernel", formatter_class=_Formatter, help="an image through one convolution filter")
    k.add_argument("image", help="any image file (shown in gray)")
    k.add_argument("--kernel", default="vertical", help="horizontal, vertical, sobel, sharpen, blur, or rows of "
                                                        "numbers such as '1,0,-1;2,0,-2;1,0,-1'")
    k.add_argument("--stride", type=SOME, default=1, help="step of the filter in pixels")
    k.add_argument("--padding", choices=("valid", "same"), default="valid", help="valid: no padding; same: zeros "
                                                                                   "around so the size is kept")
    _add_photo_output(k, "runs/viz/kernel.png")
    q = lessons.add_parser("pool", formatter_class=_Formatter, help="an image through max or average pooling")
    q.add_argument("image", help="any image file (shown in gray)")
    q.add_argument("--size", type=SOME, default=2, help="pooling window")
    q.add_argument("--stride", type=SOME, default=None, help="step (default: the window size)")
    q.add_argument("--kind", choices=("max", "avg"), default="max", help="max or average")
    _add_photo_output(q, "runs/viz/pool.png")
    b = lessons.add_parser("bottleneck", formatter_class=_Formatter, help="a k x k convolution with and without a "
                                                                          "1x1 reduction: parameters and MACs")
    b.add_argument("--in", dest="shape", default="28x28x192", help="input HxWxC")
    b.add_argument("--out", type=SOME, default=32, help="output channels")
    b.add_argument("--kernel", type=SOME, default=5, help="kernel size")
    b.add_argument("--reduce", type=SOME, default=16, help="channels after the 1x1 reduction")
    a = lessons.add_parser("data", formatter_class=_Formatter, help="sample images per class, class counts and an "
                                                                    "augmentation preview of a data set")
    a.add_argument("data", help="image folder, CSV or dataset name")
    a.add_argument("--augment", choices=AUGMENTS, default="light", help="the augmentation to preview")
    a.add_argument("--no-flip", dest="flip", action="store_false", default=None, help="preview without mirroring")
    a.add_argument("--img-size", type=SIZE, default=None, help="input side (default: what training would choose)")
    a.add_argument("--channels", type=int, choices=(1, 3), default=None, help="input channels")
    a.add_argument("--per-class", type=SOME, default=8, help="sample images per class")
    a.add_argument("--data-root", default=None, help="where built-in datasets live")
    a.add_argument("--output-dir", default=None, help="where samples.png, class_counts.png and augmentation.png "
                                                      "go (default: runs/viz/data, numbered when taken)")
    _add_overwrite(a)
    f = lessons.add_parser("filters", formatter_class=_Formatter, help="a trained model's first-layer filters")
    f.add_argument("run", help="run directory or name, or a pretrained model name such as efficientnet_lite0")
    f.add_argument("--output", default=None, help="where to save the picture (default: RUN/filters.png, or "
                                                  "runs/viz/MODEL-filters.png for a model name; numbered when taken)")
    _add_overwrite(f)
    m = lessons.add_parser("features", formatter_class=_Formatter, help="the feature maps of one layer for an image")
    m.add_argument("run", help="run directory or name, or a pretrained model name such as efficientnet_lite0")
    m.add_argument("image", help="any image file")
    m.add_argument("--layer", default=None, help="layer name as in 'imgclf summary RUN' (default: the first "
                                                 "activation after a convolution)")
    m.add_argument("--output", default=None, help="where to save the picture (default: RUN/features_LAYER.png, "
                                                  "or runs/viz/ for a model name; numbered when taken)")
    _add_overwrite(m)

    x = sub.add_parser("explain", formatter_class=_Formatter, help="Grad-CAM: where the model looked",
                       description="A Grad-CAM heat map over each image: the regions that raised the score of the "
                                   "predicted class (or --class) the most.")
    x.add_argument("run", help="run directory or name, or a pretrained model name such as efficientnet_lite0")
    x.add_argument("inputs", nargs="+", help="images, folders or globs")
    x.add_argument("--class", dest="target", default=None, help="explain this class (name or id) instead of the "
                                                                "predicted one")
    x.add_argument("--layer", default=None, help="layer to explain, as named in 'imgclf summary RUN' (default: "
                                                 "the last layer with a spatial map of at least 2x2)")
    x.add_argument("--output-dir", default=None, help="where the pictures go (default: RUN/explain, or "
                                                      "runs/explain/MODEL for a model name)")
    _add_overwrite(x)
    x.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")

    r = sub.add_parser("report", formatter_class=_Formatter, help="write the run's report.html",
                       description="One self-contained HTML page: config, data, curves and their diagnosis, "
                                   "evaluation figures, top losses and Grad-CAM examples. Training writes it "
                                   "unless --no-report; this command scores the run's test (else validation) "
                                   "split again and rewrites it.")
    r.add_argument("run", help="run directory (runs/NAME) or run name")
    r.add_argument("--no-gradcam", dest="gradcam", action="store_false", help="leave out the Grad-CAM examples")
    r.add_argument("--output", default=None, help="where to write the page (default: RUN/report.html, the run's "
                                                  "own, rewritten)")
    _add_overwrite(r)
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")

    o = sub.add_parser("export", formatter_class=_Formatter, help="export a run as ONNX or TorchScript",
                       description="Write the model with its class names and preprocessing in the file, then check "
                                   "it against PyTorch on the run's validation images: max |logit difference| "
                                   "<= 1e-4 and the same top-1 class (fp32), or an accuracy drop of at most 1 point "
                                   "(--int8). A failed check exits 1; the numbers go to FILE.check.json in the run.")
    o.add_argument("run", help="run directory (runs/NAME) or run name")
    o.add_argument("--format", dest="fmt", choices=("onnx", "torchscript"), default="onnx",
                   help="onnx (portable: onnxruntime, other frameworks, phones) or torchscript (PyTorch's own, "
                        "which PyTorch now marks deprecated)")
    o.add_argument("--opset", type=number(int, 7), default=None, help="ONNX opset (default: the exporter's, 18)")
    o.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: one image per call)")
    o.add_argument("--int8", action="store_true", help="static INT8 quantization with onnxruntime, calibrated on "
                                                       "training images")
    o.add_argument("--output", default=None, help="file to write (default: RUN/model.onnx, model_int8.onnx or "
                                                  "model.torchscript.pt)")
    o.add_argument("--check-images", type=SOME, default=256, help="validation images for the parity check")

    b = sub.add_parser("benchmark", formatter_class=_Formatter, help="inference and training speed per engine",
                       description="Images/s and latency at batch 1 and --batch-size for PyTorch eager, PyTorch "
                                   "compiled, ONNX Runtime fp32 and INT8 (exported to a temporary folder), and "
                                   "training images/s, on this machine; a run's validation images give each "
                                   "engine's accuracy (a bare model name is timed on random images).")
    b.add_argument("target", help="run directory or name, or a timm architecture name (random weights)")
    b.add_argument("--batch-size", type=SOME, default=64, help="the larger batch (batch 1 is always timed)")
    b.add_argument("--seconds", type=number(float, above=0), default=2.0, help="timing per engine and batch size")
    b.add_argument("--images", type=SOME, default=256, help="validation images to score each engine on")
    b.add_argument("--engines", default=",".join(BENCHMARK_ENGINES), help="comma-separated, from: "
                                                                         + ", ".join(BENCHMARK_ENGINES))
    b.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    b.add_argument("--output", default=None, help="also write the rows to a .csv or .json file")
    b.add_argument("--overwrite", action="store_true", help="replace an existing --output file")

    w = sub.add_parser("serve", formatter_class=_Formatter, help="a web page and REST API for a model",
                       description="Serve a run, an exported .onnx file or a pretrained model name: GET / is a page "
                                   "to drop a photo on; POST /predict takes multipart 'files' or JSON base64 "
                                   "'images'; GET /labels, /metadata, /healthz; OpenAPI docs at /docs.")
    w.add_argument("model", help="run directory or name, .onnx file, or a pretrained model name")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 opens it to the network)")
    w.add_argument("--port", type=number(int, 1, 65535), default=8000, help="TCP port")
    w.add_argument("--workers", type=SOME, default=1, help="server processes, each with its own copy of the model")
    w.add_argument("--api-key", default=None, help="require this key in the X-API-Key header (default: "
                                                   "$IMGCLF_API_KEY, else none)")
    w.add_argument("--max-upload-mb", type=POSITIVE, default=10.0, help="largest request body")
    w.add_argument("--max-pixels", type=SOME, default=40_000_000, help="largest image, in pixels, from its header")
    w.add_argument("--max-files", type=SOME, default=16, help="images per request")
    w.add_argument("--max-batch", type=SOME, default=32, help="images per forward pass when requests arrive together")
    w.add_argument("--batch-wait-ms", type=number(float, 0), default=5.0, help="how long the first image waits for others")
    w.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (PyTorch models)")

    n = sub.add_parser("runs", formatter_class=_Formatter, help="list the runs under a folder",
                       description="One line per run directory: name, date, data, model, mode, epochs done/planned, "
                                   "best validation value, test accuracy, parameters, wall time and status "
                                   "(running, finished, interrupted, failed); newest first.")
    n.add_argument("folder", nargs="?", default="runs", help="the folder that holds the run directories")
    n.add_argument("--sort", default=None, help="a column to sort by: test_acc, best, wall_s, date, name... "
                                                "(numbers best first)")
    n.add_argument("--output", default=None, help="also write the table to a .csv or .json file")
    _add_overwrite(n)

    m = sub.add_parser("compare", formatter_class=_Formatter, help="two or more runs side by side",
                       description="Their validation curves overlaid, their metrics, the settings that differ and "
                                   "their accuracy per class: printed, and written as a PNG and a self-contained "
                                   "HTML page.")
    m.add_argument("runs", nargs="+", help="run directories (runs/NAME) or run names")
    m.add_argument("--output", default=None, help="the HTML page to write, its figure beside it as .png "
                                                  "(default: compare.html here, numbered if taken)")
    _add_overwrite(m)

    d = sub.add_parser("demo", formatter_class=_Formatter, help="train, evaluate and predict on the bundled sample",
                       description="The whole workflow on 8,000 bundled Fashion-MNIST images, offline, in a few "
                                   "minutes on a laptop CPU.")
    d.add_argument("--epochs", type=SOME, default=15, help="epochs to train")
    d.add_argument("--project", default="runs", help="folder that holds the run directory")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="imgclf", formatter_class=_Formatter,
                                     description="Image classification with convolutional networks.")
    parser.add_argument("--version", action="version", version=f"imgclf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_train(sub, "cv")
    _add_train(sub, "lr-find")
    _add_train(sub, "tune")
    _add_commands(sub)
    return parser
