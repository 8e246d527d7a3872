"""GoogLeNet's 1x1 reduction in numbers: a k x k convolution's parameters and multiply-accumulates with and without
a 1x1 convolution to fewer channels before it. Plain arithmetic, no torch: the answer comes at once, and the test
checks it against torch's own FLOP counter on the real layers."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError


@dataclass
class Cost:
    """Parameters and multiply-accumulates of a layer stack for one image."""

    params: int
    macs: int


def conv_cost(height: int, width: int, channels: int, out: int, kernel: int) -> Cost:
    """One convolution with 'same' padding, stride 1 and no bias: each of the ``height x width x out`` outputs
    sums ``kernel x kernel x channels`` products."""
    params = kernel * kernel * channels * out
    return Cost(params, height * width * params)


def bottleneck(height: int, width: int, channels: int, out: int, kernel: int, reduce: int) -> tuple[Cost, Cost]:
    """(direct k x k convolution, 1x1 reduction to ``reduce`` channels then the k x k one), 'same' padding,
    no biases."""
    if min(height, width, channels, out, kernel, reduce) < 1:
        raise UserError("--in, --out, --kernel and --reduce must all be positive")
    direct = conv_cost(height, width, channels, out, kernel)
    first, second = conv_cost(height, width, channels, reduce, 1), conv_cost(height, width, reduce, out, kernel)
    return direct, Cost(first.params + second.params, first.macs + second.macs)
