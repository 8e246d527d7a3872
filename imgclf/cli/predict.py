"""Using a trained model on images: evaluate, predict and explain (Grad-CAM)."""
from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from ..resources import decode_workers
from ..errors import Interrupted, UserError
from .options import COUNT, SOME, Formatter, add_device, add_overwrite, number

if TYPE_CHECKING:
    from ..inference.inputs import PredictionWriter
    from ..inference.predictor import Predictor


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", formatter_class=Formatter, help="score a run on labelled images",
                       description="Accuracy, top-k accuracy, per-class precision/recall/F1 and the confusion "
                                   "matrix. Without DATA: the run's test split, else its validation split.")
    e.add_argument("run", help="run directory (runs/NAME) or run name")
    e.add_argument("data", nargs="?", help="labelled images: folder, CSV or dataset name")
    e.add_argument("--split", choices=("train", "val", "test"), default=None, help="which split of the data")
    e.add_argument("--top-k", type=SOME, default=5, help="k of the top-k accuracy")
    e.add_argument("--output-dir", default=None, help="where to write the report (default: the run directory for "
                                                      "its own split, RUN/eval/DATA-NAME/ for other data)")
    add_overwrite(e, "replace report files already in --output-dir")
    e.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the image, its mirror (unless the run was trained with "
                        "--no-flip) and two small shifts; the report gives the gain over plain")
    add_device(e)



def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", formatter_class=Formatter, help="top-k classes of images",
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
    add_overwrite(p, "replace an existing --output file")
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
    add_device(p)



def add_explain(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser("explain", formatter_class=Formatter, help="Grad-CAM: where the model looked",
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
    add_overwrite(x)
    add_device(x)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from ..inference.classifier import Classifier
    from ..inference.load import load_predictor
    from ..metrics.classification import EVAL_FILES
    from ..metrics.multilabel import MULTILABEL_FILES
    from ..run import output_dir, slug

    # a run, or a cross-validation's folds as one ensemble; an exported .onnx is refused by Classifier.load
    onnx = str(args.run).lower().endswith(".onnx")
    clf = Classifier.load(args.run, device=args.device) if onnx else load_predictor(args.run, device=args.device)
    if args.data is None and args.output_dir is None:
        out = clf.run.path  # the run's own split: its own report, rewritten
    else:  # other data never replaces the run's own evaluation
        default = clf.run / "eval" / slug(Path(str(args.data).rstrip("/\\")).stem) if args.data else clf.run.path
        out = output_dir(args.output_dir, default, MULTILABEL_FILES if clf.task.multilabel else EVAL_FILES,
                         args.overwrite)
    result = clf.evaluate(args.data, args.split, args.top_k, save_to=out, tta=args.tta)
    print(result.report())
    print(f"report, metrics and confusion matrix written to {out}")


def cmd_predict(args: argparse.Namespace) -> int:
    from ..data.pixel_csv import has_label_column, is_pixel_csv
    from ..inference.inputs import PredictionWriter, collect_inputs
    from ..inference.load import load_predictor

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
    previous = signal.signal(signal.SIGTERM, _stop)  # timeout, systemd, Kubernetes stop with SIGTERM: as Ctrl-C
    try:
        done, failed, labelled, right = _stream(clf, args, items, csvs, writer, skip)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return _summary(args, writer, skip, done, failed, labelled, right)


def _stop(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _stream(clf: "Predictor", args: argparse.Namespace, items: list, csvs: list, writer: "PredictionWriter | None",
            skip: set) -> tuple[int, int, int, int]:
    """Predict every input, printing the table as it goes or streaming rows into ``writer``; returns the inputs
    done, those that failed, and the labelled ones and how many of those were right."""
    from tqdm import tqdm

    from ..inference.inputs import format_table

    # Decoding runs in worker processes while the model runs here, once there is enough to share.
    workers = args.workers if args.workers is not None else \
        decode_workers() if len(items) - len(csvs) > 2 * args.batch_size else 0
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
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (see _stop): what is on disk, and how to go on
        if writer is None:
            raise
        raise Interrupted(f"stopped: {args.output} holds {writer.count} row(s); the same command with --resume "
                          f"adds the rest", 130) from None
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if shown:
        print(format_table(shown, width))
    return done, failed, labelled, right


def _summary(args: argparse.Namespace, writer: "PredictionWriter | None", skip: set, done: int, failed: int,
             labelled: int, right: int) -> int:
    """The closing lines of a prediction, and its exit code: 1 when no input could be predicted."""
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
    from ..inference.decide import format_decisions
    from ..inference.inputs import check_output, write_rows

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


def cmd_explain(args: argparse.Namespace) -> int:
    from ..inference.classifier import Classifier
    from ..reports.explain import explain_files
    from ..run import slug

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


# command -> (what adds its parser, what runs it)
COMMANDS = {"evaluate": (add_evaluate, cmd_evaluate), "predict": (add_predict, cmd_predict), "explain": (add_explain, cmd_explain)}
