"""Predict with an exported ``.onnx`` file alone: onnxruntime runs it, and the preprocessing and class names come
from the file's metadata (written by :func:`imgclf.deploy.export.export`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..config import TrainConfig
from ..data.decode import open_image, to_mode
from ..errors import UserError
from ..resources import threads_per_process
from .batching import in_passes
from .predictor import Predictor

if TYPE_CHECKING:
    import torch

    from ..data.decode import Preprocess

# The metadata keys an imgclf export carries (all strings; lists and numbers as JSON).
METADATA_KEYS = ("labels", "model", "channels", "img_size", "resize", "crop_pct", "interpolation", "mean", "std")
INPUT_FORMAT = "float32 NCHW: pixels / 255, minus mean, over std (per channel), after resize and centre crop"
# imgclf export --raw-input (imgclf.deploy.raw_input): the graph takes the decoded photo and preprocesses it itself
RAW_INPUT_FORMAT = "uint8 NHWC RGB: raw decoded pixels of any size; resize, crop and normalisation in the graph"
RAW_INPUT = "pixels"
RAW_PIXELS_PER_RUN = 16_000_000  # photos' pixels per onnxruntime run of a raw-input file (about 0.3 GB of work)


class RawPixels:
    """How an app hands an image to a raw-input model: the whole decoded picture as uint8 RGB (H, W, 3), a file
    decoded at full size (no reduced-scale JPEG decoding). Used where a :class:`Preprocess` would be."""

    def __call__(self, im: Image.Image) -> np.ndarray:
        return np.asarray(to_mode(im, 3))

    def load(self, path: str | Path) -> np.ndarray:
        return self(open_image(path))


def session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session; a missing or damaged file is a one-line error."""
    import onnxruntime as ort

    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or threads_per_process()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise UserError(f"{path}: not a valid ONNX model ({str(exc).splitlines()[0][:200]})") from None


def _read_metadata(path: str | Path, meta: dict[str, str]) -> tuple[list[str], TrainConfig, Any]:
    """The class names, the preprocessing and the threshold(s) an exported file carries; damaged metadata (edited
    by hand, or written by another tool) is a one-line error."""
    try:
        classes = json.loads(meta["labels"])
        cfg = TrainConfig(model=meta["model"], channels=int(meta["channels"]), img_size=int(meta["img_size"]),
                          resize=meta["resize"], crop_pct=float(meta["crop_pct"]), interpolation=meta["interpolation"],
                          mean=json.loads(meta["mean"]), std=json.loads(meta["std"]), channels_last=False,
                          flip=json.loads(meta.get("flip", "null")), task=meta.get("task", "multiclass"))
        threshold = json.loads(meta["threshold"]) if "threshold" in meta else None
    except ValueError as exc:  # json.JSONDecodeError is one
        raise UserError(f"{path}: damaged metadata ({str(exc).splitlines()[0]}); export the model again with "
                        f"'imgclf export RUN'") from None
    numbers = [*cfg.mean, *cfg.std] if isinstance(cfg.mean, list) and isinstance(cfg.std, list) else [None]
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)) or \
            not all(isinstance(v, (int, float)) for v in numbers) or len(cfg.mean) != cfg.channels:
        raise UserError(f"{path}: damaged metadata (labels must be a list of names, mean and std one number per "
                        f"channel); export the model again with 'imgclf export RUN'")
    return classes, cfg, threshold


