"""Where images come from: an image folder, a CSV of paths, a CSV of pixels, or a built-in dataset.

Every source becomes a :class:`~imgclf.data.dataset.Source`: sorted class names and up to three labelled splits (train, val, test),
each a list of files to decode or an array of pixels already in memory. Nothing is decoded here.
"""
from __future__ import annotations

import difflib
import os
import re
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError, warn
from ..files import read_cell
from .builtin import BUILTIN, load_builtin
from .dataset import Source, Split
from .decode import is_image_file, unusable_file
from .pixel_csv import LABEL_COLUMNS, is_pixel_table, pick, pixel_shape, pixels_of

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
PATH_COLUMNS = ("path", "filepath", "file_path", "filename", "file", "image", "image_path", "img")
# A column of several labels per row, separated by "|" or ";" (``cat|dog``, ``cat;dog``): multi-label data.
MULTI_LABEL_COLUMNS = ("labels", "tags")
LABEL_SEPARATORS = r"[|;]"


def _nfc(name: str) -> str:
    # macOS stores file names decomposed (NFD); the same Korean class name must compare equal everywhere.
    return unicodedata.normalize("NFC", name)


def sort_classes(names: set[str]) -> list[str]:
    """Class-name order that decides the ids: numeric when every name is an integer (2 before 10), else by name."""
    if names and all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_below(folder: Path) -> list[Path]:
    found, special = [], []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for path in (Path(root) / f for f in sorted(files) if is_image_file(Path(f))):
            problem = unusable_file(path)  # a broken link stays: the decoder says "file not found" for it
            (special if problem and problem.kind == "not an image" else found).append(path)
    if special:
        warn(f"skipped {len(special)} entr{'y' if len(special) == 1 else 'ies'} under {folder} that "
             f"{'is' if len(special) == 1 else 'are'} not a regular file (a FIFO, socket or device), e.g. {special[0]}")
    return found


def _class_folder_split(folder: Path) -> dict[str, list[Path]]:
    """``folder/<class>/**/<image>`` as {class name: files}; classes with no image are left out."""
    return {_nfc(d.name): files for d in _visible_dirs(folder) if (files := _images_below(d))}


def _labelled(per_class: dict[str, list[Path]], classes: list[str]) -> Split:
    ids = {c: i for i, c in enumerate(classes)}
    paths = [p for c in per_class for p in per_class[c]]
    labels = np.array([ids[c] for c in per_class for _ in per_class[c]], dtype=np.int64)
    return Split(labels, paths=paths)


def from_folder(folder: Path) -> Source:
    """An image folder: ``<class>/`` sub-folders, or ``train/``, ``val/`` and ``test/`` each holding them."""
    subdirs = {d.name.lower(): d for d in _visible_dirs(folder)}
    split_layout = "train" in subdirs and set(subdirs) <= set(SPLIT_NAMES)
    layout = {SPLIT_NAMES[k]: _class_folder_split(d) for k, d in subdirs.items()} if split_layout \
        else {"train": _class_folder_split(folder)}
    train = layout["train"]
    if not train:
        where = folder / "train" if split_layout else folder
        raise UserError(f"{where}: no images found; expected one sub-folder per class holding "
                        f"{'/'.join(e.lstrip('.') for e in ('.jpg', '.png', '.bmp', '.gif', '.webp', '.tif'))} files")
    classes = sort_classes(set(train))
    for split, per_class in layout.items():
        unknown = sorted(set(per_class) - set(classes))
        if unknown:
            raise UserError(f"{folder}/{split}: class folder(s) {', '.join(map(repr, unknown))} have no training "
                            f"images; add them to train/ or remove them")
    splits = {name: _labelled(per_class, classes) for name, per_class in layout.items() if per_class}
    return Source(_nfc(folder.resolve().name), classes, splits)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path}: cannot read as CSV ({str(exc).splitlines()[0]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    for column in frame.columns:  # a list imgclf wrote: its spreadsheet escapes undone
        if pd.api.types.is_string_dtype(frame[column]) or pd.api.types.is_object_dtype(frame[column]):
            frame[column] = frame[column].map(read_cell)
    return frame


def from_pixel_csv(path: Path, frame: pd.DataFrame, label_col: str) -> Source:
    """Kaggle's MNIST layout: ``label,pixel1,...,pixelN`` with N a square number (gray) or 3 x a square (RGB)."""
    values = frame.drop(columns=[label_col]).to_numpy()
    pixels = pixels_of(path, values, pixel_shape(path, values.shape[1]))
    names = frame[label_col].astype(str).str.strip()
    classes = sort_classes(set(names))
    ids = {c: i for i, c in enumerate(classes)}
    labels = names.map(ids).to_numpy(dtype=np.int64)
    return Source(path.stem, classes, {"train": Split(labels, pixels=pixels)})


def _multi_hot(path: Path, rows: list[list[str]], classes: list[str], names: list[str]) -> np.ndarray:
    """0/1 matrix of rows of label names; a row with no label is an error naming the fix."""
    empty = [i for i, r in enumerate(rows) if not r]
    if empty:
        raise UserError(f"{path}: {len(empty)} row(s) have no label (e.g. row {empty[0] + 2}, {names[empty[0]]}); "
                        f"give every image at least one label (for images showing none of them, add a label such "
                        f"as 'none')")
    ids = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(rows), len(classes)), dtype=np.uint8)
    for i, row in enumerate(rows):
        out[i, [ids[c] for c in row]] = 1
    return out


