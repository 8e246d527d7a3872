"""What runs hold: info, report, the runs table and compare."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError
from .options import Formatter, add_device, add_overwrite


def add_info(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("info", formatter_class=Formatter, help="what a run holds",
                       description="Classes, model, parameters, best metric and the files of a run.")
    i.add_argument("run", help="run directory (runs/NAME) or run name")
    i.add_argument("--json", action="store_true", help="machine-readable output")



def add_report(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", formatter_class=Formatter, help="write the run's report.html",
                       description="One self-contained HTML page: config, data, curves and their diagnosis, "
                                   "evaluation figures, top losses and Grad-CAM examples. Training writes it "
                                   "unless --no-report; this command scores the run's test (else validation) "
                                   "split again and rewrites it.")
    r.add_argument("run", help="run directory (runs/NAME) or run name")
    r.add_argument("--no-gradcam", dest="gradcam", action="store_false", help="leave out the Grad-CAM examples")
    r.add_argument("--output", default=None, help="where to write the page (default: RUN/report.html, the run's "
                                                  "own, rewritten)")
    add_overwrite(r)
    add_device(r)



def add_runs(sub: argparse._SubParsersAction) -> None:
    n = sub.add_parser("runs", formatter_class=Formatter, help="list the runs under a folder",
                       description="One line per run directory: name, date, data, model, mode, epochs done/planned, "
                                   "best validation value, test accuracy, parameters, wall time and status "
                                   "(running, finished, interrupted, failed); newest first.")
    n.add_argument("folder", nargs="?", default="runs", help="the folder that holds the run directories")
    n.add_argument("--sort", default=None, help="a column to sort by: test_acc, best, wall_s, date, name... "
                                                "(numbers best first)")
    n.add_argument("--output", default=None, help="also write the table to a .csv or .json file")
    add_overwrite(n)



def add_compare(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("compare", formatter_class=Formatter, help="two or more runs side by side",
                       description="Their validation curves overlaid, their metrics, the settings that differ and "
                                   "their accuracy per class: printed, and written as a PNG and a self-contained "
                                   "HTML page.")
    m.add_argument("runs", nargs="+", help="run directories (runs/NAME) or run names")
    m.add_argument("--output", default=None, help="the HTML page to write, its figure beside it as .png "
                                                  "(default: compare.html here, numbered if taken)")
    add_overwrite(m)


def cmd_info(args: argparse.Namespace) -> None:
    from ..inference.classifier import Classifier

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


def cmd_report(args: argparse.Namespace) -> None:
    from ..inference.classifier import Classifier
    from ..reports.report import write_report
    from ..run import output_file

    clf = Classifier.load(args.run, device=args.device)
    output = output_file(args.output, clf.run / "report.html", args.overwrite) if args.output else None
    print(f"report written to {write_report(clf, gradcam=args.gradcam, output=output)}")


def cmd_runs(args: argparse.Namespace) -> None:
    from ..inference.inputs import check_output, write_rows
    from ..reports.runs import format_table, list_runs

    if args.output:
        check_output(Path(args.output), args.overwrite)
    table = list_runs(args.folder, args.sort)
    print(format_table(table))
    if args.output:
        write_rows(table.astype(object).where(table.notna(), None).to_dict("records"), Path(args.output),
                   args.overwrite)
        print(f"{len(table)} run(s) written to {args.output}")


def cmd_compare(args: argparse.Namespace) -> None:
    from ..reports.compare import Comparison
    from ..run import output_file

    comparison = Comparison(args.runs)
    output = output_file(args.output, Path("compare.html"), args.overwrite)
    if output.suffix.lower() != ".html":
        raise UserError(f"--output {output}: the comparison is an HTML page; give a file name ending in .html")
    page, figure = comparison.save(output)
    print(comparison.summary())
    print(f"comparison written to {page} (figure: {figure})")


# command -> (what adds its parser, what runs it)
COMMANDS = {"info": (add_info, cmd_info), "report": (add_report, cmd_report), "runs": (add_runs, cmd_runs), "compare": (add_compare, cmd_compare)}
