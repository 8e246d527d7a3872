"""The ``imgclf`` commands (train, evaluate, predict, check, info, summary, viz, explain, report, export, serve,
demo, runs, compare, tune); their arguments are defined in :mod:`imgclf.cli_args`."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from .cli_args import build_parser
from .errors import Interrupted, UserError

if TYPE_CHECKING:
    from .classifier import Classifier
    from .predictor import Predictor


def _train_options(args: argparse.Namespace, *own: str) -> dict:
    """The training options of ``train``/``cv``/``lr-find`` as keywords of the Python API (without the
    command's ``own`` options); a resumed run takes its own, but for where it is and how loud."""
    options = {k: v for k, v in vars(args).items() if k not in ("command", "data", "model", "epochs", "resume",
                                                                 "devices", "argv", *own)}
    return {k: options[k] for k in ("name", "project", "quiet")} if getattr(args, "resume", False) else options


def cmd_train(args: argparse.Namespace) -> int | None:
    from . import distributed

    if args.devices > 1 and not distributed.launched():  # this process becomes the launcher of N trainers
        return distributed.launch(args.devices, args.argv, args.device, args.sync_bn)
    from .api import train

    train(args.data, args.model, args.epochs, resume=args.resume, **_train_options(args))
    return None


def _one_process(args: argparse.Namespace) -> None:
    if args.devices > 1:
        raise UserError(f"imgclf {args.command} runs in one process; --devices is for imgclf train")


def cmd_cv(args: argparse.Namespace) -> None:
    from .cv import cross_validate

    _one_process(args)
    cross_validate(args.data, args.model, args.epochs, folds=args.folds, resume=args.resume,
                   **_train_options(args, "folds"))


def cmd_tune(args: argparse.Namespace) -> None:
    from .tune import tune

    _one_process(args)
    tune(args.data, args.model, args.epochs, trials=args.trials, timeout=args.timeout, space=args.space,
         pruner=args.pruner, resume=args.resume, **_train_options(args, "trials", "timeout", "space", "pruner"))


def cmd_lr_find(args: argparse.Namespace) -> None:
    from .lr_find import range_test

    _one_process(args)
    options = _train_options(args, "start_lr", "end_lr", "steps", "lr")
    result, run = range_test(args.data, args.model, args.start_lr, args.end_lr, args.steps, **options)
    # the same command as a training run, at the suggested rate
    skip = {"--start-lr", "--end-lr", "--steps", "--lr"}
    rest = [a for i, a in enumerate(args.argv[1:]) if a not in skip and (i == 0 or args.argv[i] not in skip)]
    print(f"suggested learning rate: {result.suggestion:.2g} (the loss falls fastest there); the curve: "
          f"{run / 'lr_find.png'}\n  imgclf train {' '.join(rest)} --lr {result.suggestion:.2g}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .metrics import EVAL_FILES
    from .predictor import load_predictor
    from .run import output_dir, slug

    from .classifier import Classifier

    # a run, or a cross-validation's folds as one ensemble; an exported .onnx is refused by Classifier.load
    onnx = str(args.run).lower().endswith(".onnx")
    clf = Classifier.load(args.run, device=args.device) if onnx else load_predictor(args.run, device=args.device)
    if args.data is None and args.output_dir is None:
        out = clf.run.path  # the run's own split: its own report, rewritten
    else:  # other data never replaces the run's own evaluation
        default = clf.run / "eval" / slug(Path(str(args.data).rstrip("/\\")).stem) if args.data else clf.run.path
        out = output_dir(args.output_dir, default, EVAL_FILES, args.overwrite)
    result = clf.evaluate(args.data, args.split, args.top_k, save_to=out, tta=args.tta)
    print(result.report())
    print(f"report, metrics and confusion matrix written to {out}")


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .data.sources import has_label_column, is_pixel_csv
    from .predict import PredictionWriter, collect_inputs, format_table
    from .predictor import load_predictor

    clf = load_predictor(args.run, device=args.device)
    clf.tta = args.tta
    if args.positive is not None:
        return _predict_binary(clf, args)
    if args.threshold is not None:
        if not clf.task.multilabel:
            raise UserError("--threshold goes with --positive CLASS (or with a multi-label model)")
        clf.threshold = args.threshold  # every label from this probability on
    if args.resume and not args.output:
        raise UserError("--resume continues an --output file; give its name with --output")
    items = collect_inputs(args.inputs)  # every input checked before a file is written
    csvs = [i for i in items if is_pixel_csv(i)]
    k = max(1, min(args.top_k, len(clf.classes)))
    submission = len(items) == 1 and len(csvs) == 1 and not has_label_column(csvs[0])
    writer = PredictionWriter(Path(args.output), k, submission, args.overwrite, args.resume,
                              clf.classes if clf.task.multilabel else None) if args.output else None
    skip = set() if writer is None else \
        {f"{csvs[0]}#{n}" for n in writer.done} if writer.submission else set(writer.done)
    if skip:
        print(f"resuming: {len(skip)} input(s) already in {args.output}", file=sys.stderr)
    # Decoding runs in worker processes while the model runs here, once there is enough to share.
    workers = args.workers if args.workers is not None else \
        min(8, os.cpu_count() or 1) if len(items) - len(csvs) > 2 * args.batch_size else 0
    width = min(60, max(len(str(i)) + (7 if i in csvs else 0) for i in items))
    done = failed = labelled = right = 0
    shown = []
    bar = tqdm(total=None if csvs else len(items) - len(skip), unit="img", disable=True if writer is None else None,
               desc="predicting", file=sys.stderr, leave=False)
    try:
        for p in clf.iter_predict(items, args.top_k, args.batch_size, workers, skip):
            done, failed = done + 1, failed + (p.error is not None)
            if p.truth is not None and p.error is None:
                labelled, right = labelled + 1, right + (p.label == p.truth)
            if writer is not None:
                writer.write(p)
                if done % args.batch_size == 0:  # what is done is on disk: a killed run resumes from it
                    writer.flush()
                    bar.update(args.batch_size)
                continue
            shown.append(p)
            if len(shown) == args.batch_size:  # printed as it goes: 100,000 files need not wait for the last
                print(format_table(shown, width), flush=True)
                shown = []
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if shown:
        print(format_table(shown, width))
    if writer is not None:
        what = "ImageId,Label rows (a Kaggle submission)" if writer.submission else "prediction(s)"
        print(f"{done} {what} written to {args.output}{f' ({len(skip)} were there)' if skip else ''}")
    if labelled:
        print(f"accuracy {right / labelled:.4f} on the {labelled} labelled row(s)")
    if done and failed == done:
        print(f"imgclf predict: error: none of the {done} input(s) could be predicted (reasons above)",
              file=sys.stderr)
        return 1
    if failed:
        print(f"{failed} of {done} file(s) could not be read", file=sys.stderr)
    return 0


def _predict_binary(clf: "Predictor", args: argparse.Namespace) -> int:
    from .binary import format_decisions
    from .predict import check_output, write_rows

    if args.output:
        check_output(Path(args.output), args.overwrite)
    decisions = clf.decide(args.inputs, args.positive, args.threshold, args.batch_size)
    if args.output:
        write_rows([asdict(d) for d in decisions], Path(args.output), args.overwrite)
        print(f"{len(decisions)} decision(s) written to {args.output}")
    print(format_decisions(decisions, args.positive))
    if all(d.error is not None for d in decisions):
        print(f"imgclf predict: error: none of the {len(decisions)} input(s) could be read", file=sys.stderr)
        return 1
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .check import DEFAULT_MAX_PIXELS, check, save_report, write_clean_list
    from .run import output_file

    for option, given in (("--output", args.output), ("--fix", args.fix)):
        if given:
            output_file(given, Path(given), args.overwrite, option)  # refuses an existing file before the work
    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    report = check(args.data, args.data_root, max_pixels, args.min_size, args.near, args.workers, args.quiet)
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
    from .classifier import Classifier
    from .models import create_model, default_img_size, is_cnn
    from .summary import format_summary, summarize

    is_run = Path(args.model).exists() or (Path("runs") / args.model).exists()
    if is_cnn(args.model) or not is_run:  # a model name; an unknown one is an error that lists close names
        channels = args.channels or (1 if is_cnn(args.model) else 3)
        size = args.img_size or default_img_size(args.model) or 28  # default_img_size checks the name
        model = create_model(args.model, args.num_classes, channels, size)
    else:
        clf = Classifier.load(args.model, device="cpu")
        model, channels, size = clf.model, clf.config.channels, args.img_size or clf.config.img_size
    shape = (channels, size, size)
    print(format_summary(summarize(model, shape), model, shape))


# Where the lessons' pictures go when no --output is given (never the current folder).
VIZ_DIR = Path("runs") / "viz"


def _output(clf: "Classifier", args: argparse.Namespace, name: str) -> Path:
    """Where a picture goes: the user's --output, else the run directory, else runs/viz/MODEL-NAME; a default
    that is taken gets a new numbered name, and nothing is replaced without --overwrite."""
    from .run import output_file, slug

    default = clf.run / name if clf.run is not None else VIZ_DIR / f"{slug(clf.config.model)}-{name}"
    return output_file(args.output, default, args.overwrite)


def _viz_model(args: argparse.Namespace) -> None:
    import torch

    from . import explain
    from .classifier import Classifier
    from .data.decode import BadImage
    from .plots.style import to_hwc

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
    from . import lessons
    from .run import output_dir, output_file

    if args.lesson in ("filters", "features"):
        _viz_model(args)
        return
    if args.lesson == "data":
        folder = output_dir(args.output_dir, VIZ_DIR / "data", list(lessons.DATA_FIGURES), args.overwrite)
        written = lessons.data_overview(args.data, folder, args.data_root, args.img_size,
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


def cmd_explain(args: argparse.Namespace) -> int:
    from .classifier import Classifier
    from .explain import explain_files
    from .run import slug

    clf = Classifier.load(args.run, device=args.device)
    folder = Path(args.output_dir) if args.output_dir else \
        clf.run / "explain" if clf.run is not None else Path("runs") / "explain" / slug(clf.config.model)
    results = explain_files(clf, args.inputs, folder, args.target, args.layer, args.overwrite)
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
    from .run import output_file

    clf = Classifier.load(args.run, device=args.device)
    output = output_file(args.output, clf.run / "report.html", args.overwrite) if args.output else None
    print(f"report written to {write_report(clf, gradcam=args.gradcam, output=output)}")


def cmd_export(args: argparse.Namespace) -> None:
    from .classifier import Classifier
    from .export import export, summary

    clf = Classifier.load(args.run, device="cpu")
    result = export(clf, args.fmt, args.output, args.opset, args.dynamic_batch, args.int8, args.check_images)
    print(f"exported {result.path} ({result.check['bytes'] / 1e6:.1f} MB) in {result.check['seconds']:.1f} s")
    print(f"parity check passed: {summary(result)}")
    if args.fmt == "onnx":
        print(f"predict with it alone: imgclf predict {result.path} IMAGES")


def cmd_benchmark(args: argparse.Namespace) -> None:
    from .benchmark import as_dicts, benchmark, format_rows
    from .device import resolve_device
    from .predict import check_output, write_rows

    if args.output:
        check_output(Path(args.output), args.overwrite)  # before minutes of timing
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    rows = benchmark(args.target, args.batch_size, args.seconds, args.images, str(resolve_device(args.device)),
                     engines, log=lambda m: print(m, file=sys.stderr))
    print(format_rows(rows))
    if args.output:
        write_rows(as_dicts(rows), Path(args.output), args.overwrite)
        print(f"{len(rows)} row(s) written to {args.output}")


def cmd_serve(args: argparse.Namespace) -> None:
    from .serve import Limits, serve

    limits = Limits(int(args.max_upload_mb * 1024 * 1024), args.max_pixels, args.max_files)
    print(f"serving {args.model} on http://{args.host}:{args.port}/ (API docs at /docs); Ctrl-C stops", flush=True)
    serve(args.model, args.host, args.port, args.workers, args.api_key, limits, args.device, args.max_batch,
          args.batch_wait_ms)


def cmd_runs(args: argparse.Namespace) -> None:
    from .predict import check_output, write_rows
    from .runs_table import format_table, list_runs

    if args.output:
        check_output(Path(args.output), args.overwrite)
    table = list_runs(args.folder, args.sort)
    print(format_table(table))
    if args.output:
        write_rows(table.astype(object).where(table.notna(), None).to_dict("records"), Path(args.output),
                   args.overwrite)
        print(f"{len(table)} run(s) written to {args.output}")


def cmd_compare(args: argparse.Namespace) -> None:
    from .compare import Comparison
    from .run import output_file

    comparison = Comparison(args.runs)
    output = output_file(args.output, Path("compare.html"), args.overwrite)
    if output.suffix.lower() != ".html":
        raise UserError(f"--output {output}: the comparison is an HTML page; give a file name ending in .html")
    page, figure = comparison.save(output)
    print(comparison.summary())
    print(f"comparison written to {page} (figure: {figure})")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.epochs, args.project)


COMMANDS = {"train": cmd_train, "cv": cmd_cv, "lr-find": cmd_lr_find, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "check": cmd_check, "info": cmd_info,
            "summary": cmd_summary, "viz": cmd_viz, "explain": cmd_explain, "report": cmd_report,
            "export": cmd_export, "benchmark": cmd_benchmark, "serve": cmd_serve, "demo": cmd_demo,
            "runs": cmd_runs, "compare": cmd_compare, "tune": cmd_tune}


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes print one line and exit 2; Ctrl-C exits 130."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # what --devices hands on to the processes it launches
    # In a run of several processes every one meets the same mistake; the first says so, the others stay quiet.
    say = os.environ.get("RANK", "0") == "0"
    try:
        code = COMMANDS[args.command](args)
    except UserError as exc:
        if say:
            print(f"imgclf {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        if say:
            print(f"\nimgclf {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        hint = {"train": "; a training run continues with: imgclf train --resume --name RUN",
                "predict": "; the rows done are in --output, and the same command with --resume adds the rest"}
        print(f"\ninterrupted{hint.get(args.command, '')}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `imgclf predict ... | head`: the reader left; say nothing more (Python's advice)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
