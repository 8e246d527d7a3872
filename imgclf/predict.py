"""Prediction inputs and outputs: files, folders and globs in; a table, CSV or JSON out."""
from __future__ import annotations

import csv
import glob
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .data.decode import is_image_file
from .errors import UserError


@dataclass
class Prediction:
    """The top-k classes of one image, most likely first; ``error`` is set when the file could not be read."""

    path: str
    labels: list[str]
    probs: list[float]
    error: str | None = None

    @property
    def label(self) -> str | None:
        return self.labels[0] if self.labels else None


def collect_inputs(items: list[str]) -> list[Path]:
    """Expand files, folders (recursively, images only) and glob patterns, in a stable order without repeats."""
    found: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found += sorted((p for p in path.rglob("*") if p.is_file() and is_image_file(p)
                             and not any(part.startswith(".") for part in p.relative_to(path).parts)))
        elif path.exists():
            found.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not matches:
                raise UserError(f"{item}: the pattern matches no file")
            found += matches
        else:
            raise UserError(f"{item}: no such file or folder")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise UserError(f"no images found in {', '.join(items)}")
    return unique


def format_table(predictions: list[Prediction]) -> str:
    """One line per image: the file, then 'label (probability)' for each of the top k."""
    width = min(60, max((len(p.path) for p in predictions), default=4))
    lines = []
    for p in predictions:
        shown = p.path if len(p.path) <= width else "..." + p.path[-width + 3:]
        right = f"error: {p.error}" if p.error else "  ".join(f"{lab} ({prob:.1%})" for lab, prob in
                                                               zip(p.labels, p.probs))
        lines.append(f"{shown:<{width}}  {right}")
    return "\n".join(lines)


def write_predictions(predictions: list[Prediction], path: Path) -> None:
    """CSV (one row per image: path, label, probability, top-k columns, error) or JSON, chosen by extension."""
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps([asdict(p) for p in predictions], indent=1, ensure_ascii=False), encoding="utf-8")
        return
    if path.suffix.lower() != ".csv":
        raise UserError(f"--output {path}: use a .csv or .json file name")
    k = max((len(p.labels) for p in predictions), default=1)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "prob"] + [f"{c}{i}" for i in range(2, k + 1) for c in ("label", "prob")]
                        + ["error"])
        for p in predictions:
            cells = [p.path]
            for i in range(k):
                cells += [p.labels[i], f"{p.probs[i]:.6f}"] if i < len(p.labels) else ["", ""]
            writer.writerow(cells + [p.error or ""])
