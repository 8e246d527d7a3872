"""Images per forward pass of prediction and serving: as many as fit half the memory this process may use.

The ceiling is the input's size (``resources.inference_batch``: 32 MB of float32 input, 55 photos at 224 px). For
photos the first two passes measure what a pass takes (``resources.PeakMemory``, as training's ``--batch-size auto``
does), on the images being predicted, so nothing is computed twice: a pass of 8 images, then one of 2. The memory
per image and the part that does not grow give the largest pass under the budget; the images left are split into
passes of equal size under it (64 at 55 a pass: 32 and 32, not 55 and 9). A network with wide early layers
at a large size (VGG at 448 px: about 200 MB an image) then predicts in small passes instead of taking the
machine's memory, and a laptop that has little left says so through smaller passes, not the kernel's OOM killer.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from ..resources import PeakMemory, device_memory, inference_batch

T = TypeVar("T")

# The larger pass first: what is allocated once (workspaces, onnxruntime's arena) is then counted per image, the
# estimate errs on the side of smaller passes. Not 1 image: a pass of one can take a workspace of its own that
# passes of more do not grow (vgg16 at 448 px: 431 MB at 1 image, 617 MB at 4, 1,233 MB at 8), and the growth
# from 1 would be underestimated.
MEASURED_AT = (8, 2)
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
        measure = large and n > sum(MEASURED_AT) and batch > MEASURED_AT[0] and PeakMemory.available(device)
        if measure:
            peaks = []
            for size in MEASURED_AT:
                with PeakMemory(device) as peak:
                    outs.append(run(start, start + size))
                peaks.append(peak.peak)
                start += size
            (big, small), (at_big, at_small) = MEASURED_AT, peaks
            per_image = max((at_big - at_small) / (big - small), 1.0)
            fixed = max(at_small - small * per_image, 0.0)
            batch = max(1, min(batch, int((BUDGET_SHARE * device_memory(device) - fixed) // per_image)))
        if measure or not large:
            fitted[shape] = batch
    if start < n:
        size = -(-(n - start) // -(-(n - start) // batch))  # equal passes: ceil(left / ceil(left / batch))
        for begin in range(start, n, size):
            outs.append(run(begin, min(n, begin + size)))
    return outs
