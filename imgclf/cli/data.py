"""The dataset doctor: imgclf check."""
from __future__ import annotations

import argparse
from pathlib import Path

from .options import COUNT, SOME, Formatter, add_overwrite, number


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
    c.add_argument("--output", default=None, help="write the whole report to this JSON file")
    add_overwrite(c, "replace an existing --output or --fix file")
    c.add_argument("--fix", default=None, help="write a clean file list (CSV of path,label,split) that imgclf "
                                               "train accepts: no unreadable files, no duplicates, no leakage")
    c.add_argument("--workers", type=COUNT, default=None, help="decoding processes (default: the CPU count)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_check(args: argparse.Namespace) -> int:
    from ..data.check import DEFAULT_MAX_PIXELS, check, save_report, write_clean_list
    from ..run import output_file

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


# command -> (what adds its parser, what runs it)
COMMANDS = {"check": (add_check, cmd_check)}
