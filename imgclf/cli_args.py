"""The ``imgclf`` command line's arguments: every command, option, default and help text (argparse)."""
from __future__ import annotations

import argparse

from . import __version__
from .config import AUGMENTS, FEATURE_CACHES, MODES, OPTIMIZERS, RESIZE_MODES, SCHEDULERS, TrainConfig

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
