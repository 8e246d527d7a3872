"""The light augmentation (random shifts with reflected borders, horizontal flips) as one gather on a whole batch.

Per-image torchvision transforms run in DataLoader workers, and on a 2-core laptop the worker takes a core from the
training threads (a fifth of an epoch measured on Fashion-MNIST); on a GPU they are the usual bottleneck. Here the
batch stays uint8 on the training device and every image gets its own random offset and flip from one index
computation, the same distribution as ``v2.RandomCrop(size, padding=size // 12, padding_mode="reflect")`` followed
by ``v2.RandomHorizontalFlip()``. The parameters come from a generator of its own (seeded per process), whose
state the checkpoint keeps, so a resumed run draws what the uninterrupted one would have. ``--erase P`` adds
random erasing (Zhong et al., timm's ``--reprob``) to it, the same way: a rectangle per image from one mask.
"""
from __future__ import annotations

from typing import Any

import torch


def reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside [0, size) mirrored back inside it, as reflect padding does (-1 -> 1, size -> size - 2)."""
    period = 2 * (size - 1)
    index = index.remainder(period) if period else torch.zeros_like(index)
    return torch.where(index >= size, period - index, index)


class BatchAugment:
    """``x (N, C, H, W) -> x`` shifted by up to ``pad`` pixels each way (default a twelfth of the side, at least 1)
    and, with ``flip``, mirrored for half of the images, and with probability ``erase`` a random rectangle set to
    0; any dtype, any device."""

    def __init__(self, size: int, flip: bool = True, seed: int = 0, pad: int | None = None, erase: float = 0.0
                 ) -> None:
        self.pad = pad if pad is not None else max(1, size // 12)
        self.flip, self.erase = flip, erase
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p, g = self.pad, self.generator
        dy = torch.randint(-p, p + 1, (n, 1), generator=g)
        dx = torch.randint(-p, p + 1, (n, 1), generator=g)
        rows = reflect(dy + torch.arange(h), h)  # (N, H): the source row of every output row
        cols = reflect(dx + torch.arange(w), w)
        if self.flip:
            mirrored = torch.rand(n, generator=g) < 0.5
            cols = torch.where(mirrored[:, None], cols.flip(1), cols)
        rows, cols = rows.to(x.device), cols.to(x.device)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(c, device=x.device)[None, :, None, None]
        x = x[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
        return self._erased(x) if self.erase else x

    def _erased(self, x: torch.Tensor) -> torch.Tensor:
        """Random erasing (Zhong et al.): with probability ``erase`` a rectangle of 2-25% of the image, aspect 0.3-3.3,
        set to 0. Not timm's ``RandomErasing``: it loops over the images in Python on normalised floats and draws
        from the global generator; this is one mask on the uint8 batch, from the generator the checkpoint keeps."""
        n, _, h, w = x.shape
        g = self.generator
        area = torch.empty(n).uniform_(0.02, 0.25, generator=g) * h * w
        aspect = torch.exp(torch.empty(n).uniform_(-1.2, 1.2, generator=g))
        eh = (area * aspect).sqrt().round().clamp(1, h).long()
        ew = (area / aspect).sqrt().round().clamp(1, w).long()
        y0 = (torch.rand(n, generator=g) * (h - eh + 1)).long()
        x0 = (torch.rand(n, generator=g) * (w - ew + 1)).long()
        chosen = torch.rand(n, generator=g) < self.erase
        ys, xs = torch.arange(h), torch.arange(w)
        inside = ((ys[None, :, None] >= y0[:, None, None]) & (ys[None, :, None] < (y0 + eh)[:, None, None])
                  & (xs[None, None, :] >= x0[:, None, None]) & (xs[None, None, :] < (x0 + ew)[:, None, None])
                  & chosen[:, None, None])
        return x.masked_fill(inside[:, None].to(x.device), 0)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
