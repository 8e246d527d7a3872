"""The course side: summary (layers, shapes, MACs), the viz lessons and the demo."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import AUGMENTS
from ..errors import UserError
from .options import SIZE, SOME, Formatter, add_overwrite, add_photo_output

if TYPE_CHECKING:
    from ..inference.classifier import Classifier


def add_summary(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("summary", formatter_class=Formatter, help="layers, shapes, parameters and MACs",
                       description="Each layer's output shape, parameters (trainable and frozen) and "
                                   "multiply-accumulates for one image, with the totals.")
    s.add_argument("model", help="cnn, cnn:SPEC, a timm or torchvision model name, or a run directory")
    s.add_argument("--img-size", type=SIZE, default=None, help="input side (default: the run's, else 28 for cnn "
                                                                "and the architecture's own for timm models)")
    s.add_argument("--channels", type=int, choices=(1, 3), default=None, help="input channels (default: the "
                                                                                "run's, else 1 for cnn, 3 for timm)")
    s.add_argument("--num-classes", type=SOME, default=10, help="outputs, for a model name")
    s.add_argument("--depth", type=SOME, default=None, help="one row per block this many levels down (1: "
                                                            "GoogLeNet's Inception modules, a ResNet's stages) "
                                                            "instead of one per layer")



def add_viz(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("viz", formatter_class=Formatter, help="the convolution lessons on your own images",
                       description="What a filter does to an image, what pooling does, why a 1x1 convolution "
                                   "saves compute.")
    lessons = v.add_subparsers(dest="lesson", required=True, metavar="LESSON")
    k = lessons.add_parser("kernel", formatter_class=Formatter, help="an image through one convolution filter")
    k.add_argument("image", help="any image file (shown in gray)")
    k.add_argument("--kernel", default="vertical", help="horizontal, vertical, sobel, sharpen, blur, or rows of "
                                                        "numbers such as '1,0,-1;2,0,-2;1,0,-1'")
    k.add_argument("--stride", type=SOME, default=1, help="step of the filter in pixels")
    k.add_argument("--padding", choices=("valid", "same"), default="valid", help="valid: no padding; same: zeros "
                                                                                   "around so the size is kept")
    add_photo_output(k, "runs/viz/kernel.png")
    q = lessons.add_parser("pool", formatter_class=Formatter, help="an image through max or average pooling")
    q.add_argument("image", help="any image file (shown in gray)")
    q.add_argument("--size", type=SOME, default=2, help="pooling window")
    q.add_argument("--stride", type=SOME, default=None, help="step (default: the window size)")
    q.add_argument("--kind", choices=("max", "avg"), default="max", help="max or average")
    add_photo_output(q, "runs/viz/pool.png")
    b = lessons.add_parser("bottleneck", formatter_class=Formatter, help="a k x k convolution with and without a "
                                                                          "1x1 reduction: parameters and MACs")
    b.add_argument("--in", dest="shape", default="28x28x192", help="input HxWxC")
    b.add_argument("--out", type=SOME, default=32, help="output channels")
    b.add_argument("--kernel", type=SOME, default=5, help="kernel size")
    b.add_argument("--reduce", type=SOME, default=16, help="channels after the 1x1 reduction")
    a = lessons.add_parser("data", formatter_class=Formatter, help="sample images per class, class counts and an "
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
    add_overwrite(a)
    f = lessons.add_parser("filters", formatter_class=Formatter, help="a trained model's first-layer filters")
    f.add_argument("run", help="run directory or name, or a pretrained model name such as efficientnet_lite0")
    f.add_argument("--output", default=None, help="where to save the picture (default: RUN/filters.png, or "
                                                  "runs/viz/MODEL-filters.png for a model name; numbered when taken)")
    add_overwrite(f)
    m = lessons.add_parser("features", formatter_class=Formatter, help="the feature maps of one layer for an image")
    m.add_argument("run", help="run directory or name, or a pretrained model name such as efficientnet_lite0")
    m.add_argument("image", help="any image file")
    m.add_argument("--layer", default=None, help="layer name as in 'imgclf summary RUN' (default: the first "
                                                 "activation after a convolution)")
    m.add_argument("--output", default=None, help="where to save the picture (default: RUN/features_LAYER.png, "
                                                  "or runs/viz/ for a model name; numbered when taken)")
    add_overwrite(m)



def add_demo(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", formatter_class=Formatter, help="train, evaluate and predict on the bundled sample",
                       description="The whole workflow on 8,000 bundled Fashion-MNIST images, offline, in a few "
                                   "minutes on a laptop CPU.")
    d.add_argument("--epochs", type=SOME, default=15, help="epochs to train")
    d.add_argument("--project", default="runs", help="folder that holds the run directory")


def cmd_summary(args: argparse.Namespace) -> None:
    from ..inference.classifier import Classifier
    from ..models import create_model, default_img_size, is_cnn
    from ..models.summary import format_summary, summarize

    is_run = Path(args.model).exists() or (Path("runs") / args.model).exists()
    if is_cnn(args.model) or not is_run:  # a model name; an unknown one is an error that lists close names
        channels = args.channels or (1 if is_cnn(args.model) else 3)
        size = args.img_size or default_img_size(args.model) or 28  # default_img_size checks the name
        model = create_model(args.model, args.num_classes, channels, size)
    else:
        clf = Classifier.load(args.model, device="cpu")
        model, channels, size = clf.model, clf.config.channels, args.img_size or clf.config.img_size
    shape = (channels, size, size)
    print(format_summary(summarize(model, shape, args.depth), model, shape))


VIZ_DIR = Path("runs") / "viz"


def _output(clf: "Classifier", args: argparse.Namespace, name: str) -> Path:
    """Where a picture goes: the user's --output, else the run directory, else runs/viz/MODEL-NAME; a default
    that is taken gets a new numbered name, and nothing is replaced without --overwrite."""
    from ..run import output_file, slug

    default = clf.run / name if clf.run is not None else VIZ_DIR / f"{slug(clf.config.model)}-{name}"
    return output_file(args.output, default, args.overwrite)


def _viz_model(args: argparse.Namespace) -> None:
    import torch

    from ..data.decode import BadImage
    from ..inference.classifier import Classifier
    from ..plots.style import to_hwc
    from ..reports import explain

    clf = Classifier.load(args.run, device="cpu")
    if args.lesson == "filters":
        name, conv = explain.first_conv(clf.model)
        path = explain.plot_filters(clf.model, _output(clf, args, "filters.png"))
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
                                     _output(clf, args, f"features_{layer.replace('.', '_')}.png"))
    print(f"layer {layer}: {maps.shape[0]} feature maps of {maps.shape[1]}x{maps.shape[2]}; picture written to "
          f"{path}")


def cmd_viz(args: argparse.Namespace) -> None:
    lesson = {"filters": _viz_model, "features": _viz_model, "data": _viz_data, "bottleneck": _viz_bottleneck}
    lesson.get(args.lesson, _viz_photo)(args)


def _viz_data(args: argparse.Namespace) -> None:
    from ..lessons import convolution as lessons
    from ..run import output_dir

    folder = output_dir(args.output_dir, VIZ_DIR / "data", list(lessons.DATA_FIGURES), args.overwrite)
    written = lessons.data_overview(args.data, folder, args.data_root, args.img_size,
                                    args.channels, args.augment, args.flip, args.per_class)
    print(f"pictures written: {', '.join(map(str, written))}")


def _viz_bottleneck(args: argparse.Namespace) -> None:
    from ..lessons import bottleneck as lessons

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


def _viz_photo(args: argparse.Namespace) -> None:
    """The kernel and pool lessons: a photo through one filter or one pooling window."""
    from ..lessons import convolution as lessons
    from ..run import output_file

    image = lessons.load_gray(args.image, args.max_side)
    out = output_file(args.output, VIZ_DIR / f"{args.lesson}.png", args.overwrite)
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


def cmd_demo(args: argparse.Namespace) -> None:
    from ..lessons.demo import run_demo

    run_demo(args.epochs, args.project)


# command -> (what adds its parser, what runs it)
COMMANDS = {"summary": (add_summary, cmd_summary), "viz": (add_viz, cmd_viz), "demo": (add_demo, cmd_demo)}
