"""Decode once: every image of a split becomes a row of one uint8 tensor (N, C, H, W).

Training then builds batches by indexing that tensor, so no epoch decodes a file again. Files are decoded in
parallel worker processes; a file that cannot be read is skipped and reported with its reason.
"""
from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from ..resources import decode_workers, usable_cpus
from .decode import BadImage, Preprocess, is_gray, unusable_file
from .sources import Split
from .store import DiskRows, DiskWriter, FileRows, cache_root, choose, open_store, store_key
from .progress import Progress
from .workers import WorkerStart


@dataclass
class ImageTensors:
    """Decoded images ``x`` (uint8, N x C x H x W), class ids ``y``, and the files that were skipped."""

    x: torch.Tensor | DiskRows | FileRows  # indexable like a tensor every way
    y: torch.Tensor
    paths: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    where: str = "ram"  # how the pixels are held, for the log
    # an in-memory data set's own pixels (N, H, W[, C]) before preprocessing, where kept: what an app would hand a
    # model that preprocesses whole photos itself (export --raw-input checks on them)
    originals: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)


class _Apply(torch.utils.data.Dataset):
    def __init__(self, fn: Callable, items: list) -> None:
        self.fn, self.items = fn, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        try:
            return self.fn(self.items[i])
        except BadImage as exc:
            return exc


def _unbatched(batch: list) -> list:
    return batch


def parallel_imap(fn: Callable, items: list, workers: int | None = None, desc: str = "", quiet: bool = False
                  ) -> Iterator:
    """``fn(item)`` for each item, in order, computed by worker processes a few batches ahead (so results need not
    all be held at once); a :class:`BadImage` is returned, not raised."""
    workers = decode_workers() if workers is None else workers
    workers = 0 if len(items) < 64 else workers
    # A generator of its own: a DataLoader draws its workers' base seed from the global generator otherwise, and a
    # run that decodes (a new disk store) would then train on another random stream than one that reuses it.
    loader = torch.utils.data.DataLoader(_Apply(fn, items), batch_size=32, num_workers=workers,
                                         collate_fn=_unbatched, generator=torch.Generator().manual_seed(0),
                                         worker_init_fn=WorkerStart() if workers else None)
    with Progress(len(items), desc, "image", quiet=quiet or not desc) as progress:
        for batch in loader:
            yield from batch
            progress.update(progress.done + len(batch))


def parallel_map(fn: Callable, items: list, workers: int | None = None, desc: str = "", quiet: bool = False) -> list:
    """``[fn(item) for item in items]`` over worker processes; a :class:`BadImage` is returned, not raised."""
    return list(parallel_imap(fn, items, workers, desc, quiet))


def _header(path: Path) -> tuple[int, int, bool] | BadImage:
    """(width, height, gray) from the file header alone, or the reason the file is unusable."""
    if problem := unusable_file(path):
        return problem
    try:
        with Image.open(path) as im:
            return im.size[0], im.size[1], is_gray(im)
    except FileNotFoundError:
        return BadImage("file not found")
    except Exception:  # noqa: BLE001 - the full decode gives the precise reason later
        return BadImage("not an image or unsupported format" if path.stat().st_size else "empty file")


@dataclass
class ImageStats:
    """What the headers say about a list of files: the common size (if any) and whether all are gray."""

    size: tuple[int, int] | None
    all_gray: bool


def scan(paths: list[Path], workers: int | None = None, quiet: bool = False) -> ImageStats:
    """Read headers only (fast) to choose a default input size and number of channels."""
    heads = [h for h in parallel_map(_header, paths, workers, "scanning", quiet) if not isinstance(h, BadImage)]
    sizes = {(w, h) for w, h, _ in heads}
    return ImageStats(next(iter(sizes)) if len(sizes) == 1 else None, all(g for *_, g in heads))


def _from_pixels(pixels: np.ndarray, pre: Preprocess) -> torch.Tensor:
    gray = pixels.ndim == 3
    same_mode = (pre.channels == 1) == gray
    if same_mode and pixels.shape[1:3] == (pre.size, pre.size) and pre.crop_pct == 1.0:
        x = torch.from_numpy(np.require(pixels, requirements=["C", "W"]))  # frombuffer arrays are read-only
        return x.unsqueeze(1) if gray else x.permute(0, 3, 1, 2).contiguous()
    # Anything else goes through the same per-image path as files, so prediction on files sees the same pixels.
    out = np.empty((len(pixels), pre.channels, pre.size, pre.size), dtype=np.uint8)
    for i, arr in enumerate(pixels):
        out[i] = pre(Image.fromarray(arr))
    return torch.from_numpy(out)


def decode_split(split: Split, pre: Preprocess, workers: int | None = None, desc: str = "",
                 quiet: bool = False, cache: str = "ram") -> ImageTensors:
    """Decode every image of ``split`` the way ``pre`` says, to uint8; unreadable files are skipped. ``cache``: keep
    the pixels in RAM, in a disk store (reused by later runs on the same files), or ``auto`` (see
    :func:`~imgclf.data.store.choose`)."""
    # A copy (pandas' arrays may be read-only): class ids, or a multi-label 0/1 matrix as float (BCE's targets).
    given = np.asarray(split.labels)
    labels = torch.tensor(given.astype(np.float32 if given.ndim == 2 else np.int64))
    if split.pixels is not None:  # already in memory (a pixel CSV, a built-in data set)
        return ImageTensors(_from_pixels(split.pixels, pre), labels)
    where, why = choose(cache, len(split.paths), pre)
    if where == "none":
        return _files_as_they_are(split, pre, labels, workers, desc, quiet, why)
    if where == "disk":
        return _decode_to_disk(split, pre, labels, workers, desc, quiet, why)
    # One allocation for the whole split, filled row by row as the workers deliver: the decoded images are held
    # once, never as a list and then a stacked copy. Unreadable files leave no gap (the next row takes the place).
    x = np.empty((len(split.paths), pre.channels, pre.size, pre.size), dtype=np.uint8)

    def put(pixels: np.ndarray, row: int) -> None:
        x[row] = pixels
    keep, skipped = _decode_into(put, split, pre, workers, desc, quiet)
    return ImageTensors(torch.from_numpy(x[:len(keep)]), labels[keep], [str(split.paths[i]) for i in keep], skipped,
                        f"ram ({why})")


