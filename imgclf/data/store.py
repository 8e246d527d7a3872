"""Where the decoded images of a split live: in RAM (one uint8 tensor), on disk (one file per split, read a batch at
a time through the page cache, so memory does not grow with the data set), or nowhere (``none``: the files are
decoded again whenever they are read, in the DataLoader's worker processes during training).

All three look the same to their users (the loader, evaluation, the feature cache, the plots): ``len``, ``shape``,
indexing by an int, a slice or a tensor of indices, and iteration over rows, each giving uint8 torch tensors.

A disk store sits under ``$IMGCLF_CACHE_DIR/images`` (else ``~/.cache/imgclf/images``), named by a key over the
files (paths, sizes, modification times) and the preprocessing, so a second run on the same data decodes nothing.
It is written to a temporary name and renamed when complete, with its description (key, shape, which files were
skipped and why) beside it; a store whose file does not match its description is rebuilt, never read as data.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError, warn
from ..resources import available_memory
from .decode import BadImage, Preprocess, open_image, to_mode

# auto keeps a split in RAM while its decoded size is under this share of the memory available now.
RAM_SHARE = 0.25


def cache_root() -> Path:
    """``$IMGCLF_CACHE_DIR/images``, else ``~/.cache/imgclf/images``."""
    return Path(os.environ.get("IMGCLF_CACHE_DIR", "~/.cache/imgclf")).expanduser() / "images"


def choose(cache: str, n: int, pre: Preprocess) -> tuple[str, str]:
    """(ram, disk or none, why) for a split of ``n`` files. ``auto``: RAM while the decoded split is under a quarter
    of the memory available, else disk while it fits on the cache's disk, else none."""
    size = n * pre.channels * pre.size * pre.size
    if cache != "auto":
        return cache, f"--cache {cache}"
    room = available_memory()
    if size <= RAM_SHARE * room:
        return "ram", f"{size / 1e9:.2f} GB decoded, under a quarter of the {room / 1e9:.1f} GB available"
    free = free_space(cache_root())
    if size <= 0.9 * free:
        return "disk", f"{size / 1e9:.2f} GB decoded, over a quarter of the {room / 1e9:.1f} GB of memory available"
    return "none", (f"{size / 1e9:.2f} GB decoded, over a quarter of the {room / 1e9:.1f} GB of memory available and "
                    f"more than the {free / 1e9:.1f} GB free in {cache_root()}: decoded again every epoch")


