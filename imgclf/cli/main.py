"""``imgclf``: the parser assembled from one module per command group, and the entry point that turns user
mistakes into one line and an exit code. Each group module holds its commands' arguments beside their handlers;
the handlers import the heavy parts (torch, timm, onnxruntime) only when they run, so that ``imgclf --help``
starts fast."""
from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..config import RECIPES
from ..errors import CheckFailed, Interrupted, UserError
from ..files import describe_os_error
from . import data, deploy, lessons, predict, runs, train
from .options import Formatter, Parser, check_run_path

# the order --help lists the commands in
ORDER = ("train", "cv", "lr-find", "tune", "evaluate", "predict", "check", "info", "summary", "viz", "explain",
         "report", "export", "benchmark", "serve", "runs", "compare", "demo")
COMMANDS = {name: entry for group in (train, predict, data, runs, lessons, deploy)
            for name, entry in group.COMMANDS.items()}


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser, in :data:`ORDER`."""
    parser = Parser(prog="imgclf", formatter_class=Formatter,
                    description="Image classification with convolutional networks.")
    parser.add_argument("--version", action="version", version=f"imgclf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ORDER:
        COMMANDS[name][0](sub)
    return parser


TRAINING = ("train", "cv", "tune", "lr-find", "check")  # the commands whose first argument is DATA


def _check_paths(args: argparse.Namespace) -> None:
    """The paths a command was given exist (DATA, a run), checked before its handler imports anything heavy."""
    if args.command in TRAINING:
        if getattr(args, "data", None) and not getattr(args, "resume", False):
            from ..data.sources import check_data  # numpy and pandas, not torch

            check_data(args.data)
        return
    for given in (getattr(args, "run", None), getattr(args, "target", None), getattr(args, "model", None)):
        if isinstance(given, str) and args.command != "summary":
            check_run_path(given)


def _with_recipe(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    """``--recipe NAME``: the command line parsed again with the recipe's settings as the defaults, so that the
    options given still win."""
    if getattr(args, "recipe", None) is None:
        return args
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands.choices[args.command].set_defaults(**RECIPES[args.recipe][0])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes print one line and exit 2; Ctrl-C exits 130."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = _with_recipe(parser, parser.parse_args(argv), argv)
    args.argv = argv  # what --devices hands on to the processes it launches
    # In a run of several processes every one meets the same mistake; the first says so, the others stay quiet.
    say = os.environ.get("RANK", "0") == "0"
    try:
        _check_paths(args)  # a typo fails here, in a second, before torch and timm are imported
        code = COMMANDS[args.command][1](args)
    except UserError as exc:
        if say:
            print(f"imgclf {args.command}: error: {exc.cli_message}", file=sys.stderr)
        return 1 if isinstance(exc, CheckFailed) else 2
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
    except OSError as exc:  # a full disk, a folder that cannot be written: what failed and where, exit 1
        if say:
            where = getattr(args, "output", None) or getattr(args, "project", None)
            print(f"imgclf {args.command}: error: {describe_os_error(exc, where)}", file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
