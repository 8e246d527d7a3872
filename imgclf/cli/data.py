"""The dataset doctor: imgclf check."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from ..config import MODES
from .options import COUNT, SIZE, SOME, Formatter, add_device, add_overwrite, number


def add_check(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("check", formatter_class=Formatter, help="find bad, converted, duplicate and leaked images",
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
    c.add_argument("--output", default=None, help="write the whole report to this JSON file (with --apply: the "
                                                  "cleaned file list, a CSV)")
    add_overwrite(c, "replace an existing --output or --fix file")
    c.add_argument("--fix", default=None, help="write a clean file list (CSV of path,label,split) that imgclf "
                                               "train accepts: no unreadable files, no duplicates, no leakage")
    c.add_argument("--workers", type=COUNT, default=None, help="decoding processes (default: the CPU count)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    lab = c.add_argument_group("wrong labels (--labels)", "k-fold out-of-fold probabilities (imgclf cv) scored by "
                               "cleanlab: label_issues.csv worst first, review.html to decide, a summary per class")
    lab.add_argument("--labels", action="store_true", help="find the wrong labels, outliers and copies labelled "
                                                           "differently")
    lab.add_argument("--folds", type=number(int, 2), default=5, help="folds (fewer when a class is smaller)")
    lab.add_argument("--model", default=None, help="the model of the folds (default: cnn for a few epochs on small "
                                                   "images, else efficientnet_lite0's ImageNet features and a new head)")
    lab.add_argument("--pretrained", action="store_true", default=None, help="start the folds' model from ImageNet "
                                                                             "weights")
    lab.add_argument("--mode", choices=MODES, default=None, help="as imgclf train --mode")
    lab.add_argument("--epochs", type=SOME, default=None,
                     help="epochs per fold (default: 15 for the cnn on small images)")
    lab.add_argument("--img-size", type=SIZE, default=None, help="as imgclf train --img-size")
    lab.add_argument("--batch-size", type=SOME, default=None, help="as imgclf train --batch-size")
    lab.add_argument("--seed", type=COUNT, default=0, help="seed of the folds and the models")
    lab.add_argument("--from-cv", default=None, metavar="NAME", help="score an imgclf cv run under --project "
                                                                      "instead of training new folds")
    lab.add_argument("--name", default=None, help="the folder under --project (default: DATA-labels)")
    lab.add_argument("--project", default="runs", help="where the label check's folder goes")
    lab.add_argument("--resume", action="store_true", help="continue a killed check --name from its folds done")
    add_device(lab, "auto")
    lab.add_argument("--apply", default=None, metavar="FIXES", help="write --output: DATA's file list (CSV of "
                                                                    "path,label,split) with the review page's "
                                                                    "fixes.csv applied (relabel, keep, drop); "
                                                                    "or a check's label_issues.csv, unreviewed: "
                                                                    "confident suggestions taken, the other "
                                                                    "label issues dropped, outliers kept")
    lab.add_argument("--min-confidence", type=float, default=None, metavar="P",
                     help="with --apply label_issues.csv: take a suggestion the models give at least P "
                          "(default 0.8), drop the image below it")


def cmd_check(args: argparse.Namespace) -> int:
    from ..data.check import DEFAULT_MAX_PIXELS, check, save_report, write_clean_list
    from ..run import output_file

    if args.apply or args.labels:
        return _labels(args)

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


def _labels(args: argparse.Namespace) -> int:
    """--labels (the wrong labels found) or --apply (the decisions on them turned into a clean file list)."""
    from ..experiments.labels import SURE, apply_fixes, find_label_issues
    from ..run import output_file

    if args.apply:
        if not args.output:
            raise UserError("--apply FIXES writes a cleaned file list: name it with --output clean.csv")
        sure = SURE if args.min_confidence is None else args.min_confidence
        if not 0 < sure <= 1:
            raise UserError(f"--min-confidence {sure} is not a probability: give one in (0, 1], e.g. 0.8")
        output = output_file(args.output, Path(args.output), args.overwrite, "--output")
        counts = apply_fixes(args.data, Path(args.apply), output, args.data_root, sure)
        print(f"{output}: {counts['rows']} images ({counts['relabelled']} relabelled, {counts['dropped']} dropped); "
              f"train on it with: imgclf train {output}")
        return 0
    given = {k: getattr(args, k) for k in ("img_size", "batch_size", "pretrained", "mode") if getattr(args, k)}
    find_label_issues(args.data, args.model, args.epochs, folds=args.folds, from_cv=args.from_cv,
                      resume=args.resume, name=args.name, project=args.project, seed=args.seed, device=args.device,
                      data_root=args.data_root, quiet=args.quiet, **given)
    return 0


# command -> (what adds its parser, what runs it)
COMMANDS = {"check": (add_check, cmd_check)}
