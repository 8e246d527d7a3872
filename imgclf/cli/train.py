"""Training commands: train, cv (k-fold cross-validation), lr-find (the range test) and tune (Optuna)."""
from __future__ import annotations

import argparse

from ..config import (AUGMENTS, CACHES, CLASS_WEIGHTS, DEFAULT_LR, DEFAULT_WEIGHT_DECAY, FEATURE_CACHE_ALIASES,
                      FEATURE_CACHES, FEATURE_EXTRACT_LR_SCALE, LOGGERS, LOSSES, MODES, MONITORS, OPTIMIZERS,
                      PRECISIONS, RECIPES, RESIZE_MODES, SAMPLERS, SCHEDULERS, TASKS)
from ..errors import UserError
from .options import COUNT, DATA_HELP, DEFAULTS, FRACTION, POSITIVE, SIZE, SOME, Formatter, add_device, names, number


def add_training(sub: argparse._SubParsersAction, command: str = "train") -> None:
    """``train``, or ``cv`` (the same options, and --folds): k-fold cross-validation, one training run per fold."""
    if command == "cv":
        p = sub.add_parser("cv", formatter_class=Formatter, help="k-fold cross-validation: a run per fold",
                           description="Cross-validate on DATA (" + DATA_HELP + ") Stratified folds of its train "
                           "(and validation) images, one run per fold under runs/NAME/fold-K/, a summary, "
                           "out-of-fold predictions (oof.csv); predict and evaluate on runs/NAME use the folds as "
                           "an ensemble. Every train option applies to each fold.")
        p.add_argument("--folds", type=number(int, 2), default=5, help="number of folds")
    elif command == "tune":
        p = sub.add_parser("tune", formatter_class=Formatter, help="hyperparameter search with Optuna",
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
        p = sub.add_parser("lr-find", formatter_class=Formatter, help="find a learning rate: the range test",
                           description="The learning-rate range test on DATA (" + DATA_HELP + ") The real model "
                           "trains for --steps batches while the rate grows exponentially from --start-lr to "
                           "--end-lr; the smoothed loss curve is saved as runs/NAME/lr_find.png and the rate of its "
                           "steepest descent is suggested, with the train command that uses it. The weights are "
                           "not kept. Every train option applies.")
        p.add_argument("--start-lr", type=POSITIVE, default=1e-7, help="the first learning rate")
        p.add_argument("--end-lr", type=POSITIVE, default=10.0, help="the last learning rate")
        p.add_argument("--steps", type=number(int, 10), default=100, help="batches to train")
    else:
        p = sub.add_parser("train", formatter_class=Formatter, help="train a classifier",
                           description="Train a classifier on DATA: " + DATA_HELP)
    p.add_argument("data", nargs="?", help="image folder, CSV or dataset name (optional with --resume)")
    p.add_argument("--task", choices=TASKS, default=DEFAULTS.task,
                   help="multiclass: one class per image (softmax); multilabel: any number of labels per image "
                        "(a sigmoid each, from a CSV 'labels' column holding cat|dog or cat;dog, or one 0/1 column "
                        "per label); auto: multilabel when a CSV row has several labels")
    p.add_argument("--model", default=DEFAULTS.model, help="cnn, cnn:SPEC (e.g. cnn:32-32-m-64-64-m-fc128), a timm "
                                                            "architecture (resnet18, efficientnet_lite0, ...) or a "
                                                            "torchvision one (googlenet; tv:NAME where timm has the "
                                                            "name too)")
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
                   type=lambda text: FEATURE_CACHE_ALIASES.get(text, text),
                   help="feature-extract: keep backbone features on disk ($IMGCLF_CACHE_DIR, else "
                        "~/.cache/imgclf/features), in ram, or none: recompute them every batch (memory and off "
                        "are accepted for ram and none)")
    p.add_argument("--epochs", type=SOME, default=None, help=f"epochs to train (default: {DEFAULTS.epochs})")
    p.add_argument("--batch-size", type=lambda text: None if text == "auto" else SOME(text), default=None,
                   help="images per optimizer step, or auto (the default): 128, and from 96 px or for a pretrained "
                        "model measured against half the memory available; a step that does not fit is made of "
                        "smaller batches whose gradients add up (--accumulate), so it stays the asked size")
    p.add_argument("--time", default=None,
                   help="the time the run may take, such as 90s, 10m or 1h: its first steps are timed and the "
                        "epochs that fit (with the final evaluation and report) are planned, the learning-rate "
                        "schedule with them; with --epochs the smaller wins")
    p.add_argument("--grad-checkpointing", action="store_true",
                   help="recompute activations during the backward pass instead of keeping them (timm's models): "
                        "much less memory per image for about a third more compute")
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
    p.add_argument("--recipe", choices=tuple(RECIPES), default=None,
                   help="a named set of settings, under the options given (which win): " +
                        "; ".join(f"{name}: {text}" for name, (_, text) in RECIPES.items()))
    p.add_argument("--tta", action="store_true",
                   help="evaluate the result with test-time augmentation (each test image also mirrored and shifted, "
                        "the probabilities averaged); the accuracy without is logged beside")
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
    p.add_argument("--teacher", default=None, metavar="RUN",
                   help="distil from this trained run (usually a large, fine-tuned one): the loss blends the labels' "
                        "with the teacher's softened answers (see --kd-logits)")
    p.add_argument("--kd-weight", type=float, default=DEFAULTS.kd_weight,
                   help="with --teacher: the distillation term's share of the loss (the labels' the rest)")
    p.add_argument("--kd-temperature", type=float, default=DEFAULTS.kd_temperature,
                   help="with --teacher: the temperature that softens both outputs")
    p.add_argument("--kd-logits", choices=("auto", "online", "cached"), default=DEFAULTS.kd_logits,
                   help="with --teacher: online = the teacher answers every augmented batch the student sees; "
                        "cached = once per image before training (cheaper, but blind to augmentation); auto: online "
                        "where the views are augmented or mixed")
    p.add_argument("--erase", type=FRACTION, default=DEFAULTS.erase,
                   help="random erasing (Zhong et al.): the probability that an image gets a random rectangle of 2-25%% "
                        "of it set to black, with --augment light; 0.25-0.5 is usual; 0 = off")
    p.add_argument("--no-flip", dest="flip", action="store_false", default=None,
                   help="never mirror images (digits, text); default: flip unless the dataset is digits")
    p.add_argument("--val-split", type=FRACTION, default=DEFAULTS.val_split,
                   help="share of train held out for validation when the data has no validation split")
    p.add_argument("--positive", default=None, metavar="CLASS", help="two classes: the one the run detects, whose "
                                                                      "threshold and precision/recall are reported "
                                                                      "(default: the other of a class named not_X, "
                                                                      "no_X or other; else the second by name)")
    p.add_argument("--limit", type=SOME, default=None, help="train on a sample of N training images (stratified by "
                                                           "class, seeded), to try a big data set on a slice first")
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
    add_device(p, DEFAULTS.device)
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULTS.precision,
                   help="autocast dtype for training and validation; auto: bf16 where it is the faster (CUDA "
                        "from Ampere, CPUs with AMX; with AVX-512 BF16 alone a long run times both), fp16 on older "
                        "GPUs, else fp32")
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