def _indicator_columns(frame: pd.DataFrame, path_col: str, split_col: str | None) -> list[str]:
    """The 0/1 columns of a ``path,cat,dog,grass`` CSV (one per label), or [] when it is not laid out so."""
    rest = [c for c in frame.columns if c not in (path_col, split_col)]
    if len(rest) < 2:
        return []
    values = frame[rest]
    numeric = all(pd.api.types.is_numeric_dtype(values[c]) for c in rest)
    return rest if numeric and values.notna().all().all() and values.isin([0, 1]).all().all() else []


def _path_csv_labels(path: Path, frame: pd.DataFrame, path_col: str, split_col: str | None
                     ) -> tuple[list[str], np.ndarray]:
    """(classes, labels) of a path CSV: class ids from a ``label`` column, or a 0/1 matrix from a ``labels``
    column (``cat|dog``) or from one 0/1 column per label. Multi-label rows that each hold exactly one label are
    plain classes (multi-class), unless ``--task multilabel`` asks otherwise."""
    names = [str(p) for p in frame[path_col]]
    multi_col = pick(frame, MULTI_LABEL_COLUMNS)
    indicators = [] if multi_col or pick(frame, LABEL_COLUMNS) else _indicator_columns(frame, path_col, split_col)
    if indicators:
        classes = [_nfc(c) for c in indicators]
        labels = frame[indicators].to_numpy(dtype=np.uint8)
        rows = [[classes[j] for j in np.flatnonzero(r)] for r in labels]
        labels = _multi_hot(path, rows, classes, names)
    elif multi_col:
        cells = frame[multi_col].fillna("").astype(str)
        rows = [list(dict.fromkeys(_nfc(t.strip()) for t in re.split(LABEL_SEPARATORS, cell) if t.strip()))
                for cell in cells]
        classes = sort_classes({c for r in rows for c in r})
        labels = _multi_hot(path, rows, classes, names)
    else:
        label_col = pick(frame, LABEL_COLUMNS)
        classes = sort_classes(set(frame[label_col].astype(str).str.strip().map(_nfc)))
        ids = {c: i for i, c in enumerate(classes)}
        return classes, frame[label_col].astype(str).str.strip().map(_nfc).map(ids).to_numpy(dtype=np.int64)
    if (labels.sum(1) == 1).all():  # one label a row: plain classes
        return classes, labels.argmax(1).astype(np.int64)
    return classes, labels


