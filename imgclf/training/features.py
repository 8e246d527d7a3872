"""Frozen-backbone features, computed once per image and kept in memory or on disk.

With the backbone frozen (batch-norm included) an image's pooled features never change, so feature extraction
computes them once and trains the head on them: every epoch after the first costs only the head. An entry is keyed
by a hash of the image's preprocessed pixels, which pins down the image and the resize/crop that made them; a
cache file holds one backbone (a hash of its weights and of the normalisation), so other weights never mix in.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..data.tensors import ImageTensors, row_digests
from ..data.transforms import normalize
from ..resources import inference_batch
from .transfer import head_parameters, pre_logits


def default_cache_dir() -> Path:
    """``$IMGCLF_CACHE_DIR/features``, else ``~/.cache/imgclf/features``."""
    return Path(os.environ.get("IMGCLF_CACHE_DIR", "~/.cache/imgclf")).expanduser() / "features"


def backbone_fingerprint(model: nn.Module, mean: list[float], std: list[float]) -> str:
    """A hash of everything that decides the features: the backbone's weights and buffers, and the normalisation."""
    head = {id(p) for p in head_parameters(model)}
    digest = hashlib.sha256(f"{type(model).__name__} {mean} {std}".encode())
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in head:
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Pooled backbone features for decoded images: looked up by image hash, computed only when missing.

    :meth:`save` writes what is new to ``directory``; ``directory=None`` keeps them in memory for this process
    only. ``computed`` counts the images the backbone actually ran on, ``reused`` those found in the cache.
    """

    def __init__(self, model: nn.Module, mean: list[float], std: list[float], device: torch.device,
                 directory: Path | None = None, channels_last: bool = False, batch_size: int | None = None) -> None:
        self.model, self.device, self.channels_last, self.batch_size = model, device, channels_last, batch_size
        self.mean = torch.tensor(mean, device=device)
        self.std = torch.tensor(std, device=device)
        fingerprint = backbone_fingerprint(model, mean, std)
        self.path = directory / f"{fingerprint[:24]}.safetensors" if directory is not None else None
        self.index: dict[bytes, int] = {}
        self.features = torch.empty(0)
        self.computed = self.reused = 0
        self.dirty = False  # entries computed since the file was read or written
        if self.path is not None and self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            stored = load_file(str(self.path))
            keys, features = stored["keys"], stored["features"]
        except (SafetensorError, KeyError, OSError):  # a damaged cache is only a cache: recompute
            return
        self.index = {bytes(k): i for i, k in enumerate(keys.numpy())}
        self.features = features

    def save(self) -> None:
        """Write new entries to the cache file (atomically); nothing to do in memory or when nothing is new."""
        if self.path is None or not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = torch.from_numpy(np.frombuffer(b"".join(self.index), dtype=np.uint8).reshape(-1, 16).copy())
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        save_file({"keys": keys, "features": self.features.contiguous()}, str(tmp))
        tmp.replace(self.path)
        self.dirty = False

    @torch.inference_mode()
    def _compute(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Features of the images ``x[index]``, gathered a batch at a time (never a copy of them all)."""
        self.model.eval()
        out = []
        step = self.batch_size or inference_batch(tuple(x.shape[1:]))
        for start in range(0, len(index), step):
            batch = normalize(x[index[start:start + step]].to(self.device), self.mean, self.std, self.channels_last)
            out.append(pre_logits(self.model, batch).float().cpu())
        return torch.cat(out)

    def __call__(self, images: ImageTensors) -> ImageTensors:
        """The features of ``images`` (float32, N x D) with the same labels, computing only what is missing."""
        keys = row_digests(images.x)
        todo: dict[bytes, int] = {}  # each new image once, even when it appears twice
        for i, key in enumerate(keys):
            if key not in self.index:
                todo.setdefault(key, i)
        if todo:
            new = self._compute(images.x, torch.tensor(list(todo.values()), dtype=torch.long))
            start = len(self.index)
            for j, key in enumerate(todo):
                self.index[key] = start + j
            self.features = torch.cat([self.features.reshape(-1, new.shape[1]), new]) if len(self.features) else new
            self.dirty = True
        self.computed += len(todo)
        self.reused += len(keys) - len(todo)
        rows = torch.tensor([self.index[k] for k in keys], dtype=torch.long)
        return ImageTensors(self.features[rows], images.y, images.paths)
