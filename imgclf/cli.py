"""The ``imgclf`` commands (train, evaluate, predict, check, info, summary, viz, explain, report, export, serve,
demo); their arguments are defined in :mod:`imgclf.cli_args`."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from .cli_args import build_parser
from .errors import Interrupted, UserError

if TYPE_CHECKING:
    from .classifier import Classifier


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