def from_path_csv(path: Path, frame: pd.DataFrame, path_col: str) -> Source:
    """A CSV of ``path,label[,split]`` rows, or multi-label ``path,labels[,split]`` (``cat|dog``) or
    ``path,cat,dog,...`` (0/1) rows; paths are relative to the CSV's folder."""
    single = None if pick(frame, MULTI_LABEL_COLUMNS) else pick(frame, LABEL_COLUMNS)
    frame = frame.dropna(subset=[path_col] + ([single] if single else [])).reset_index(drop=True)
    split_col = pick(frame, ("split", "subset", "set"))
    classes, labels = _path_csv_labels(path, frame, path_col, split_col)
    files = [(path.parent / str(p).strip()) for p in frame[path_col]]
    if files and not any(f.exists() for f in files):
        raise UserError(f"{path}: none of its {len(files)} files exist (e.g. file not found: {files[0]}); paths "
                        f"in column '{path_col}' are relative to the CSV's folder")
    if split_col is None:
        split_of = np.array(["train"] * len(frame))
    else:
        raw = frame[split_col].astype(str).str.strip().str.lower()
        bad = sorted(set(raw) - set(SPLIT_NAMES))
        if bad:
            raise UserError(f"{path}: unknown value(s) {', '.join(map(repr, bad))} in column '{split_col}'; "
                            f"use train, val or test")
        split_of = raw.map(SPLIT_NAMES).to_numpy()
    splits = {}
    for split in ("train", "val", "test"):
        index = np.flatnonzero(split_of == split)
        if len(index):
            splits[split] = Split(labels[index], paths=[files[i] for i in index])
    if "train" not in splits:
        raise UserError(f"{path}: no rows with split 'train'; training needs some")
    if labels.ndim == 2:
        untrained = [classes[j] for j in np.flatnonzero(splits["train"].labels.sum(0) == 0)]
        if untrained:
            raise UserError(f"{path}: label(s) {', '.join(map(repr, untrained[:5]))} appear only in validation/test "
                            f"rows, so the model could never learn them; add training images with them, or drop them")
    return Source(path.stem, classes, splits)


def from_csv(path: Path) -> Source:
    """A CSV of pixels (Kaggle MNIST layout) or of image paths and labels."""
    frame = _read_csv(path)
    if frame.empty:
        raise UserError(f"{path}: the CSV has no rows")
    label_col = pick(frame, LABEL_COLUMNS)
    if is_pixel_table(frame, label_col):
        if label_col is None:
            raise UserError(f"{path}: a pixel CSV needs a 'label' column first (label,pixel1,...,pixelN)")
        return from_pixel_csv(path, frame, label_col)
    path_col = pick(frame, PATH_COLUMNS)
    labelled = label_col is not None or pick(frame, MULTI_LABEL_COLUMNS) is not None or (
        path_col is not None and _indicator_columns(frame, path_col, pick(frame, ("split", "subset", "set"))))
    if path_col is None or not labelled:
        missing = "a path column (path or filename)" if path_col is None else \
            "a label column (label, or labels holding cat|dog, or one 0/1 column per label)"
        raise UserError(f"{path}: missing {missing}; expected columns path,label[,split], path,labels[,split], "
                        f"path,<label>,<label>,... (0/1) or label,pixel1,...,pixelN (found: "
                        f"{', '.join(frame.columns[:6])})")
    return from_path_csv(path, frame, path_col)


def check_data(data: str) -> None:
    """DATA names something that exists (a folder, a file, a built-in dataset): checked before anything heavy is
    imported, so a typo fails in a second, with the nearest names that do exist."""
    if data.lower() in BUILTIN or Path(data).expanduser().exists():
        return
    path = Path(data).expanduser()
    near = difflib.get_close_matches(path.name, sorted(p.name for p in path.parent.iterdir())
                                     if path.parent.is_dir() else [], 3) + difflib.get_close_matches(data, BUILTIN, 1)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    raise UserError(f"{data}: no such file or folder{hint}; give an image folder, a CSV file, or one of the "
                    f"built-in datasets: {', '.join(BUILTIN)}")


def load_source(data: str, data_root: str | None = None) -> Source:
    """Resolve DATA (folder, CSV or built-in dataset name) into a :class:`Source`."""
    check_data(data)
    if data.lower() in BUILTIN:
        return load_builtin(data.lower(), data_root)
    path = Path(data).expanduser()
    if path.is_dir():
        return from_folder(path)
    if path.suffix.lower() == ".csv":
        return from_csv(path)
    raise UserError(f"{data}: not a folder or a .csv file; give an image folder (one sub-folder per class) or a CSV")
