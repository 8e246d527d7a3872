"""The ``imgclf`` command line: train, evaluate, predict, check, info, summary, viz, explain, report and demo."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .config import AUGMENTS, FEATURE_CACHES, MODES, OPTIMIZERS, RESIZE_MODES, SCHEDULERS, TrainConfig
from .errors import Interrupted, UserError

if TYPE_CHECKING:
    from .classifier import Classifier

DEFAULTS = TrainConfig()


class _Formatter(argparse.HelpFormatter):
    """Show every option's default, unless its help already explains it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".strip()


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line that points to --help rather than the whole usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", formatter_class=_Formatter, help="train a classifier",
                       description="Train a classifier on DATA: an image folder (one sub-folder per class, or "
                                   "train/ val/ test/ folders of them), a CSV of path,label[,split], a CSV of pixels "
                                   "(label,pixel1,...), or a built-in dataset: fashion-mnist, mnist, cifar10, "
                                   "food101, fashion-mnist-sample.")
    p.add_argument("data", nargs="?", help="image folder, CSV or dataset name (optional with --resume)")
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
    t.add_argument("--head-epochs", type=int, default=None,
                   help="fine-tune: epochs (counted in --epochs) that train only the new head (default: 1, or 0 "
                        "when --epochs is 1)")
    t.add_argument("--backbone-lr-scale", type=float, default=DEFAULTS.backbone_lr_scale,
                   help="fine-tune: the backbone's learning rate as a fraction of --lr")
    t.add_argument("--freeze-bn", action="store_true", help="fine-tune: keep every batch-norm layer's ImageNet "
                                                            "statistics (for small data sets); frozen blocks always "
                                                            "keep theirs")
    t.add_argument("--feature-cache", choices=FEATURE_CACHES, default=DEFAULTS.feature_cache,
                   help="feature-extract: keep backbone features on disk ($IMGCLF_CACHE_DIR, else "
                        "~/.cache/imgclf/features), in memory, or recompute them every batch")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs to train (default: {DEFAULTS.epochs})")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="images per training step")
    p.add_argument("--img-size", type=int, default=None, help="input side in pixels (default: the images' own size "
                                                                "when small and uniform, else 96 for cnn or the "
                                                                "architecture's size)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None, help="input channels (default: 1 if every "
                                                                                "image is grayscale, else 3)")
    p.add_argument("--resize", choices=RESIZE_MODES, default=DEFAULTS.resize,
                   help="crop: keep aspect ratio and crop the centre; squash: stretch")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULTS.optimizer, help="sgd = SGD with Nesterov momentum")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 0.05 sgd, 1e-3 adam, "
                                                            "3e-3 adamw)")
    p.add_argument("--weight-decay", type=float, default=None, help="(default: 5e-4 sgd, 0 adam, 0.05 adamw)")
    p.add_argument("--momentum", type=float, default=DEFAULTS.momentum, help="SGD momentum")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=DEFAULTS.scheduler,
                   help="learning-rate schedule; plateau = reduce-LR-on-plateau")
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help="epochs of learning-rate warm-up (default: a quarter of training for onecycle, 1 for cosine)")
    p.add_argument("--label-smoothing", type=float, default=DEFAULTS.label_smoothing,
                   help="label smoothing of the cross-entropy loss")
    p.add_argument("--augment", choices=AUGMENTS, default=None,
                   help="light: shifts and flips; standard: crops, rotations, colour jitter and flips (default: "
                        "light, none for feature-extract)")
    p.add_argument("--no-flip", dest="flip", action="store_false", default=None,
                   help="never mirror images (digits, text); default: flip unless the dataset is digits")
    p.add_argument("--val-split", type=float, default=DEFAULTS.val_split,
                   help="share of train held out for validation when the data has no validation split")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed for the split, the weights and the batches")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    p.add_argument("--max-bad-fraction", type=float, default=DEFAULTS.max_bad_fraction,
                   help="stop before training when more than this share of the images cannot be read")
    p.add_argument("--monitor", default=DEFAULTS.monitor, help="metric for the best checkpoint and early stopping")
    p.add_argument("--patience", type=int, default=DEFAULTS.patience, help="early-stopping patience; 0 = off")
    p.add_argument("--min-delta", type=float, default=DEFAULTS.min_delta, help="smallest change that counts")
    p.add_argument("--plateau-patience", type=int, default=DEFAULTS.plateau_patience,
                   help="reduce-LR-on-plateau: epochs without improvement before reducing")
    p.add_argument("--plateau-factor", type=float, default=DEFAULTS.plateau_factor,
                   help="reduce-LR-on-plateau: multiply the learning rate by this")
    p.add_argument("--name", default=None, help="run name (default: a new one under --project)")
    p.add_argument("--project", default=DEFAULTS.project, help="folder that holds the run directories")
    p.add_argument("--exist-ok", action="store_true", help="train into an existing run directory")
    p.add_argument("--resume", action="store_true", help="continue the run --name (default: the latest) from its "
                                                          "last checkpoint")
    p.add_argument("--data-root", default=None, help="where built-in datasets live (default "
                                                     "~/.cache/imgclf/datasets)")
    p.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="full precision on GPU")
    p.add_argument("--workers", type=int, default=None, help="augmentation worker processes (default: cores - 1)")
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
    e.add_argument("--top-k", type=int, default=5, help="k of the top-k accuracy")
    e.add_argument("--output-dir", default=None, help="where to write the report (default: the run directory)")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")

    p = sub.add_parser("predict", formatter_class=_Formatter, help="top-k classes of images",
                       description="Predict image files, folders (recursively) and glob patterns.")
    p.add_argument("run", help="run directory (runs/NAME), run name, or a pretrained model name such as "
                               "efficientnet_lite0 for its ImageNet classes")
    p.add_argument("inputs", nargs="+", help="images, folders or globs such as 'photos/*.jpg'")
    p.add_argument("--top-k", type=int, default=5, help="how many classes to show per image")
    p.add_argument("--output", default=None, help="write predictions to a .csv or .json file")
    p.add_argument("--positive", default=None, help="answer yes/no per image: is it one of these classes "
                                                    "(comma-separated names or ids, e.g. hotdog or 281,282,283)? "
                                                    "Images in positive/ and negative/ (or X/ and not_X/) folders "
                                                    "are scored")
    p.add_argument("--threshold", type=float, default=None, help="with --positive: yes when the positive classes' "
                                                                  "summed probability reaches this (default: yes "
                                                                  "when the top class is positive)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")

    c = sub.add_parser("check", formatter_class=_Formatter, help="find bad, converted, duplicate and leaked images",
                       description="The dataset doctor: reads every image of DATA (folder, CSV or built-in dataset) "
                                   "and reports unreadable files with the reason, decompression bombs, images that "
                                   "get converted, exact and near duplicates, train/validation/test leakage and "
                                   "the class balance. It never modifies a file. Exit code 1 when it finds "
                                   "unreadable files or leakage.")
    c.add_argument("data", help="image folder, CSV or dataset name")
    c.add_argument("--data-root", default=None, help="where built-in datasets live")
    c.add_argument("--max-pixels", type=int, default=None, help="refuse images with more pixels than this "
                                                                 "(default: Pillow's limit, about 89 million)")
    c.add_argument("--min-size", type=int, default=16, help="flag images whose shorter side is below this")
    c.add_argument("--near", type=int, default=4, help="perceptual-hash distance (0-64) that counts as a near "
                                                       "duplicate; -1 turns the search off")
    c.add_argument("--output", default=None, help="write the whole report to this JSON file")
    c.add_argument("--fix", default=None, help="write a clean file list (CSV of path,label,split) that imgclf "
                                               "train accepts: no unreadable files, no duplicates, no leakage")
    c.add_argument("--workers", type=int, default=None, help="decoding processes (default: the CPU count)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")

    i = sub.add_parser("info", formatter_class=_Formatter, help="what a run holds",
                       description="Classes, model, parameters, best metric and the files of a run.")
    i.add_argument("run", help="run directory (runs/NAME) or run name")
    i.add_argument("--json", action="store_true", help="machine-readable output")

    s = sub.add_parser("summary", formatter_class=_Formatter, help="layers, shapes, parameters and MACs",
                       description="Each layer's output shape, parameters (trainable and frozen) and "
                                   "multiply-accumulates for one image, with the totals.")
    s.add_argument("model", help="cnn, cnn:SPEC, a timm model name, or a run directory")
    s.add_argument("--img-size", type=int, default=None, help="input side (default: the run's, else 28 for cnn "
                                                                "and the architecture's own for timm models)")
    s.add_argument("--channels", type=int, choices=(1, 3), default=None, help="input channels (default: the "
                                                                                "run's, else 1 for cnn, 3 for timm)")
    s.add_argument("--num-classes", type=int, default=10, help="outputs, for a model name")

    v = sub.add_parser("viz", formatter_class=_Formatter, help="the convolution lessons on your own images",
                       description="What a filter does to an image, what pooling does, why a 1x1 convolution "
                                   "saves compute.")
    lessons = v.add_subparsers(dest="lesson", required=True, metavar="LESSON")
    k = lessons.add_parser("kernel", formatter_class=_Formatter, help="an image through one convolution filter")
    k.add_argument("image", help="any image file (shown in gray)")
    k.add_argument("--kernel", default="vertical", help="horizontal, vertical, sobel, sharpen, blur, or rows of "
                                                        "numbers such as '1,0,-1;2,0,-2;1,0,-1'")
    k.add_argument("--stride", type=int, default=1, help="step of the filter in pixels")
    k.add_argument("--padding", choices=("valid", "same"), default="valid", help="valid: no padding; same: zeros "
                                                                                   "around so the size is kept")
    k.add_argument("--output", default="kernel.png", help="where to save the picture")
    q = lessons.add_parser("pool", formatter_class=_Formatter, help="an image through max or average pooling")
    q.add_argument("image", help="any image file (shown in gray)")
    q.add_argument("--size", type=int, default=2, help="pooling window")
    q.add_argument("--stride", type=int, default=None, help="step (default: the window size)")
    q.add_argument("--kind", choices=("max", "avg"), default="max", help="max or average")
    q.add_argument("--output", default="pool.png", help="where to save the picture")
    b = lessons.add_parser("bottleneck", formatter_class=_Formatter, help="a k x k convolution with and without a "
                                                                          "1x1 reduction: parameters and MACs")
    b.add_argument("--in", dest="shape", default="28x28x192", help="input HxWxC")
    b.add_argument("--out", type=int, default=32, help="output channels")
    b.add_argument("--kernel", type=int, default=5, help="kernel size")
    b.add_argument("--reduce", type=int, default=16, help="channels after the 1x1 reduction")
    a = lessons.add_parser("data", formatter_class=_Formatter, help="sample images per class, class counts and an "
                                                                    "augmentation preview of a data set")
    a.add_argument("data", help="image folder, CSV or dataset name")
    a.add_argument("--augment", choices=AUGMENTS, default="light", help="the augmentation to preview")
    a.add_argument("--no-flip", dest="flip", action="store_false", default=None, help="preview without mirroring")
    a.add_argument("--img-size", type=int, default=None, help="input side (default: what training would choose)")
    a.add_argument("--channels", type=int, choices=(1, 3), default=None, help="input channels")
    a.add_argument("--per-class", type=int, default=8, help="sample images per class")
    a.add_argument("--data-root", default=None, help="where built-in datasets live")
    a.add_argument("--output-dir", default=".", help="where samples.png, class_counts.png and augmentation.png go")
    f = lessons.add_parser("filters", formatter_class=_Formatter, help="a trained model's first-layer filters")
    f.add_argument("run", help="run directory or name, or a pretrained model name such as efficientnet_lite0")
    f.add_argument("--output", default=None, help="where to save the picture (default: RUN/filters.png)")
    m = lessons.add_parser("features", formatter_class=_Formatter, help="the feature maps of one layer for an image")
    m.add_argument("run", help="run directory or name, or a pretrained model name such as efficientnet_lite0")
    m.add_argument("image", help="any image file")
    m.add_argument("--layer", default=None, help="layer name as in 'imgclf summary RUN' (default: the first "
                                                 "activation after a convolution)")
    m.add_argument("--output", default=None, help="where to save the picture (default: RUN/features_LAYER.png)")

    x = sub.add_parser("explain", formatter_class=_Formatter, help="Grad-CAM: where the model looked",
                       description="A Grad-CAM heat map over each image: the regions that raised the score of the "
                                   "predicted class (or --class) the most.")
    x.add_argument("run", help="run directory or name, or a pretrained model name such as efficientnet_lite0")
    x.add_argument("inputs", nargs="+", help="images, folders or globs")
    x.add_argument("--class", dest="target", default=None, help="explain this class (name or id) instead of the "
                                                                "predicted one")
    x.add_argument("--layer", default=None, help="layer to explain, as named in 'imgclf summary RUN' (default: "
                                                 "the last layer with a spatial map of at least 2x2)")
    x.add_argument("--output-dir", default=None, help="where the pictures go (default: RUN/explain, or ./explain "
                                                      "for a model name)")
    x.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")

    r = sub.add_parser("report", formatter_class=_Formatter, help="write the run's report.html",
                       description="One self-contained HTML page: config, data, curves and their diagnosis, "
                                   "evaluation figures, top losses and Grad-CAM examples. Training writes it "
                                   "unless --no-report; this command scores the run's test (else validation) "
                                   "split again and rewrites it.")
    r.add_argument("run", help="run directory (runs/NAME) or run name")
    r.add_argument("--no-gradcam", dest="gradcam", action="store_false", help="leave out the Grad-CAM examples")
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
    o.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's, 18)")
    o.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: one image per call)")
    o.add_argument("--int8", action="store_true", help="static INT8 quantization with onnxruntime, calibrated on "
                                                       "training images")
    o.add_argument("--output", default=None, help="file to write (default: RUN/model.onnx, model_int8.onnx or "
                                                  "model.torchscript.pt)")
    o.add_argument("--check-images", type=int, default=256, help="validation images for the parity check")

    w = sub.add_parser("serve", formatter_class=_Formatter, help="a web page and REST API for a model",
                       description="Serve a run, an exported .onnx file or a pretrained model name: GET / is a page "
                                   "to drop a photo on; POST /predict takes multipart 'files' or JSON base64 "
                                   "'images'; GET /labels, /metadata, /healthz; OpenAPI docs at /docs.")
    w.add_argument("model", help="run directory or name, .onnx file, or a pretrained model name")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 opens it to the network)")
    w.add_argument("--port", type=int, default=8000, help="TCP port")
    w.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy of the model")
    w.add_argument("--api-key", default=None, help="require this key in the X-API-Key header (default: "
                                                   "$IMGCLF_API_KEY, else none)")
    w.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body")
    w.add_argument("--max-pixels", type=int, default=40_000_000, help="largest image, in pixels, from its header")
    w.add_argument("--max-files", type=int, default=16, help="images per request")
    w.add_argument("--max-batch", type=int, default=32, help="images per forward pass when requests arrive together")
    w.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long the first image waits for others")
    w.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (PyTorch models)")

    d = sub.add_parser("demo", formatter_class=_Formatter, help="train, evaluate and predict on the bundled sample",
                       description="The whole workflow on 8,000 bundled Fashion-MNIST images, offline, in a few "
                                   "minutes on a laptop CPU.")
    d.add_argument("--epochs", type=int, default=15, help="epochs to train")
    d.add_argument("--project", default="runs", help="folder that holds the run directory")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="imgclf", formatter_class=_Formatter,
                                     description="Image classification with convolutional networks.")
    parser.add_argument("--version", action="version", version=f"imgclf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_commands(sub)
    return parser


def cmd_train(args: argparse.Namespace) -> None:
    from .api import train

    options = {k: v for k, v in vars(args).items() if k not in ("command", "data", "model", "epochs", "resume",
                                                                 "exist_ok")}
    if args.resume:
        options = {k: options[k] for k in ("name", "project", "quiet")}
    train(args.data, args.model, args.epochs, resume=args.resume, exist_ok=args.exist_ok, **options)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .classifier import Classifier

    clf = Classifier.load(args.run, device=args.device)
    out = Path(args.output_dir) if args.output_dir else clf.run.path
    result = clf.evaluate(args.data, args.split, args.top_k, save_to=out)
    print(result.report())
    print(f"report, metrics and confusion matrix written to {out}")


def cmd_predict(args: argparse.Namespace) -> None:
    from .classifier import Classifier
    from .predict import format_table, write_predictions

    clf = Classifier.load(args.run, device=args.device)
    if args.positive is not None:
        _predict_binary(clf, args)
        return
    if args.threshold is not None:
        raise UserError("--threshold goes with --positive CLASS")
    predictions = clf.predict(args.inputs, top_k=args.top_k, batch_size=args.batch_size)
    if args.output:
        write_predictions(predictions, Path(args.output))
        print(f"{len(predictions)} prediction(s) written to {args.output}")
    else:
        print(format_table(predictions))
    failed = sum(p.error is not None for p in predictions)
    if failed:
        print(f"{failed} of {len(predictions)} file(s) could not be read", file=sys.stderr)


def _predict_binary(clf: "Classifier", args: argparse.Namespace) -> None:
    from .binary import format_decisions
    from .predict import write_rows

    decisions = clf.decide(args.inputs, args.positive, args.threshold, args.batch_size)
    if args.output:
        write_rows([asdict(d) for d in decisions], Path(args.output))
        print(f"{len(decisions)} decision(s) written to {args.output}")
    print(format_decisions(decisions, args.positive))


def cmd_check(args: argparse.Namespace) -> int:
    from .check import DEFAULT_MAX_PIXELS, check, save_report, write_clean_list

    if args.fix and Path(args.fix).exists():
        raise UserError(f"--fix {args.fix}: the file exists; choose a new name (check never overwrites a file)")
    report = check(args.data, args.data_root, args.max_pixels or DEFAULT_MAX_PIXELS, args.min_size, args.near,
                   args.workers, args.quiet)
    print(report.summary())
    if args.output:
        save_report(report, Path(args.output))
        print(f"report written to {args.output}")
    if args.fix:
        rows = write_clean_list(report, Path(args.fix))
        print(f"clean file list ({rows} images) written to {args.fix}; train on it with: imgclf train {args.fix}")
    return 1 if report.problems else 0


def cmd_info(args: argparse.Namespace) -> None:
    from .classifier import Classifier

    info = Classifier.load(args.run, device="cpu").info()
    if args.json:
        print(json.dumps(info, indent=1, ensure_ascii=False))
        return
    for key, value in info.items():
        if key == "classes":
            value = f"{len(value)}: {', '.join(value[:20])}{', ...' if len(value) > 20 else ''}"
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        elif isinstance(value, int):
            value = f"{value:,}"
        print(f"{key:>11}: {value}")


def cmd_summary(args: argparse.Namespace) -> None:
    import timm

    from .classifier import Classifier
    from .models import create_model, default_img_size, is_cnn
    from .summary import format_summary, summarize

    if is_cnn(args.model) or (timm.is_model(args.model) and not Path(args.model).exists()):
        channels = args.channels or (1 if is_cnn(args.model) else 3)
        size = args.img_size or default_img_size(args.model) or 28
        model = create_model(args.model, args.num_classes, channels, size)
    else:
        clf = Classifier.load(args.model, device="cpu")
        model, channels, size = clf.model, clf.config.channels, args.img_size or clf.config.img_size
    shape = (channels, size, size)
    print(format_summary(summarize(model, shape), model, shape))


def _output(clf: "Classifier", given: str | None, name: str) -> Path:
    """Where a picture goes: the user's path, else the run directory, else the current folder."""
    return Path(given) if given else (clf.run.path if clf.run is not None else Path(".")) / name


def _viz_model(args: argparse.Namespace) -> None:
    import torch

    from . import explain
    from .classifier import Classifier
    from .data.decode import BadImage
    from .plots.style import to_hwc

    clf = Classifier.load(args.run, device="cpu")
    if args.lesson == "filters":
        name, conv = explain.first_conv(clf.model)
        path = explain.plot_filters(clf.model, _output(clf, args.output, "filters.png"))
        print(f"{name}: {conv.weight.shape[0]} filters of {'x'.join(map(str, conv.weight.shape[1:]))}; picture "
              f"written to {path}")
        return
    try:
        pixels = torch.tensor(clf.pixels(args.image))[None]
    except BadImage as exc:
        raise UserError(f"{args.image}: {exc}") from None
    layer = args.layer or explain.default_feature_layer(clf.model, tuple(pixels.shape[1:]))
    maps = explain.feature_maps(clf, pixels, layer)
    path = explain.plot_feature_maps(maps, to_hwc(pixels)[0], layer,
                                     _output(clf, args.output, f"features_{layer.replace('.', '_')}.png"))
    print(f"layer {layer}: {maps.shape[0]} feature maps of {maps.shape[1]}x{maps.shape[2]}; picture written to "
          f"{path}")


def cmd_viz(args: argparse.Namespace) -> None:
    from . import lessons

    if args.lesson in ("filters", "features"):
        _viz_model(args)
        return
    if args.lesson == "data":
        written = lessons.data_overview(args.data, Path(args.output_dir), args.data_root, args.img_size,
                                        args.channels, args.augment, args.flip, args.per_class)
        print(f"pictures written: {', '.join(map(str, written))}")
        return
    if args.lesson == "bottleneck":
        try:
            h, w, c = (int(v) for v in args.shape.lower().split("x"))
        except ValueError:
            raise UserError(f"--in {args.shape!r}: use HxWxC, e.g. 28x28x192") from None
        direct, reduced = lessons.bottleneck(h, w, c, args.out, args.kernel, args.reduce)
        k = args.kernel
        print(f"input {h}x{w}x{c} -> output {h}x{w}x{args.out}, 'same' padding, no biases\n")
        print(f"{'':34}{'parameters':>14}{'multiply-adds':>18}")
        print(f"{f'{k}x{k} conv, {args.out} filters':34}{direct.params:>14,}{direct.macs:>18,}")
        print(f"{f'1x1 to {args.reduce}, then {k}x{k} to {args.out}':34}{reduced.params:>14,}{reduced.macs:>18,}")
        print(f"\nthe 1x1 reduction needs {direct.macs / reduced.macs:.1f}x fewer multiply-adds and "
              f"{direct.params / reduced.params:.1f}x fewer parameters")
        return
    image = lessons.load_gray(args.image)
    out = Path(args.output)
    if args.lesson == "kernel":
        kernel = lessons.parse_kernel(args.kernel)
        result = lessons.convolve(image, kernel, args.stride, args.padding)
        pad = kernel.shape[0] // 2 if args.padding == "same" else 0
        print(f"input {image.shape[0]}x{image.shape[1]}, kernel {kernel.shape[0]}x{kernel.shape[1]}, stride "
              f"{args.stride}, padding {args.padding} ({pad}) -> output {result.shape[0]}x{result.shape[1]} "
              f"(floor(({image.shape[0]} + 2*{pad} - {kernel.shape[0]}) / {args.stride}) + 1 = "
              f"{lessons.output_size(image.shape[0], kernel.shape[0], args.stride, pad)})")
        lessons.plot_kernel(image, kernel, result, out, f"{args.kernel} kernel, stride {args.stride}, "
                                                        f"{args.padding} padding")
    else:
        result = lessons.pool(image, args.size, args.stride, args.kind)
        print(f"{args.kind}-pooling {args.size}x{args.size}, stride {args.stride or args.size}: "
              f"{image.shape[0]}x{image.shape[1]} -> {result.shape[0]}x{result.shape[1]}")
        lessons.plot_pair(image, result, out, f"{args.kind}-pooling {args.size}x{args.size}")
    print(f"picture written to {out}")


def cmd_explain(args: argparse.Namespace) -> int:
    from .classifier import Classifier
    from .explain import explain_files

    clf = Classifier.load(args.run, device=args.device)
    results = explain_files(clf, args.inputs, _output(clf, args.output_dir, "explain"), args.target, args.layer)
    failed = 0
    for path, text in results:
        failed += text.startswith("error:")
        print(f"{path}: {text}", file=sys.stderr if text.startswith("error:") else sys.stdout)
    if failed == len(results):
        raise UserError("no image could be read")
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> None:
    from .classifier import Classifier
    from .report import write_report

    clf = Classifier.load(args.run, device=args.device)
    print(f"report written to {write_report(clf, gradcam=args.gradcam)}")


def cmd_export(args: argparse.Namespace) -> None:
    from .classifier import Classifier
    from .export import export, summary

    clf = Classifier.load(args.run, device="cpu")
    result = export(clf, args.fmt, args.output, args.opset, args.dynamic_batch, args.int8, args.check_images)
    print(f"exported {result.path} ({result.check['bytes'] / 1e6:.1f} MB) in {result.check['seconds']:.1f} s")
    print(f"parity check passed: {summary(result)}")
    if args.fmt == "onnx":
        print(f"predict with it alone: imgclf predict {result.path} IMAGES")


def cmd_serve(args: argparse.Namespace) -> None:
    from .serve import Limits, serve

    limits = Limits(int(args.max_upload_mb * 1024 * 1024), args.max_pixels, args.max_files)
    print(f"serving {args.model} on http://{args.host}:{args.port}/ (API docs at /docs); Ctrl-C stops", flush=True)
    serve(args.model, args.host, args.port, args.workers, args.api_key, limits, args.device, args.max_batch,
          args.batch_wait_ms)


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.epochs, args.project)


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "check": cmd_check, "info": cmd_info,
            "summary": cmd_summary, "viz": cmd_viz, "explain": cmd_explain, "report": cmd_report,
            "export": cmd_export, "serve": cmd_serve, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes print one line and exit 2; Ctrl-C exits 130."""
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
    except UserError as exc:
        print(f"imgclf {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"\nimgclf {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted; a training run continues with: imgclf train --resume --name RUN", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
