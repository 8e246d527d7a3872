"""``imgclf check DATA``: the dataset doctor. It reads every image the trainer would, and never writes to one.

Per file: unreadable (with the reason), refused (decompression bombs, from the header, before decoding), or
converted (CMYK, 16-bit, transparency, animation, EXIF rotation, tiny) with what was done; files the trainer
ignores (hidden, not an image) are listed too. Across files: exact duplicates (SHA-256 of the bytes), near
duplicates (perceptual hash, ``imagehash``), and leakage, the same picture in train and in validation/test.
Per class: counts per split, the imbalance ratio, empty class folders.
"""
from __future__ import annotations

import functools
import hashlib
import json
import stat
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from ..config import IMBALANCE_WARN
from ..errors import UserError
from ..files import write_csv
from .decode import BadImage, is_image_file, open_image, to_mode
from .sources import Source, load_source
from .tensors import parallel_map

DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's own limit, ~89 M pixels
# Below this (shorter side), a perceptual hash cannot tell a copy from a similar-looking item: on Fashion-MNIST's
# 28-px images distance 4 pairs 158,000 different pictures. Such images are compared exactly only.
NEAR_MIN_SIDE = 32
# No image under the pixel limits needs more (40 M pixels of 16-bit RGBA, uncompressed, are 320 MB): a bigger "image"
# is refused unread, so a symlink to a disk image does not take minutes and gigabytes.
MAX_FILE_BYTES = 1 << 30
EXTENSIONS = {"JPEG": {".jpg", ".jpeg"}, "PNG": {".png"}, "GIF": {".gif"}, "BMP": {".bmp"}, "WEBP": {".webp"},
              "TIFF": {".tif", ".tiff"}}


@dataclass
class FileReport:
    """What the doctor found about one image: ``status`` is ok, converted, unreadable or ignored."""

    path: str
    split: str
    label: str
    status: str = "ok"
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    size: tuple[int, int] | None = None
    sha256: str | None = None
    phash: str | None = None


