"""Test-time augmentation: each image is also seen mirrored (unless the run was trained without flips) and shifted a
little both ways; the class probabilities of the views are averaged. Works on uint8 numpy batches, so the PyTorch
and the ONNX classifiers share it."""
from __future__ import annotations

from typing import Callable

import numpy as np

VIEWS = 4  # the most views an image gets (a forward pass each): itself, its mirror and two shifts


def shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``x`` (N, C, H, W) moved by (dy, dx) pixels, the border repeated into the space it leaves."""
    pad = ((0, 0), (0, 0), (max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)))
    h, w = x.shape[2:]
    padded = np.pad(x, pad, mode="edge")
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[:, :, top:top + h, left:left + w]


def views(x: np.ndarray, flip: bool = True) -> list[np.ndarray]:
    """The image, its mirror (when ``flip``), and shifts of 1/16 of the side down-right and up-left."""
    d = max(1, x.shape[-1] // 16)
    out = [x] + ([np.ascontiguousarray(x[..., ::-1])] if flip else [])
    return out + [shifted(x, d, d), shifted(x, -d, -d)]


def averaged(proba: Callable[[np.ndarray], np.ndarray], x: np.ndarray, flip: bool = True) -> np.ndarray:
    """The mean of ``proba`` over the views of ``x``."""
    return np.mean([proba(np.ascontiguousarray(v)) for v in views(x, flip)], axis=0)

