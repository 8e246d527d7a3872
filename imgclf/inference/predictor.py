"""What every classifier can do given its class names, its preprocessing and a probability function: predict files,
folders, globs, pixel CSVs, PIL images and arrays, and answer yes/no questions.

No torch here: an exported ``.onnx`` file predicts (and serves) on onnxruntime without importing PyTorch or timm,
so ``imgclf predict model.onnx`` starts in well under a second. :class:`~imgclf.inference.classifier.Classifier` (PyTorch)
and :class:`~imgclf.inference.onnx.OnnxClassifier` (onnxruntime) implement :meth:`Predictor.proba`.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
from PIL import Image

from ..config import TrainConfig
from ..data.decode import BadImage, Preprocess
from ..data.pixel_csv import is_pixel_csv, iter_pixel_csv
from ..data.workers import start_worker
from ..errors import UserError
from ..task import Task, get_task
from .decide import Decision, decide, positive_ids
from .inputs import Prediction, collect_inputs
from .tta import averaged

if TYPE_CHECKING:
    from ..run import RunDir

Input = Union[str, Path, Image.Image, np.ndarray]
Entry = tuple[str, Input, Union[str, None]]  # (name, image, true label)
Decoded = tuple[Union[np.ndarray, None], dict[int, str]]  # (pixels of the readable images, {index: reason})


def to_pixels(pre: Preprocess, item: Input) -> np.ndarray:
    """One image as the model sees it before normalisation: uint8 (C, H, W); raises :class:`BadImage`."""
    if isinstance(item, Image.Image):
        return pre(item)
    if isinstance(item, np.ndarray):
        return pre(Image.fromarray(item))
    return pre.load(item)


def decode_batch(pre: Preprocess, items: list[Input]) -> Decoded:
    """Decode a batch (in a worker process, or here): the readable images stacked (a list where their sizes
    differ: a raw-input model's whole photos), and why the others are not."""
    pixels, errors = [], {}
    for i, item in enumerate(items):
        try:
            pixels.append(to_pixels(pre, item))
        except BadImage as exc:
            errors[i] = str(exc)
    return (stacked(pixels) if pixels else None), errors


def stacked(pixels: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """Images as one array, or as the list where their sizes differ (a raw-input model's whole photos)."""
    return np.stack(pixels) if len({p.shape for p in pixels}) == 1 else pixels


def _chunks(entries: Iterator[Entry], size: int) -> Iterator[list[Entry]]:
    batch: list[Entry] = []
    for entry in entries:
        batch.append(entry)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Predictor:
    """The shared predict API; subclasses set ``classes``, ``config`` and ``run`` and implement :meth:`proba`."""

    classes: list[str]
    config: TrainConfig
    run: "RunDir | None" = None
    supports_gradcam = False  # Grad-CAM needs the PyTorch model's gradients
    tta = False  # test-time augmentation: average the image's views (imgclf.inference.tta) in every prediction
    # Two classes: answer class 1 from this probability on; multi-label: each label's (tuned on validation).
    threshold: float | list[float] | None = None
    positive = 1  # two classes: the class the run detects (its --positive), whose binary scores are reported

    @property
    def fitted_passes(self) -> dict[tuple[int, ...], int]:
        """Images per forward pass that fit the memory, per input shape, once measured (inference.batching)."""
        return self.__dict__.setdefault("_fitted_passes", {})

    @property
    def task(self) -> Task:
        """What the outputs mean (multi-class or multi-label), as the run was trained."""
        return get_task(self.config.task)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """:meth:`proba`, averaged over the test-time views when :attr:`tta` is on."""
        if not self.tta:
            return self.proba(x)
        return averaged(self.proba, x, self.config.flip is not False)

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (float32) for uint8 images already at the model's size, (N, C, H, W) -> (N, classes)."""
        raise NotImplementedError

    def preprocess(self) -> Preprocess:
        """What turns an image into this predictor's input (the run's :class:`Preprocess`)."""
        return Preprocess.of(self.config)

    def pixels(self, item: Input) -> np.ndarray:
        """One image as the model sees it before normalisation: uint8 (C, H, W) at its size; a file that cannot
        be read raises :class:`~imgclf.data.decode.BadImage`."""
        return to_pixels(self.preprocess(), item)

    def _items(self, inputs: Input | Iterable, skip: set[str] = frozenset()) -> Iterator[Entry]:
        """(name, image, true label or None) per image, lazily: a pixel CSV is read in chunks, one image a row,
        named ``file.csv#N`` (N from 1, Kaggle's ImageId). Names in ``skip`` (done before) are left out."""
        items = [inputs] if isinstance(inputs, (str, Path, Image.Image, np.ndarray)) else list(inputs)
        if all(isinstance(i, (str, Path)) for i in items):
            items = collect_inputs([str(i) for i in items])
        for start, item in enumerate(items):
            if isinstance(item, Path) and is_pixel_csv(item):
                row = 0
                for pixels, labels in iter_pixel_csv(item):
                    for k, arr in enumerate(pixels):
                        row += 1
                        if f"{item}#{row}" not in skip:
                            yield f"{item}#{row}", arr, None if labels is None else labels[k]
            elif isinstance(item, (str, Path)):
                if str(item) not in skip:
                    yield str(item), item, None
            else:
                yield f"<image {start}>", item, None

    def probabilities(self, inputs: Input | Iterable, batch_size: int = 64
                      ) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
        """(name, probabilities over every class, error) per input, in order, computed a batch at a time; an
        unreadable file has no probabilities and the reason as its error. Inputs as for :meth:`predict`."""
        for name, probs, error, _ in self._scored(inputs, batch_size):
            yield name, probs, error

    def _decoded(self, inputs: Input | Iterable, batch_size: int, workers: int, skip: set[str]
                 ) -> Iterator[tuple[list[Entry], Decoded]]:
        """Batches of entries with their decoded pixels, in order. With ``workers``, files are decoded in that many
        processes while the model runs here, at most two batches per worker ahead (memory stays flat however
        many files there are)."""
        pre, batches = self.preprocess(), _chunks(self._items(inputs, skip), batch_size)
        if workers == 0:
            for batch in batches:
                yield batch, decode_batch(pre, [item for _, item, _ in batch])
            return
        with ProcessPoolExecutor(workers, initializer=start_worker, initargs=(os.getpid(),)) as pool:
            pending: deque[tuple[list[Entry], Future]] = deque()
            for batch in batches:
                pending.append((batch, pool.submit(decode_batch, pre, [item for _, item, _ in batch])))
                if len(pending) > 2 * workers:
                    done, future = pending.popleft()
                    yield done, future.result()
            for done, future in pending:
                yield done, future.result()

    def _scored(self, inputs: Input | Iterable, batch_size: int, workers: int = 0, skip: set[str] = frozenset()
                ) -> Iterator[tuple[str, np.ndarray | None, str | None, str | None]]:
        for batch, (pixels, errors) in self._decoded(inputs, batch_size, workers, skip):
            probs = iter(self.scores(pixels)) if pixels is not None else iter(())
            for i, (name, _, truth) in enumerate(batch):
                yield (name, None, errors[i], truth) if i in errors else (name, next(probs), None, truth)

    def iter_predict(self, inputs: Input | Iterable, top_k: int = 5, batch_size: int = 64, workers: int = 0,
                     skip: set[str] = frozenset()) -> Iterator[Prediction]:
        """:meth:`predict`, one :class:`Prediction` at a time as the batches are computed, files decoded by
        ``workers`` processes (for 100,000 files); inputs named in ``skip`` are left out (a resumed run).
        Multi-label: every label at or above its threshold (``top_k`` does not apply), and every label's
        probability in :attr:`Prediction.scores`."""
        k = max(1, min(top_k, len(self.classes)))
        task = self.task
        for name, probs, error, truth in self._scored(inputs, batch_size, workers, skip):
            if probs is None:
                yield Prediction(name, [], [], error, truth)
                continue
            top = task.answer(probs, k, self.threshold)  # two classes: the tuned decision first
            scores = {c: round(float(p), 6) for c, p in zip(self.classes, probs)} if task.multilabel else None
            yield Prediction(name, [self.classes[j] for j in top], [round(float(probs[j]), 6) for j in top],
                             truth=truth, scores=scores)

    def predict(self, inputs: Input | Iterable, top_k: int = 5, batch_size: int = 64) -> list[Prediction]:
        """Top-k classes for image files, folders, globs, pixel CSVs (one image a row), PIL images or HxW[xC]
        uint8 arrays. Unreadable files get a :class:`Prediction` with ``error`` set instead of stopping the rest."""
        return list(self.iter_predict(inputs, top_k, batch_size))

    def decide(self, inputs: Input | Iterable, positive: str | list[str], threshold: float | None = None,
               batch_size: int = 64) -> list[Decision]:
        """Yes/no per image: is it one of the ``positive`` classes (names or ids)? Yes when the most likely class
        is positive, or, given ``threshold``, when the positive classes' summed probability reaches it. Images
        in folders named positive/negative (or ``X``/``not_X``) carry their ground truth."""
        spec = positive if isinstance(positive, str) else ",".join(map(str, positive))
        ids = positive_ids(spec, self.classes)
        if self.task.multilabel:
            raise UserError("--positive asks which one class an image is; a multi-label model answers each label "
                            "on its own: predict without --positive (and --threshold T to answer labels from T)")
        if threshold is None and ids == [1] and len(self.classes) == 2:
            threshold = self.threshold  # the run's own, tuned on validation (None for older runs)
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise UserError(f"--threshold must be between 0 and 1, got {threshold}")
        return [decide(name, probs, ids, self.classes, threshold, error)
                for name, probs, error in self.probabilities(inputs, batch_size)]
