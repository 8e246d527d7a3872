"""Kaggle's pixel CSV layout (``label,pixel1,...,pixelN``, one image a row): recognising it and reading it a chunk at
a time. pandas is imported on first use rather than at the top: it costs 0.35 s of start-up, and predicting photos
(or serving an ONNX file) asks of every input whether it is a pixel CSV but never reads one."""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError

if TYPE_CHECKING:
    import pandas as pd

LABEL_COLUMNS = ("label", "class", "category", "target", "y")

def pick(frame: pd.DataFrame, wanted: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in frame.columns}
    return next((lower[w] for w in wanted if w in lower), None)


def is_pixel_table(frame: pd.DataFrame, label_col: str | None) -> bool:
    rest = [c for c in frame.columns if c != label_col]
    import pandas as pd

    return len(rest) >= 16 and all(pd.api.types.is_numeric_dtype(frame[c]) for c in rest)


def pixel_shape(path: Path, n_pixels: int) -> tuple[int, ...]:
    """(side, side) for gray or (side, side, 3) for RGB pixel columns."""
    side, side3 = math.isqrt(n_pixels), math.isqrt(n_pixels // 3)
    if side * side == n_pixels:
        return side, side
    if 3 * side3 * side3 == n_pixels:
        return side3, side3, 3
    raise UserError(f"{path}: {n_pixels} pixel columns do not make a square image "
                    f"(expected e.g. 784 for 28x28 gray or 3072 for 32x32 RGB)")


def pixels_of(path: Path, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if np.isnan(values).any() or values.min() < 0 or values.max() > 255:
        raise UserError(f"{path}: pixel values must be whole numbers from 0 to 255 with no empty cells")
    return values.astype(np.uint8).reshape(len(values), *shape)


def _head(path: Path) -> pd.DataFrame | None:
    if path.suffix.lower() != ".csv" or not path.is_file():
        return None
    import pandas as pd

    try:
        head = pd.read_csv(path, nrows=4)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    head.columns = [str(c).strip() for c in head.columns]
    return head


def is_pixel_csv(path: Path) -> bool:
    """A ``.csv`` file in Kaggle's pixel layout, with or without a label column (its first rows are read)."""
    head = _head(path)
    return head is not None and is_pixel_table(head, pick(head, LABEL_COLUMNS))


def has_label_column(path: Path) -> bool:
    """Whether a CSV has a label column (Kaggle's train.csv does, its test.csv does not)."""
    head = _head(path)
    return head is not None and pick(head, LABEL_COLUMNS) is not None


def iter_pixel_csv(path: Path, chunk_rows: int = 2048) -> Iterator[tuple[np.ndarray, list[str] | None]]:
    """(pixels (n, H, W[, C]) uint8, labels or None) per chunk of a pixel CSV's rows: memory stays that of one
    chunk however long the file (Kaggle's test.csv has 28,000 rows and no label column)."""
    import pandas as pd

    try:
        chunks = pd.read_csv(path, chunksize=chunk_rows)
        label_col = shape = None
        for frame in chunks:
            frame.columns = [str(c).strip() for c in frame.columns]
            if shape is None:
                label_col = pick(frame, LABEL_COLUMNS)
                shape = pixel_shape(path, frame.shape[1] - (label_col is not None))
            values = (frame.drop(columns=[label_col]) if label_col else frame).to_numpy()
            labels = frame[label_col].astype(str).str.strip().tolist() if label_col else None
            yield pixels_of(path, values, shape), labels
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path}: cannot read as CSV ({str(exc).splitlines()[0]})") from None


