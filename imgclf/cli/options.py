"""What every command's arguments share: number and list types, the help formatter, the one-line usage error,
and the options several commands take (--device, --overwrite, the lesson outputs)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable

from ..config import TrainConfig
from ..errors import UserError

DEFAULTS = TrainConfig()


def number(kind: type = int, low: float | None = None, high: float | None = None, above: float | None = None,
           below: float | None = None) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` within bounds (``low``/``high`` inclusive, ``above``/``below``
    exclusive), so that ``--epochs 0`` is a one-line error rather than a silent default or a crash later."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") \
                from None
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {text}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be more than {above}, got {text}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"must be less than {below}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def names(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of ``choices`` (``--log tensorboard,mlflow``)."""
    def parse(text: str) -> list[str]:
        given = [name.strip().lower() for name in text.split(",") if name.strip()]
        if unknown := [name for name in given if name not in choices]:
            raise argparse.ArgumentTypeError(f"{unknown[0]!r} is not one of: {', '.join(choices)}")
        return given
    parse.__name__ = "list"
    return parse


COUNT, SOME, SIZE = number(int, 0), number(int, 1), number(int, 8)
FRACTION, POSITIVE = number(float, 0, below=1), number(float, above=0)


class Formatter(argparse.HelpFormatter):
    """Show every option's default, unless its help already explains it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or not action.option_strings or \
                action.nargs == 0:  # a flag: its default is that it is off
            return text
        return f"{text} (default: %(default)s)".strip()


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line that points to --help rather than the whole usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_overwrite(p: argparse.ArgumentParser,
                  help: str = "replace existing files instead of writing new numbered ones") -> None:
    p.add_argument("--overwrite", action="store_true", help=help)


def add_device(p: argparse.ArgumentParser, default: str = "auto", help: str = "auto, cpu, cuda, cuda:N or mps") -> None:
    """Where the model runs: the one spelling of ``--device`` every command shares."""
    p.add_argument("--device", default=default, help=help)


def add_photo_output(p: argparse.ArgumentParser, default: str) -> None:
    """The lessons on a photo: its size, and where the picture goes."""
    p.add_argument("--max-side", type=SIZE, default=None, help="shrink the photo first so that its longer side is "
                                                                 "at most this (default: keep its size)")
    p.add_argument("--output", default=None, help=f"where to save the picture (default: {default}, numbered when "
                                                  f"taken)")
    add_overwrite(p)


DATA_HELP = ("an image folder (one sub-folder per class, or train/ val/ test/ folders of them), a CSV of "
             "path,label[,split], a CSV of pixels (label,pixel1,...), or a built-in dataset: fashion-mnist, mnist, "
             "cifar10, food101, fashion-mnist-sample.")


def check_run_path(value: str) -> None:
    """A run given as a path that does not exist fails here, before torch is imported (11 s on a loaded laptop);
    a bare name (a run under runs/, or a pretrained model such as efficientnet_lite0) is left to the loader."""
    path = Path(value).expanduser()
    if path.exists() or (Path("runs") / value).exists() or value.lower().endswith(".onnx"):
        return
    if "/" in value or os.sep in value or path.suffix:
        raise UserError(f"{value}: no such run; give a run directory such as runs/<name> (see 'imgclf runs')")
