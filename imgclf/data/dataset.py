"""What a labelled data set is, whatever it was read from: a :class:`Source` of named classes and its splits.

A leaf: the readers (:mod:`.sources` for folders and CSVs, :mod:`.builtin` for the well-known datasets) build these,
and nothing here knows about them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError


@dataclass
class Split:
    """Labelled images of one split: ``paths`` to decode, or ``pixels`` (N, H, W[, C]) uint8 already decoded.
    ``labels`` are class ids (N,), or for multi-label data a 0/1 matrix (N, labels)."""

    labels: np.ndarray
    paths: list[Path] | None = None
    pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "Split":
        return Split(self.labels[index],
                     None if self.paths is None else [self.paths[i] for i in index],
                     None if self.pixels is None else self.pixels[index])


@dataclass
class Source:
    """A labelled data set: ``classes[i]`` is the name of class id ``i``."""

    name: str
    classes: list[str]
    splits: dict[str, Split]
    flip_ok: bool = True

    @property
    def multilabel(self) -> bool:
        """Labels as a 0/1 matrix: any number of them per image."""
        return self.splits["train"].labels.ndim == 2

    def for_task(self, task: str) -> "Source":
        """The labels as ``task`` (multiclass, multilabel) needs them: class ids become one-hot rows for multi-label
        training; multi-label rows become class ids only when each has exactly one label."""
        if task == "multilabel" and not self.multilabel:
            eye = np.eye(len(self.classes), dtype=np.uint8)
            splits = {k: Split(eye[s.labels], s.paths, s.pixels) for k, s in self.splits.items()}
            return Source(self.name, self.classes, splits, self.flip_ok)
        if task == "multiclass" and self.multilabel:
            for name, split in self.splits.items():
                several = np.flatnonzero(split.labels.sum(1) != 1)
                if len(several):
                    i = several[0]
                    where = split.paths[i] if split.paths else f"{name} row {i + 1}"
                    raise UserError(f"{self.name}: {len(several)} image(s) have several labels (e.g. {where}: "
                                    f"{'|'.join(self.classes[j] for j in np.flatnonzero(split.labels[i]))}), so this "
                                    f"is multi-label data; train with --task multilabel (or leave --task out)")
            splits = {k: Split(s.labels.argmax(1), s.paths, s.pixels) for k, s in self.splits.items()}
            return Source(self.name, self.classes, splits, self.flip_ok)
        return self

    @property
    def native_size(self) -> tuple[int, int] | None:
        pixels = self.splits["train"].pixels if "train" in self.splits else None
        return None if pixels is None else pixels.shape[1:3]

    @property
    def native_channels(self) -> int | None:
        pixels = self.splits["train"].pixels if "train" in self.splits else None
        return None if pixels is None else (1 if pixels.ndim == 3 else pixels.shape[3])
