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


def write_rows(rows: list[dict], path: Path) -> None:
    """Rows as JSON (a list of objects) or CSV (a header line, then a line per row), chosen by the extension."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise UserError(f"--output {path}: use a .csv or .json file name")
    if suffix == ".json":
        path.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
        return
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["path"])
        writer.writeheader()
        writer.writerows(rows)


def write_predictions(predictions: list[Prediction], path: Path) -> None:
    """CSV (one row per image: path, label, probability, top-k columns, error) or JSON, chosen by extension."""
    if path.suffix.lower() == ".json":
        write_rows([asdict(p) for p in predictions], path)
        return
    k = max((len(p.labels) for p in predictions), default=1)
    rows = []
    for p in predictions:
        row = {"path": p.path}
        for i in range(k):
            suffix = str(i + 1) if i else ""
            row[f"label{suffix}"] = p.labels[i] if i < len(p.labels) else ""
            row[f"prob{suffix}"] = f"{p.probs[i]:.6f}" if i < len(p.labels) else ""
        rows.append(row | {"error": p.error or ""})
    write_rows(rows, path)
