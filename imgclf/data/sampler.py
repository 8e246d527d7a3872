"""Balanced sampling for imbalanced classes: every class equally likely in every batch.

torch's WeightedRandomSampler draws from one generator and knows nothing of processes; this sampler draws the same
way (``torch.multinomial`` over per-image weights, with replacement) from a generator seeded by the seed and the
epoch, as DistributedSampler does, so each epoch is reproducible on its own (resume is exact) and every process can
take a disjoint shard of the same draw.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from ..distributed import rank, world_size


class BalancedSampler(torch.utils.data.Sampler[int]):
    """``len(labels)`` draws an epoch (in all, over ``replicas`` processes), each image with probability
    proportional to 1 / (its class's count); this process yields shard ``rank``."""

    def __init__(self, labels: torch.Tensor | np.ndarray, seed: int = 0, replicas: int = 1, rank: int = 0) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        counts = np.bincount(labels)
        self.weights = torch.from_numpy(1.0 / counts[labels])
        self.seed, self.replicas, self.rank, self.epoch = seed, replicas, rank, 0
        self.num_samples = math.ceil(len(labels) / replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.num_samples * self.replicas, replacement=True,
                                  generator=generator)
        return iter(drawn[self.rank::self.replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


def shard_sampler(labels: torch.Tensor, seed: int, balanced: bool = False) -> torch.utils.data.Sampler | None:
    """Every epoch a fresh seeded shuffle, cut into one disjoint shard per process (None for one process: the
    loader shuffles); ``balanced``: classes drawn equally often (:class:`BalancedSampler`)."""
    if balanced:
        return BalancedSampler(labels, seed, world_size(), rank())
    if world_size() == 1:
        return None
    return torch.utils.data.DistributedSampler(range(len(labels)), world_size(), rank(), shuffle=True, seed=seed)
