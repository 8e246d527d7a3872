"""Images per forward pass of prediction and serving: as many as fit half the memory this process may use.

The ceiling is the input's size (``resources.inference_batch``: 32 MB of float32 input, 55 photos at 224 px). For
photos the first passes measure what a pass takes (``resources.PeakMemory``, as training's ``--batch-size auto``
does), on the images being predicted, so nothing is computed twice. A pass of one image first: with all of its
memory counted per image (the safe side), it says whether a pass of 8 fits; only then is one made, and the growth
from 1 to 8 gives the memory per image and the part that does not grow. Both are counted from before the first
pass, so memory a runtime keeps between passes (onnxruntime's arena) is not missed. The images left are split into
equal passes under the largest that fits (64 at 55 a pass: 32 and 32, not 55 and 9). A network with wide early
layers at a large size (vgg16 at 448 px: 431 MB for one image, 803 MB for 2, 1,233 MB for 8) then predicts a photo
at a time in a small container instead of being killed by the kernel.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from ..resources import PeakMemory, device_memory, inference_batch

T = TypeVar("T")

MEASURED_AT = (1, 8)
LARGE_INPUT = 96  # from this many pixels a side passes are measured (training.batch_size's rule)
BUDGET_SHARE = 0.5  # of the memory available: the rest is the decoded images, the workers and the machine's


def in_passes(run: Callable[[int, int], T], n: int, shape: tuple[int, ...], device: Any,
              fitted: dict[tuple[int, ...], int]) -> list[T]:
    """``run(start, stop)`` over ``n`` images of ``shape`` in passes that fit the memory of ``device`` (a
    ``torch.device`` or "cpu"). ``fitted`` remembers the pass size found per input shape: a predictor measures
    once, at its first call with more than a few images."""
    outs: list[T] = []
    start, batch = 0, fitted.get(shape)
    if batch is None:
        batch = inference_batch(shape)
        large = shape[-1] >= LARGE_INPUT
        small, big = MEASURED_AT
        measure = large and n > small + big and batch > small and PeakMemory.available(device)
        if measure:
            budget = BUDGET_SHARE * device_memory(device)
            with PeakMemory(device) as first:
                outs.append(run(0, small))
            low = first.peak
            fit = int(budget // max(low / small, 1.0))  # as if all of it grew with the images
            start = small
            if fit >= big:
                with PeakMemory(device) as second:
                    outs.append(run(small, small + big))
                high = second.peak + second.start - first.start
                start += big
                per_image = max((high - low) / (big - small), 1.0)
                fit = int((budget - max(low - small * per_image, 0.0)) // per_image)
            batch = max(1, min(batch, fit))
        if measure or not large:
            fitted[shape] = batch
    if start < n:
        size = -(-(n - start) // -(-(n - start) // batch))  # equal passes: ceil(left / ceil(left / batch))
        for begin in range(start, n, size):
            outs.append(run(begin, min(n, begin + size)))
    return outs
