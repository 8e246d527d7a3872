"""Prediction inputs and outputs: files, folders and globs in; a table, CSV or JSON out."""
from __future__ import annotations

import csv
import glob
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data.decode import is_image_file
from ..errors import UserError
from ..files import CsvWriter, read_cell, write_csv


@dataclass
class Prediction:
    """The top-k classes of one image, most likely first; ``error`` is set when the file could not be read."""

    path: str
    labels: list[str]
    probs: list[float]
    error: str | None = None
    truth: str | None = None  # the label a labelled pixel CSV gives the row
    scores: dict[str, float] | None = None  # multi-label: every label's probability (``labels``: those answered)

    @property
    def label(self) -> str | None:
        return self.labels[0] if self.labels else None


def top_indices(probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest probabilities, largest first (ties: the lower class id first)."""
    return np.argsort(-probs, kind="stable")[:k]


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


def format_table(predictions: list[Prediction], width: int | None = None) -> str:
    """One line per image: the file (in a column ``width`` wide), then 'label (probability)' for each of the
    top k."""
    width = width or min(60, max((len(p.path) for p in predictions), default=4))
    lines = []
    for p in predictions:
        shown = p.path if len(p.path) <= width else "..." + p.path[-width + 3:]
        right = f"error: {p.error}" if p.error else "  ".join(f"{lab} ({prob:.1%})" for lab, prob in
                                                               zip(p.labels, p.probs)) or _none(p)
        lines.append(f"{shown:<{width}}  {right}")
    return "\n".join(lines)


def _none(p: Prediction) -> str:
    """A multi-label image with no label at or above its threshold: "none", and its most likely label."""
    if not p.scores:
        return "none"
    best = max(p.scores, key=p.scores.get)
    return f"none (highest: {best} {p.scores[best]:.1%})"


def check_output(path: Path, overwrite: bool = False) -> None:
    """A .csv or .json file name that is new, or that the user allowed to be replaced."""
    if path.suffix.lower() not in (".csv", ".json"):
        raise UserError(f"--output {path}: use a .csv or .json file name")
    if path.exists() and not overwrite:
        raise UserError(f"--output {path}: the file exists; pass --overwrite to replace it, or choose another name")
    if not path.parent.is_dir():
        raise UserError(f"--output {path}: the folder {path.parent} does not exist; create it, or choose another")


def write_rows(rows: list[dict], path: Path, overwrite: bool = False) -> None:
    """Rows as JSON (a list of objects) or CSV (a header line, then a line per row), chosen by the extension."""
    check_output(path, overwrite)
    suffix = path.suffix.lower()
    if suffix == ".json":
        path.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
        return
    write_csv(path, rows, list(rows[0]) if rows else ["path"])


class PredictionWriter:
    """Predictions to a file as they come, so a run over 100,000 images holds none of them in memory and a run
    killed half way leaves a valid CSV of what is done (rows are flushed a batch at a time). ``.csv`` rows: path,
    label, prob, then the other top-k classes and the error; ``submission=True`` writes Kaggle's ``ImageId,Label``
    instead (ids from 1). A multi-label model's rows (``multilabel``: its label names) are path, the labels
    answered (``cat|dog``), one probability column per label, and the error. JSON is one document, written at the
    end. An existing file is refused unless ``overwrite``, or continued with ``resume``: :attr:`done` names what it
    holds, and a last row cut off by a kill is dropped."""

    def __init__(self, path: Path, k: int, submission: bool = False, overwrite: bool = False,
                 resume: bool = False, multilabel: list[str] | None = None) -> None:
        check_output(path, overwrite or resume)
        self.path, self.k, self.submission = path, k, submission and path.suffix.lower() == ".csv"
        self.multilabel = multilabel
        self.rows: list[dict] = []
        self.done: list[str] = []  # paths (or ImageIds) already in a resumed file
        self.file = self.writer = None
        self.count, self.created = 0, False
        if path.suffix.lower() == ".json":
            if resume:
                raise UserError(f"--resume {path}: a JSON file is written at the end; resume with a .csv --output")
            return
        header = ["ImageId", "Label"] if self.submission else self._header()
        if resume and path.exists():
            self.done = self._rows_done(header)
            self.file = path.open("a", newline="", encoding="utf-8")
            self.writer = CsvWriter(self.file)
        else:
            self.created = True
            self.file = path.open("w", newline="", encoding="utf-8")
            self.writer = CsvWriter(self.file)
            self.writer.writerow(header)
        self.count = len(self.done)

    def _header(self) -> list[str]:
        if self.multilabel is not None:
            return ["path", "labels", *self.multilabel, "error"]
        columns = ["path"]
        for i in range(self.k):
            suffix = str(i + 1) if i else ""
            columns += [f"label{suffix}", f"prob{suffix}"]
        return columns + ["error"]

    def _rows_done(self, header: list[str]) -> list[str]:
        with self.path.open(newline="", encoding="utf-8") as f:  # the csv module's records: a name may hold
            text = f.read()  # a newline or U+2028, which str.splitlines would split
        rows = list(csv.reader(io.StringIO(text)))
        if text and not text.endswith("\n"):  # killed while writing a row: drop the cut one
            rows = rows[:-1]
            with self.path.open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(rows)  # as they were read: still escaped
        if not rows or [read_cell(c) for c in rows[0]] != header:
            raise UserError(f"--resume {self.path}: its columns ({', '.join(rows[0] if rows else [])}) are not "
                            f"those of this prediction ({', '.join(header)}); use the same --top-k, or a new --output")
        return [read_cell(row[0]) for row in rows[1:] if row]

    def write(self, p: Prediction) -> None:
        self.count += 1
        if self.writer is None:
            self.rows.append({k: v for k, v in asdict(p).items() if k not in ("truth", "scores") or v is not None})
        elif self.submission:
            self.writer.writerow([self.count, p.label if p.label is not None else ""])
        elif self.multilabel is not None:
            scores = [f"{p.scores[c]:.6f}" for c in self.multilabel] if p.scores else [""] * len(self.multilabel)
            self.writer.writerow([p.path, "|".join(p.labels), *scores, p.error or ""])
        else:
            row = [p.path]
            for i in range(self.k):
                row += [p.labels[i], f"{p.probs[i]:.6f}"] if i < len(p.labels) else ["", ""]
            self.writer.writerow(row + [p.error or ""])

    def flush(self) -> None:
        if self.file is not None:
            try:
                self.file.flush()
            except OSError:
                self._drop_if_empty()
                raise

    def close(self) -> None:
        if self.file is None:  # JSON: all at the end, through a temporary file, so a failure leaves no half file
            temporary = self.path.with_name(f".{self.path.name}.part")
            try:
                temporary.write_text(json.dumps(self.rows, indent=1, ensure_ascii=False), encoding="utf-8")
                temporary.replace(self.path)
            finally:
                temporary.unlink(missing_ok=True)
            return
        try:
            self.file.close()
        except OSError:
            self._drop_if_empty()
            raise

    def _drop_if_empty(self) -> None:
        """After a failed write (a full disk): remove the file this writer created if not even its header line
        reached the disk. Rows that did are kept: a resumed run continues from them, dropping a cut last row."""
        if self.created and self.path.is_file() and b"\n" not in self.path.read_bytes()[:1 << 16]:
            self.path.unlink()