class OnnxClassifier(Predictor):
    """The same predict API as :class:`~imgclf.inference.classifier.Classifier`, on onnxruntime, from the file alone."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        meta, first_dim = self._open(threads)
        missing = [k for k in METADATA_KEYS if k not in meta]
        if missing:
            raise UserError(f"{path}: no {', '.join(missing)} in its metadata; export the model with "
                            f"'imgclf export RUN'")
        self.metadata = dict(meta)
        self.classes, self.config, self.threshold = _read_metadata(path, meta)
        self.positive = 0 if meta.get("positive") == "0" else 1
        self.run = None
        self.raw = meta.get("input_format") == RAW_INPUT_FORMAT  # the preprocessing is in the graph
        self.fixed_batch = first_dim if isinstance(first_dim, int) else None
        self._mean = np.asarray(self.config.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        self._std = np.asarray(self.config.std, dtype=np.float32).reshape(1, -1, 1, 1)

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> "OnnxClassifier":
        return cls(path, threads)

    def _open(self, threads: int | None) -> tuple[dict[str, str], int | str | None]:
        """Open the file for this runtime: (its metadata, its input's first dimension)."""
        self.session = session(self.path, threads)
        self.input = self.session.get_inputs()[0]
        return self.session.get_modelmeta().custom_metadata_map, self.input.shape[0]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """The model's outputs for one input batch."""
        return self.session.run(None, {self.input.name: batch})[0]

    def preprocess(self) -> "Preprocess | RawPixels":
        """The run's preprocessing, or for a raw-input file the decoded photo as it is (the graph does the rest)."""
        return RawPixels() if self.raw else super().preprocess()

    def scores(self, x: np.ndarray) -> np.ndarray:
        if self.raw and self.tta:
            raise UserError(f"{self.path} takes whole photos (exported with --raw-input): test-time augmentation "
                            f"needs the run's own preprocessing; predict without --tta, or on a plain export")
        return super().scores(x)

    def logits(self, x: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """Raw outputs for uint8 images (N, C, H, W) at the model's size; for a raw-input file, whole photos
        (N, H, W, 3), or a list of (H, W, 3) photos of any sizes (run a size at a time)."""
        if self.raw:
            return self._raw_logits(x)
        batch = (x.astype(np.float32) / 255 - self._mean) / self._std
        if self.fixed_batch is None:
            return self._run(batch)
        step = self.fixed_batch  # exported with --no-dynamic-batch: feed it the batch size it was traced with
        return np.concatenate([self._run(batch[i:i + step])
                               for i in range(0, len(batch), step)])

    def _raw_logits(self, x: np.ndarray | list[np.ndarray]) -> np.ndarray:
        photos = list(x)
        out: list[np.ndarray | None] = [None] * len(photos)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, photo in enumerate(photos):
            by_shape.setdefault(photo.shape, []).append(i)
        for shape, where in by_shape.items():
            # the graph's float copies of a run's photos are ~20 bytes a pixel: 64 phone photos at once would be
            # 15 GB, so a run holds at most RAW_PIXELS_PER_RUN pixels
            step = self.fixed_batch or max(1, RAW_PIXELS_PER_RUN // (shape[0] * shape[1]))
            for start in range(0, len(where), step):
                chunk = where[start:start + step]
                logits = self._run(np.stack([photos[i] for i in chunk]))
                for i, row in zip(chunk, logits):
                    out[i] = row
        return np.stack(out) if out else np.empty((0, len(self.classes)), np.float32)

    def proba(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Probabilities: the softmax of the logits, or each label's sigmoid for a multi-label model; ``batch_size``
        images a pass, by default as many as fit the memory (:mod:`imgclf.inference.batching`)."""
        def run(start: int, stop: int) -> np.ndarray:
            return self.task.probabilities_np(self.logits(x[start:stop]))

        if self.raw:  # photos of any size: each run holds what one decoded batch of them holds
            return self.task.probabilities_np(self.logits(x)) if len(x) else np.empty((0, len(self.classes)),
                                                                                       np.float32)
        if batch_size:
            out = [run(start, start + batch_size) for start in range(0, len(x), batch_size)]
        else:
            out = in_passes(run, len(x), tuple(x.shape[1:]), "cpu", self.fitted_passes)
        return np.concatenate(out) if out else np.empty((0, len(self.classes)), np.float32)

    def predict_proba(self, x: "torch.Tensor", batch_size: int | None = None) -> "torch.Tensor":
        """:meth:`proba` for torch tensors, as :meth:`imgclf.inference.classifier.Classifier.predict_proba` takes them."""
        import torch

        return torch.from_numpy(self.proba(x.numpy(), batch_size))