def _decode_into(put: Callable[[np.ndarray, int], None], split: Split, pre: Preprocess, workers: int | None,
                 desc: str, quiet: bool) -> tuple[list[int], list[tuple[str, str]]]:
    """Decode the split's files in order, handing each readable image to ``put`` with its row: (indices of the
    files kept, (path, reason) of those skipped)."""
    keep, skipped = [], []
    for i, decoded in enumerate(parallel_imap(pre.load, split.paths, workers, desc, quiet)):
        if isinstance(decoded, BadImage):
            skipped.append((str(split.paths[i]), str(decoded)))
        else:
            put(decoded, len(keep))
            keep.append(i)
    return keep, skipped


def _decode_to_disk(split: Split, pre: Preprocess, labels: torch.Tensor, workers: int | None, desc: str,
                    quiet: bool, why: str) -> ImageTensors:
    folder, key = cache_root(), store_key(split.paths, pre)
    started = time.perf_counter()
    found = open_store(folder, key, pre)
    if found is not None:
        rows, keep, skipped = found
        where = f"disk store {rows.path} ({why}; reused: nothing decoded)"
    else:
        writer = DiskWriter(folder, key, len(split.paths), pre)
        try:
            keep, skipped = _decode_into(lambda pixels, _row: writer.append(pixels), split, pre, workers, desc, quiet)
        except BaseException:
            writer.abandon()  # a half-written store is never left under the name a later run would read
            raise
        rows = writer.finish(keep, skipped)
        where = f"disk store {rows.path} ({why}; {rows.path.stat().st_size / 1e6:,.0f} MB built in " \
                f"{time.perf_counter() - started:.1f} s)"
    return ImageTensors(rows, labels[keep], [str(split.paths[i]) for i in keep], skipped, where)


def _files_as_they_are(split: Split, pre: Preprocess, labels: torch.Tensor, workers: int | None, desc: str,
                       quiet: bool, why: str) -> ImageTensors:
    """``--cache none``: only the headers are read now (files that are not images are skipped as usual); the pixels
    are decoded whenever a batch needs them."""
    keep, skipped = [], []
    for i, head in enumerate(parallel_imap(_header, split.paths, workers, desc.replace("decoding", "scanning"),
                                           quiet)):
        if isinstance(head, BadImage):
            skipped.append((str(split.paths[i]), str(head)))
        else:
            keep.append(i)
    paths = [split.paths[i] for i in keep]
    return ImageTensors(FileRows(paths, pre), labels[keep], [str(p) for p in paths], skipped,
                        f"files, decoded per batch ({why})")


DIGEST_CHUNK = 1024  # rows hashed per task of the thread pool


def row_digests(x: torch.Tensor | DiskRows | FileRows, desc: str = "hashing images", quiet: bool = True
                ) -> list[bytes]:
    """A 16-byte hash of each decoded image: equal pixels, equal digest (for files not decoded ahead, a hash of
    the file's bytes and the preprocessing). Chunks of rows are hashed on every usable core (hashlib lets other
    threads run while it hashes rows of 2 KB or more: photos), with a progress bar where it takes seconds."""
    if isinstance(x, FileRows):
        return x.digests()

    def digests(start: int) -> list[bytes]:
        return [hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest()
                for row in x[start:start + DIGEST_CHUNK]]

    out: list[bytes] = []
    with ThreadPoolExecutor(usable_cpus()) as pool, Progress(len(x), desc, quiet=quiet, delay_s=2) as bar:
        for part in pool.map(digests, range(0, len(x), DIGEST_CHUNK)):
            out += part
            bar.update(len(out))
    return out


# The channel statistics come from at most this many images, evenly spread: the mean and std of 10,000 are the
# whole set's to the third decimal, and reading 100,000 photos for them would delay the first step by a minute.
# Files decoded per batch (--cache none) are costlier to read: 2,000 of them.
STATS_SAMPLE, FILE_STATS_SAMPLE = 10_000, 2000


def channel_stats(x: torch.Tensor | DiskRows | FileRows, chunk_bytes: int = 1 << 25
                  ) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units, from at most ``STATS_SAMPLE`` of them, in chunks of
    about ``chunk_bytes`` of float64 (32 MB: 5,000 images of 28 px, 27 of 224 px), so the memory it needs does not
    grow with the images' size."""
    sample = FILE_STATS_SAMPLE if isinstance(x, FileRows) else STATS_SAMPLE
    rows = np.linspace(0, len(x) - 1, sample).round().astype(int) if len(x) > sample else None
    n = len(x) if rows is None else len(rows)
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    chunk = max(1, chunk_bytes // max(1, x[0].numel() * 8)) if len(x) else 1
    for start in range(0, n, chunk):
        part = x[start:start + chunk] if rows is None else x[torch.from_numpy(rows[start:start + chunk])]
        part = part.double().div_(255)
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = max(1, n * x.shape[2] * x.shape[3])
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return [round(float(m), 4) for m in mean], [round(max(float(s), 1e-3), 4) for s in std]

