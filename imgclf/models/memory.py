"""The memory a training step of a model needs at an input size, found without allocating any of it: the model is
built and run on PyTorch's meta device, which computes shapes and nothing else (a cnn at small inputs: on the CPU,
where two images cost nothing and the meta device's first use would cost 1.5 s of imports before the first training
step; a timm model stays on the meta device at any size: initialising a large one's weights takes seconds)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import create_model, is_cnn

# Each parameter lives with its gradient and an optimizer's two moments (Adam, AdamW), in float32.
BYTES_PER_PARAMETER = 4 * 4
SMALL_INPUT = 96  # below this many pixels a side a cnn runs on the CPU (training.batch_size's rule too)


@dataclass
class StepMemory:
    """Bytes of one training step: per image (the activations the backward pass keeps) and fixed (the weights,
    gradients and optimizer state)."""

    per_image: int
    fixed: int

    def total(self, batch: int) -> int:
        return self.fixed + batch * self.per_image


def step_memory(name: str, num_classes: int, in_chans: int, img_size: int) -> StepMemory:
    """The training step of ``name`` at ``img_size`` pixels, measured on the meta device: every layer's output for
    one image (float32), and the parameters with their gradients and optimizer state."""
    sizes: list[int] = []

    def record(_module: nn.Module, _inputs: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    with torch.device("cpu" if is_cnn(name) and img_size < SMALL_INPUT else "meta"):
        model = create_model(name, num_classes, in_chans, img_size)
        handles = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
        model.train()  # as it trains (GoogLeNet's auxiliary classifiers too), on two images: batch-norm needs two
        with torch.no_grad():
            model(torch.zeros(2, in_chans, img_size, img_size))
    for handle in handles:
        handle.remove()
    params = sum(p.numel() for p in model.parameters())
    return StepMemory(in_chans * img_size * img_size * 4 + sum(sizes) // 2, params * BYTES_PER_PARAMETER)
