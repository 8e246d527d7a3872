"""Train/validation splitting: stratified by class with scikit-learn, reproducible from the seed."""
from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from ..errors import UserError
from .sources import Source, Split


def split_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (train, validation); every class keeps the same share in both when it has enough images.
    Multi-label rows (a 0/1 matrix) are split by iterative stratification (Sechidis et al., the
    ``iterative-stratification`` package), which keeps every label's share, and those of pairs of labels."""
    if labels.ndim == 2:
        return _multilabel_split(labels, fraction, seed)
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


def sample(source: Source, limit: int, seed: int = 0) -> Source:
    """``source`` with its training split cut to a sample of ``limit`` images, stratified by class where every
    class has two images or more (a multi-label split: a plain random sample); the other splits as they are."""
    train = source.splits["train"]
    if limit >= len(train):
        return source
    labels = train.labels
    counts = np.bincount(labels) if labels.ndim == 1 else np.zeros(1)
    stratify = labels if labels.ndim == 1 and counts[counts > 0].min() >= 2 and limit >= len(counts) else None
    index, _ = train_test_split(np.arange(len(train)), train_size=limit, random_state=seed, stratify=stratify)
    return Source(source.name, source.classes, source.splits | {"train": train.subset(np.sort(index))},
                  source.flip_ok)


def _multilabel_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    n = len(labels)
    n_val = max(math.ceil(n * fraction), 1)
    if n - n_val < 2:
        raise UserError(f"only {n} images: too few to hold out a validation split; add images or pass --val-split 0")
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_val / n, random_state=seed)
    train, val = next(splitter.split(np.zeros(n), labels))
    return np.sort(train), np.sort(val)


def with_validation(source: Source, fraction: float, seed: int) -> Source:
    """Give ``source`` a ``val`` split carved from ``train`` if it has none (``fraction`` 0: none)."""
    if "val" in source.splits or fraction == 0:
        return source
    train_idx, val_idx = split_indices(source.splits["train"].labels, fraction, seed)
    train = source.splits["train"]
    splits = dict(source.splits, train=train.subset(train_idx), val=train.subset(val_idx))
    return type(source)(source.name, source.classes, splits, source.flip_ok)


def pooled(source: Source) -> Split:
    """The images of the cross-validation folds: train and validation together (the test split stays out)."""
    train = source.splits["train"]
    if "val" not in source.splits:
        return train
    val = source.splits["val"]
    paths = None if train.paths is None or val.paths is None else train.paths + val.paths
    pixels = None if train.pixels is None or val.pixels is None else np.concatenate([train.pixels, val.pixels])
    return Split(np.concatenate([train.labels, val.labels]), paths, pixels)


def fold_indices(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """The validation indices of each of ``folds`` stratified folds (scikit-learn's StratifiedKFold, shuffled
    with ``seed``); every image is in exactly one."""
    smallest = np.bincount(labels)[np.unique(labels)].min()
    if folds < 2:
        raise UserError(f"--folds {folds}: cross-validation needs at least 2 folds")
    if folds > smallest:
        raise UserError(f"--folds {folds}: the smallest class has only {smallest} image(s), so some folds would "
                        f"have none of it; use --folds {max(2, smallest)} or fewer")
    kfold = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return [val for _, val in kfold.split(np.zeros(len(labels)), labels)]


def with_fold(source: Source, folds: int, fold: int, seed: int) -> Source:
    """Fold ``fold`` of ``folds`` as the validation split, the other folds as train; a test split stays as it is."""
    images = pooled(source)
    val = fold_indices(images.labels, folds, seed)[fold]
    train = np.setdiff1d(np.arange(len(images)), val)
    splits = {"train": images.subset(train), "val": images.subset(val)}
    if "test" in source.splits:
        splits["test"] = source.splits["test"]
    return type(source)(source.name, source.classes, splits, source.flip_ok)


def holdout(source: Source, val_split: float, seed: int, folds: int | None = None, fold: int | None = None
            ) -> Source:
    """The run's validation split: fold ``fold`` of a cross-validation, else :func:`with_validation`."""
    return with_fold(source, folds, fold, seed) if fold is not None else with_validation(source, val_split, seed)