def free_space(folder: Path) -> int:
    """Bytes free on the disk that holds ``folder`` (or would: its nearest existing parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def store_key(paths: list[Path], pre: Preprocess) -> str:
    """A hash of the files (path, size, modification time) and of how they are decoded."""
    digest = hashlib.blake2b(repr(pre).encode(), digest_size=16)
    for path in paths:
        try:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


class DiskRows:
    """Decoded uint8 images (N, C, H, W) in a file, read with ``pread``: the page cache keeps what fits, the process
    holds only the batches it asked for."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.path, self.shape = Path(path), torch.Size(shape)
        self.row = math.prod(shape[1:])
        self.fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:  # worker processes open the file themselves
        return {"path": self.path, "shape": tuple(self.shape)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["shape"])

    def __del__(self) -> None:
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None

    def _read(self, start: int, count: int) -> np.ndarray:
        data = os.pread(self.fd, count * self.row, start * self.row)
        return np.frombuffer(data, np.uint8).reshape(count, *self.shape[1:])

    def __getitem__(self, index: int | slice | torch.Tensor | np.ndarray | list) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            i = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {index} of {len(self)}")
            return torch.from_numpy(self._read(i, 1)[0].copy())
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return self[torch.arange(start, stop, step)]
            return torch.from_numpy(self._read(start, max(0, stop - start)).copy())
        rows = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64).reshape(-1)
        rows = np.where(rows < 0, rows + len(self), rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows out of 0..{len(self) - 1}")
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        # Read in file order, each run of consecutive rows in one call.
        order = np.argsort(rows, kind="stable")
        ranked = rows[order]
        starts = np.flatnonzero(np.diff(ranked, prepend=-2) != 1)
        for begin, end in zip(starts, [*starts[1:], len(ranked)]):
            out[order[begin:end]] = self._read(int(ranked[begin]), int(end - begin))
        return torch.from_numpy(out)

    def __iter__(self):
        chunk = max(1, (1 << 24) // max(1, self.row))  # 16 MB at a time
        for start in range(0, len(self), chunk):
            yield from self[start:start + chunk]


def _alive(pid: str) -> bool:
    """Whether process ``pid`` still runs (on this machine), so its half-written store is not removed under it."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class DiskWriter:
    """Rows appended in order to a temporary file in ``folder``; :meth:`finish` describes and renames it."""

    def __init__(self, folder: Path, key: str, n: int, pre: Preprocess) -> None:
        self.folder, self.key, self.row = folder, key, pre.channels * pre.size * pre.size
        self.shape = (pre.channels, pre.size, pre.size)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(folder).free
        except OSError as exc:
            raise UserError(f"cannot write the decoded-image store in {folder} ({exc.strerror or exc}); set "
                            f"$IMGCLF_CACHE_DIR to a writable folder, or use --cache ram") from None
        if n * self.row > 0.95 * free:
            raise UserError(f"the decoded images need {n * self.row / 1e9:.1f} GB in {folder}, which has "
                            f"{free / 1e9:.1f} GB free; set $IMGCLF_CACHE_DIR to a larger disk, or use --cache ram")
        for stale in folder.glob(f"{key}.u8.tmp-*"):  # left by a run killed while decoding these files
            if not _alive(stale.name.rsplit("-", 1)[-1]):
                stale.unlink(missing_ok=True)
        self.tmp = folder / f"{key}.u8.tmp-{os.getpid()}"
        self.file = self.tmp.open("wb")
        self.count = 0

    def append(self, pixels: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(pixels, np.uint8).tobytes())
        self.count += 1

    def finish(self, keep: list[int], skipped: list[tuple[str, str]]) -> DiskRows:
        self.file.close()
        data = self.folder / f"{self.key}.u8"
        meta = {"key": self.key, "shape": [self.count, *self.shape], "keep": keep, "skipped": skipped}
        os.replace(self.tmp, data)
        tmp_meta = self.folder / f"{self.key}.json.tmp-{os.getpid()}"
        tmp_meta.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(tmp_meta, self.folder / f"{self.key}.json")  # last: a store without it is not complete
        return DiskRows(data, tuple(meta["shape"]))

    def abandon(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def open_store(folder: Path, key: str, pre: Preprocess) -> tuple[DiskRows, list[int], list[tuple[str, str]]] | None:
    """A complete disk store for ``key``: (rows, kept file indices, skipped files); None when there is none, or
    when it does not match its description (a warning says it is rebuilt)."""
    data, meta_path = folder / f"{key}.u8", folder / f"{key}.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        shape = tuple(meta["shape"])
        ok = meta["key"] == key and shape[1:] == (pre.channels, pre.size, pre.size) and data.exists() and \
            data.stat().st_size == math.prod(shape) and len(meta["keep"]) == shape[0]
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        warn(f"the decoded-image store {data} is damaged or incomplete; decoding again")
        meta_path.unlink(missing_ok=True)
        data.unlink(missing_ok=True)
        return None
    return DiskRows(data, shape), meta["keep"], [tuple(s) for s in meta["skipped"]]


class FileRows:
    """``--cache none``: the files themselves, decoded whenever rows are read. Nothing is held or written, so it
    serves data sets larger than the disk budget; training reads it in DataLoader worker processes.

    A file that decoded when it was scanned but fails now gives a black image and a warning when read through
    indexing (evaluation, plots); the training loader leaves it out of its batch instead (:meth:`read`).
    """

    lazy = True  # reading decodes: the loader needs worker processes even without augmentation

    def __init__(self, paths: list[Path], pre: Preprocess) -> None:
        self.paths, self.pre = list(paths), pre
        self.shape = torch.Size((len(self.paths), pre.channels, pre.size, pre.size))

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, rows: list[int], full: bool = False) -> tuple[list[torch.Tensor], list[int]]:
        """(images, the positions in ``rows`` of those that decoded): each at the model's size, or ``full``-resolution
        (same mode) for an augmentation that crops from the whole photo. Files that fail are warned about, left out."""
        images, good = [], []
        for j, i in enumerate(rows):
            try:
                im = open_image(self.paths[i])
                arr = np.asarray(to_mode(im, self.pre.channels)) if full else self.pre(im)
            except BadImage as exc:
                warn(f"{self.paths[i]}: {exc} (it could be read when the data was scanned); left out")
                continue
            arr = (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)) if full else arr
            images.append(torch.from_numpy(np.ascontiguousarray(arr)))
            good.append(j)
        return images, good

    def _rows(self, rows: list[int]) -> torch.Tensor:
        out = torch.zeros((len(rows), *self.shape[1:]), dtype=torch.uint8)
        images, good = self.read(rows)
        for image, j in zip(images, good):
            out[j] = image
        return out

    def __getitem__(self, index: int | slice | torch.Tensor | np.ndarray | list) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return self._rows([range(len(self))[index]])[0]
        if isinstance(index, slice):
            return self._rows(list(range(len(self)))[index])
        rows = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64).reshape(-1)
        return self._rows([range(len(self))[int(i)] for i in rows])

    def __iter__(self):
        for start in range(0, len(self), 64):
            yield from self[start:start + 64]

    def subset(self, rows: list[int]) -> "FileRows":
        return FileRows([self.paths[i] for i in rows], self.pre)

    def digests(self) -> list[bytes]:
        """A 16-byte hash per file, of its bytes and of the preprocessing: equal files decode to equal pixels, and
        hashing bytes costs no decode."""
        out = []
        for path in self.paths:
            digest = hashlib.blake2b(repr(self.pre).encode(), digest_size=16)
            try:
                with open(path, "rb") as f:
                    digest.update(f.read())
            except OSError:
                digest.update(str(path).encode())
            out.append(digest.digest())
        return out