def _notes(head: Image.Image, path: Path, min_size: int) -> list[str]:
    """The conversions the loader will make for this image, in words."""
    notes, (w, h), mode = [], head.size, head.mode
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    elif mode.startswith("I") or mode == "F":
        notes.append(f"{'16' if '16' in mode or mode == 'I' else '32'}-bit ({mode}) scaled to 8 bits")
    elif mode == "P" and "transparency" in head.info or mode in ("RGBA", "LA", "La", "PA"):
        notes.append(f"transparency ({mode}) composited on white")
    if getattr(head, "n_frames", 1) > 1:
        notes.append(f"animated ({head.n_frames} frames): the first frame is used")
    orientation = head.getexif().get(0x0112, 1)
    if orientation not in (0, 1):
        notes.append(f"EXIF orientation {orientation}: turned upright")
    if min(w, h) < min_size:
        notes.append(f"tiny: {w}x{h} (under --min-size {min_size})")
    if head.format in EXTENSIONS and path.suffix.lower() not in EXTENSIONS[head.format]:
        notes.append(f"a {head.format} file named {path.suffix}")
    return notes


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def inspect_file(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_size: int = 16) -> dict:
    """Everything about one file, as a dict (it crosses from worker processes): see :class:`FileReport`."""
    path = Path(path)
    try:  # the doctor reads a file in chunks, only if it is a regular file of a size an image can have
        found = path.stat()
        if not stat.S_ISREG(found.st_mode):
            return {"status": "unreadable", "reason": "not a regular file (a FIFO, device or folder); skipped unread"}
        if found.st_size > MAX_FILE_BYTES:
            return {"status": "unreadable", "reason": f"{found.st_size / 2**30:,.1f} GB, over the "
                                                      f"{MAX_FILE_BYTES / 2**30:,.0f} GB an image file may have; "
                                                      f"skipped unread"}
        digest = _sha256(path)
    except OSError as exc:
        return {"status": "unreadable", "reason": f"cannot read the file: {exc.strerror or exc}"}
    if found.st_size == 0:
        return {"status": "unreadable", "reason": "empty file"}
    out: dict = {"sha256": digest}
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as head:  # the header only: nothing is decoded yet
                out["size"] = head.size
                if head.size[0] * head.size[1] > max_pixels:
                    w, h = head.size
                    return out | {"status": "unreadable", "reason": f"decompression bomb? {w}x{h} = "
                                  f"{w * h / 1e6:,.0f} M pixels, over the limit of {max_pixels / 1e6:,.0f} M "
                                  f"(--max-pixels); refused before decoding"}
                notes = _notes(head, path, min_size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return out | {"status": "unreadable", "reason": "decompression bomb? more pixels than Pillow allows; "
                                                        "refused before decoding"}
    except Exception:  # noqa: BLE001 - an unreadable header: the decoder below says why, as training would
        pass
    try:
        image = open_image(path)  # the trainer's own decoder, so both give the same reason for a bad file
    except BadImage as exc:
        return out | {"status": "unreadable", "reason": str(exc)}
    return out | {"status": "converted" if notes else "ok", "notes": notes,
                  "phash": str(imagehash.phash(to_mode(image, 3)))}


def _pixels_report(pixels: np.ndarray) -> dict:
    return {"sha256": hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest(),
            "size": (pixels.shape[1], pixels.shape[0]), "phash": str(imagehash.phash(Image.fromarray(pixels)))}


def _ignored_files(root: Path, used: set[Path]) -> list[FileReport]:
    """Files under an image folder that training leaves out, and why."""
    out = []
    for path in sorted(p for p in root.rglob("*") if not p.is_dir() and p.exists() and p.resolve() not in used):
        parts = path.relative_to(root).parts
        why = "hidden file" if any(part.startswith(".") for part in parts) else \
            "not a regular file (a FIFO, socket or device)" if not path.is_file() else \
            "not an image file extension" if not is_image_file(path) else "outside the class folders"
        out.append(FileReport(str(path), "", "", "ignored", why))
    return out


def _empty_classes(root: Path) -> list[str]:
    """Class folders (directly or under train/val/test) with no image file below them."""
    tops = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    splits = {d.name.lower() for d in tops} <= {"train", "training", "val", "valid", "validation", "test", "testing"}
    folders = [c for d in tops for c in d.iterdir() if c.is_dir()] if splits and tops else tops
    return sorted(str(f.relative_to(root)) for f in folders if not any(is_image_file(p) for p in f.rglob("*")))


def near_pairs(hashes: list[str], max_distance: int) -> list[tuple[int, int, int]]:
    """(i, j, Hamming distance) of every pair of 64-bit perceptual hashes within ``max_distance``, vectorised."""
    if len(hashes) < 2 or max_distance < 0:
        return []
    values = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    pairs = []
    for start in range(0, len(values), 512):
        block = values[start:start + 512, None] ^ values[None, :]
        distance = np.bitwise_count(block)
        rows, cols = np.nonzero(distance <= max_distance)
        keep = cols > rows + start
        pairs += [(int(r + start), int(c), int(distance[r, c])) for r, c in zip(rows[keep], cols[keep])]
    return pairs


@dataclass
class CheckReport:
    """The doctor's findings for a data set; :meth:`summary` prints them, :meth:`to_json` keeps them."""

    data: str
    classes: list[str]
    files: list[FileReport]
    duplicates: list[list[int]]
    near_duplicates: list[tuple[int, int, int]]
    leaks: list[tuple[int, int, str]]
    empty_classes: list[str]
    from_files: bool = True
    small: int = 0  # readable images too small for the near-duplicate search
    multilabel: bool = False  # labels are "cat|dog": an image counts for each of its labels

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split (readable ones)."""
        table: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(self.classes, 0))
        for f in self.files:
            if f.status in ("ok", "converted"):
                for label in (f.label.split("|") if self.multilabel else [f.label]):
                    table[f.split][label] += 1
        return dict(table)

    @property
    def imbalance(self) -> float | None:
        train = [n for n in self.counts().get("train", {}).values() if n]
        return round(max(train) / min(train), 2) if train else None

    @property
    def imbalanced(self) -> bool:
        """The largest training class has more than IMBALANCE_WARN (10) times the images of the smallest."""
        return self.imbalance is not None and self.imbalance > IMBALANCE_WARN

    @property
    def problems(self) -> int:
        """Findings that should stop a careful user: unreadable files, leakage, strongly imbalanced classes."""
        return sum(f.status == "unreadable" for f in self.files) + len(self.leaks) + int(self.imbalanced)

    def to_json(self) -> dict:
        return {"data": self.data, "classes": self.classes, "counts": self.counts(), "imbalance": self.imbalance,
                "empty_classes": self.empty_classes,
                "status": dict(Counter(f.status for f in self.files)),
                "files": [asdict(f) for f in self.files],
                "duplicates": [[self.files[i].path for i in group] for group in self.duplicates],
                "near_duplicates": [{"a": self.files[i].path, "b": self.files[j].path, "distance": d}
                                    for i, j, d in self.near_duplicates],
                "leakage": [{"train": self.files[i].path, "other": self.files[j].path, "kind": kind}
                            for i, j, kind in self.leaks]}

    def summary(self, limit: int = 20) -> str:
        status = Counter(f.status for f in self.files)
        lines = [f"{self.data}: {len(self.files)} files, {len(self.classes)} classes — " +
                 ", ".join(f"{status[s]} {s}" for s in ("ok", "converted", "unreadable", "ignored") if status[s])]
        for title, wanted in (("unreadable", "unreadable"), ("converted", "converted"), ("ignored", "ignored")):
            rows = [f for f in self.files if f.status == wanted]
            if rows:
                lines.append(f"\n{title} ({len(rows)}):")
                lines += [f"  {f.path}: {f.reason or '; '.join(f.notes)}" for f in rows[:limit]]
                lines += [f"  ... and {len(rows) - limit} more (--output report.json lists all)"] * (len(rows) > limit)
        if self.duplicates:
            extra = sum(len(g) - 1 for g in self.duplicates)
            copies = "copy" if extra == 1 else "copies"
            lines.append(f"\nexact duplicates: {len(self.duplicates)} group(s), {extra} extra {copies}")
            lines += [f"  {' = '.join(self.files[i].path for i in g)}" for g in self.duplicates[:limit]]
        if self.near_duplicates:
            lines.append(f"\nnear duplicates (perceptual hash): {len(self.near_duplicates)} pair(s)")
            lines += [f"  {self.files[i].path} ~ {self.files[j].path} (distance {d})"
                      for i, j, d in self.near_duplicates[:limit]]
        if self.small:
            lines.append(f"\nnear duplicates: not searched among {self.small} image(s) under {NEAR_MIN_SIDE} px (too "
                         f"small for a perceptual hash); exact copies are still found")
        if self.leaks:
            lines.append(f"\nLEAKAGE: {len(self.leaks)} image(s) in train also in validation/test — scores on those "
                         f"splits will be too good; remove them (--fix writes a clean file list)")
            lines += [f"  {self.files[i].path} -> {self.files[j].path} ({kind})" for i, j, kind in self.leaks[:limit]]
        counts = self.counts()
        width = max(len(c) for c in self.classes)
        lines.append("\nclass balance:")
        lines.append(f"  {'class':<{width}}  " + "  ".join(f"{s:>6}" for s in counts))
        for c in self.classes:
            lines.append(f"  {c:<{width}}  " + "  ".join(f"{counts[s][c]:>6}" for s in counts))
        if self.imbalance is not None:
            lines.append(f"  imbalance (largest / smallest class in train): {self.imbalance}")
        if self.imbalanced:
            lines.append(f"\nIMBALANCE: the largest class has {self.imbalance} times the images of the smallest (over "
                         f"{IMBALANCE_WARN:g}); a model can score well by answering the majority class. Train with "
                         f"--class-weights balanced or --sampler balanced, and judge it by --monitor val_macro_f1")
        if self.empty_classes:
            lines.append(f"  empty class folder(s): {', '.join(self.empty_classes)}")
        lines.append(f"\n{self.problems} problem(s) found" if self.problems else "\nno problems found")
        return "\n".join(lines)


def check(data: str, data_root: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, min_size: int = 16,
          near: int = 4, workers: int | None = None, quiet: bool = False) -> CheckReport:
    """Examine every image of DATA (folder, CSV or built-in dataset). Reads files, never writes them."""
    source: Source = load_source(data, data_root)
    files: list[FileReport] = []
    for split_name, split in source.splits.items():
        # multi-label rows as "cat|dog", the way a labels column writes them
        labels = ["|".join(source.classes[j] for j in np.flatnonzero(row)) for row in split.labels] \
            if source.multilabel else [source.classes[i] for i in split.labels]
        if split.pixels is not None:
            found = parallel_map(_pixels_report, list(split.pixels), workers, f"checking {split_name}", quiet)
            files += [FileReport(f"{split_name}[{i}]", split_name, labels[i], **r) for i, r in enumerate(found)]
        else:
            inspect = functools.partial(inspect_file, max_pixels=max_pixels, min_size=min_size)
            found = parallel_map(inspect, split.paths, workers, f"checking {split_name}", quiet)
            files += [FileReport(str(p), split_name, labels[i], **r)
                      for i, (p, r) in enumerate(zip(split.paths, found))]
    root = Path(data).expanduser()
    empty: list[str] = []
    if root.is_dir():
        used = {Path(f.path).resolve() for f in files}
        files += _ignored_files(root, used)
        empty = _empty_classes(root)

    readable = [i for i, f in enumerate(files) if f.sha256 and f.status in ("ok", "converted")]
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i in readable:
        by_hash[files[i].sha256].append(i)
    duplicates = [group for group in by_hash.values() if len(group) > 1]
    hashed = [i for i in readable if files[i].phash and min(files[i].size) >= NEAR_MIN_SIDE]
    near_dups = [(hashed[a], hashed[b], d) for a, b, d in near_pairs([files[i].phash for i in hashed], near)
                 if files[hashed[a]].sha256 != files[hashed[b]].sha256]

    leaks = []
    for group in duplicates:
        leaks += [(i, j, "same file content") for i in group for j in group
                  if files[i].split == "train" and files[j].split != "train"]
    leaks += [(i, j, f"near duplicate, distance {d}") if files[i].split == "train" else (j, i, f"near duplicate, "
              f"distance {d}") for i, j, d in near_dups
              if "train" in (files[i].split, files[j].split) and files[i].split != files[j].split]
    from_files = all(split.paths is not None for split in source.splits.values())
    return CheckReport(data, source.classes, files, duplicates, near_dups, leaks, empty, from_files,
                       len(readable) - len(hashed), source.multilabel)


def write_clean_list(report: CheckReport, path: Path) -> int:
    """A CSV (path,label,split) of the usable files: no unreadable ones, one copy of each exact duplicate in a
    split, and nothing in validation/test that is also in train. ``imgclf train`` reads it. Returns its rows."""
    if path.exists():
        raise UserError(f"--fix {path}: the file exists; choose a new name (check never overwrites a file)")
    if not report.from_files:
        raise UserError("--fix needs a data set of image files (a folder or a CSV of paths), not a built-in one")
    leaked = {j for _, j, _ in report.leaks}
    label = "labels" if report.multilabel else "label"  # multi-label: cat|dog, read back as such
    seen: set[tuple[str, str]] = set()
    rows = []
    for i, f in enumerate(report.files):
        if f.status not in ("ok", "converted") or i in leaked or (f.split, f.sha256) in seen:
            continue
        seen.add((f.split, f.sha256))
        rows.append({"path": str(Path(f.path).resolve()), label: f.label, "split": f.split})
    write_csv(path, rows, ["path", label, "split"])
    return len(rows)


def save_report(report: CheckReport, path: Path) -> None:
    """The whole report as JSON (every file, every pair)."""
    path.write_text(json.dumps(report.to_json(), indent=1, ensure_ascii=False), encoding="utf-8")