def _train_options(args: argparse.Namespace, *own: str) -> dict:
    """The training options of ``train``/``cv``/``lr-find`` as keywords of the Python API (without the
    command's ``own`` options); a resumed run takes its own, but for where it is and how loud."""
    options = {k: v for k, v in vars(args).items() if k not in ("command", "data", "model", "epochs", "resume",
                                                                 "devices", "argv", *own)}
    return {k: options[k] for k in ("name", "project", "quiet")} if getattr(args, "resume", False) else options


def cmd_train(args: argparse.Namespace) -> int | None:
    from .. import distributed

    if args.devices > 1 and not distributed.launched():  # this process becomes the launcher of N trainers
        return distributed.launch(args.devices, args.argv, args.device, args.sync_bn)
    from ..training.job import train

    train(args.data, args.model, args.epochs, resume=args.resume, **_train_options(args))
    return None


def _one_process(args: argparse.Namespace) -> None:
    if args.devices > 1:
        raise UserError(f"imgclf {args.command} runs in one process; --devices is for imgclf train")


def cmd_cv(args: argparse.Namespace) -> None:
    from ..experiments.cv import cross_validate

    _one_process(args)
    cross_validate(args.data, args.model, args.epochs, folds=args.folds, resume=args.resume,
                   **_train_options(args, "folds"))


def cmd_tune(args: argparse.Namespace) -> None:
    from ..experiments.tune import tune

    _one_process(args)
    tune(args.data, args.model, args.epochs, trials=args.trials, timeout=args.timeout, space=args.space,
         pruner=args.pruner, resume=args.resume, **_train_options(args, "trials", "timeout", "space", "pruner"))


def cmd_lr_find(args: argparse.Namespace) -> None:
    from ..training.lr_find import range_test

    _one_process(args)
    options = _train_options(args, "start_lr", "end_lr", "steps", "lr")
    result, run = range_test(args.data, args.model, args.start_lr, args.end_lr, args.steps, **options)
    # the same command as a training run, at the suggested rate
    skip = {"--start-lr", "--end-lr", "--steps", "--lr"}
    rest = [a for i, a in enumerate(args.argv[1:]) if a not in skip and (i == 0 or args.argv[i] not in skip)]
    print(f"suggested learning rate: {result.suggestion:.2g} (the loss falls fastest there); the curve: "
          f"{run / 'lr_find.png'}\n  imgclf train {' '.join(rest)} --lr {result.suggestion:.2g}")


# command -> (what adds its parser, what runs it)
COMMANDS = {"train": (add_training, cmd_train), "cv": (lambda sub: add_training(sub, "cv"), cmd_cv),
            "lr-find": (lambda sub: add_training(sub, "lr-find"), cmd_lr_find),
            "tune": (lambda sub: add_training(sub, "tune"), cmd_tune)}
