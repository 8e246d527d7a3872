"""Train/validation splitting: stratified by class with scikit-learn, reproducible from the seed."""
from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.model_selection import train_test_split

from ..errors import UserError
from .sources import Source


def split_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (train, validation); every class keeps the same share in both when it has enough images."""
    n, n_classes = len(labels), len(np.unique(labels))
    n_val = max(math.ceil(n * fraction), n_classes)
    if n - n_val < n_classes:
        raise UserError(f"only {n} images for {n_classes} classes: too few to hold out a validation split; "
                        f"add images or pass --val-split 0")
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    if stratify is None:
        warnings.warn("some classes have a single image: the validation split is not stratified", stacklevel=2)
    index = np.arange(n)
    train, val = train_test_split(index, test_size=n_val, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(val)


def with_validation(source: Source, fraction: float, seed: int) -> Source:
    """Give ``source`` a ``val`` split carved from ``train`` if it has none (``fraction`` 0: none)."""
    if "val" in source.splits or fraction == 0:
        return source
    train_idx, val_idx = split_indices(source.splits["train"].labels, fraction, seed)
    train = source.splits["train"]
    splits = dict(source.splits, train=train.subset(train_idx), val=train.subset(val_idx))
    return type(source)(source.name, source.classes, splits, source.flip_ok)
