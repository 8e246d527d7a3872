"""Batches from decoded tensors: indexing for plain batches, per-image v2 transforms only when augmenting."""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Callable

import torch

from ..distributed import world_size
from .store import FileRows
from .tensors import ImageTensors
from .workers import WorkerStart

if TYPE_CHECKING:
    from torchvision.transforms import v2


class TensorImages(torch.utils.data.Dataset):
    """Decoded uint8 images as a dataset; ``__getitems__`` builds a whole batch with one index operation.

    Over files decoded per batch (``--cache none``) a batch leaves out a file that no longer decodes, and with
    ``full_res`` the augmentation gets each photo at its own resolution (a random resized crop of the whole photo,
    not of the centre crop the other stores keep).
    """

    def __init__(self, images: ImageTensors, transform: v2.Transform | None = None, full_res: bool = False) -> None:
        self.x, self.y, self.transform = images.x, images.y, transform
        self.full_res = full_res and transform is not None and isinstance(self.x, FileRows)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[i]
        return (self.transform(x) if self.transform else x), self.y[i]

    def __getitems__(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.x, FileRows):
            images, good = self.x.read(index, self.full_res)
            labels = self.y[torch.as_tensor([index[j] for j in good], dtype=torch.long)]
            if self.transform is not None:
                images = [self.transform(img) for img in images]
            x = torch.stack(images) if images else torch.empty((0, *self.x.shape[1:]), dtype=torch.uint8)
            return x, labels
        idx = torch.as_tensor(index)
        x = self.x[idx]
        if self.transform is not None:
            # Random parameters must differ per image, so each image gets its own draw.
            x = torch.stack([self.transform(img) for img in x])
        return x, self.y[idx]



def without_lone_image(batch: int, n_images: int) -> int:
    """The largest batch up to ``batch`` (and ``n_images``) whose last batch of ``n_images`` is not a single image,
    which batch-norm cannot train on."""
    batch = min(batch, n_images)
    while batch > 2 and n_images % batch == 1:
        batch -= 1
    return batch


def per_process_batch(batch_size: int, n_train: int, log: Callable[[str], None]) -> int:
    """``--batch-size`` is the global batch: each of N processes takes 1/N of it, so the learning rate, the steps
    per epoch and the results match one process's run (no rescaling, said in the log). No process gets a last
    batch of a single image, which batch-norm cannot train on."""
    n = world_size()
    if n == 1:
        return batch_size
    shard = math.ceil(n_train / n)
    per = without_lone_image(max(1, batch_size // n), shard)  # batch_size is at most n_train already
    log(f"{n} processes ({torch.distributed.get_backend()}): global batch {per * n} = {n} x {per} per process"
        f"{f' (--batch-size {batch_size} does not split evenly)' if per * n != batch_size else ''}; the "
        f"learning rate is the one-process rate, since the global batch is the same; each process trains on its "
        f"own shard of {shard} images per epoch")
    return per


def _as_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch


def train_loader(images: ImageTensors, batch_size: int, transform: v2.Transform | None, workers: int,
                 seed: int, pin_memory: bool = False, sampler: torch.utils.data.Sampler | None = None,
                 full_res: bool = False) -> torch.utils.data.DataLoader:
    """Shuffled batches (by ``sampler`` when given, e.g. one process's shard); worker processes only when there is
    per-image work to overlap: augmentation, or decoding files (``--cache none``).

    Workers are started afresh each epoch (not persistent) so their random seeds come from ``generator`` at the
    epoch's start: an epoch is reproducible from that state alone, which makes resuming exact.
    """
    generator = torch.Generator().manual_seed(seed)
    workers = workers if transform is not None or isinstance(images.x, FileRows) else 0
    return torch.utils.data.DataLoader(
        TensorImages(images, transform, full_res), batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
        drop_last=False, num_workers=workers, collate_fn=_as_batch, generator=generator, pin_memory=pin_memory,
        worker_init_fn=WorkerStart() if workers else None)


def eval_batches(images: ImageTensors, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches in order, no augmentation: slices of the decoded tensors."""
    for start in range(0, len(images), batch_size):
        yield images.x[start:start + batch_size], images.y[start:start + batch_size]
