"""The from-scratch CNN and its layer spec, so a learner can build the architectures textbooks draw.

A spec is a list of layer tokens separated by ``-`` or ``,`` (case does not matter)::

    32          conv 3x3, 32 filters, 'same' padding, then batch-norm and ReLU
    64k5s2p0    conv with kernel 5, stride 2, padding 0 (``psame`` / ``pvalid`` work too)
    m  m3s2     max-pool 2x2 (stride = kernel unless ``s`` is given);  a: average-pool;  g: global average pool
    d0.25       dropout with probability 0.25
    fc256       dense layer of 256 units with ReLU (the spatial map is flattened first)

The classifier layer (one output per class) is appended automatically. Example, the classic Keras stack:
``cnn:32-32-m-d0.25-64-64-m-d0.25-fc512-d0.5``.
"""
from __future__ import annotations

import math
import re
from typing import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import UserError

# Sized for small images (28-64 px) and 2 CPU cores: three conv-pool stages with batch-norm (two convolutions in the
# middle one), then a dense layer. On Fashion-MNIST it reaches 94% test accuracy in 20 epochs of about 15 s each on 2
# cores with bf16, 93.5% in 8 (BENCHMARKS.md). The second 64-filter convolution and light dropout won the
# ablation of issue 15 over the former 32-m-64-m-128-m-d0.3-fc256-d0.3 (93.3% in 20 epochs).
DEFAULT_SPEC = "32-m-64-64-m-128-m-d0.1-fc256-d0.1"

_CONV = re.compile(r"c?(\d+)(?:k(\d+))?(?:s(\d+))?(?:p(\d+|same|valid))?")
_POOL = re.compile(r"([ma])(\d+)?(?:s(\d+))?")
_DROP = re.compile(r"d(0?\.\d+|0|1(?:\.0*)?)")
_DENSE = re.compile(r"fc(\d+)")


def _bad(token: str, spec: str, why: str = "") -> UserError:
    return UserError(f"cnn spec {spec!r}: cannot read layer {token!r}{' (' + why + ')' if why else ''}; "
                     f"use e.g. 32, 64k5s2p0, m, a, g, d0.25, fc256 separated by '-'")


def _conv(token: str, spec: str, in_ch: int) -> tuple[list[nn.Module], int] | None:
    match = _CONV.fullmatch(token)
    if not match:
        return None
    filters, kernel, stride, pad = int(match[1]), int(match[2] or 3), int(match[3] or 1), match[4] or "same"
    if filters < 1 or kernel < 1 or stride < 1:
        raise _bad(token, spec, "filters, kernel and stride must be at least 1")
    padding = kernel // 2 if pad == "same" else 0 if pad == "valid" else int(pad)
    layers = [nn.Conv2d(in_ch, filters, kernel, stride, padding, bias=False), nn.BatchNorm2d(filters),
              nn.ReLU(inplace=True)]
    return layers, filters


def parse_spec(spec: str, in_chans: int) -> tuple[list[nn.Module], list[nn.Module]]:
    """Turn a spec into (feature layers, head layers without the final classifier)."""
    features: list[nn.Module] = []
    head: list[nn.Module] = []
    channels, dense = in_chans, False
    tokens = [t for t in re.split(r"[-,\s]+", spec.strip().lower()) if t]
    if not tokens:
        raise UserError("cnn spec is empty; use e.g. cnn:32-m-64-m-fc128")
    for token in tokens:
        target = head if dense else features
        if (drop := _DROP.fullmatch(token)) is not None:
            p = float(drop[1])
            if not 0 <= p < 1:
                raise _bad(token, spec, "dropout must be below 1")
            target.append(nn.Dropout(p))
        elif (fc := _DENSE.fullmatch(token)) is not None:
            if not dense:
                head.append(nn.Flatten())
                dense = True
            head += [nn.LazyLinear(int(fc[1])), nn.ReLU(inplace=True)]
        elif dense:
            raise _bad(token, spec, "convolution and pooling layers must come before the dense layers")
        elif token == "g":
            features.append(nn.AdaptiveAvgPool2d(1))
        elif (pool := _POOL.fullmatch(token)) is not None:
            kernel = int(pool[2] or 2)
            stride = int(pool[3] or kernel)
            features.append((nn.MaxPool2d if pool[1] == "m" else nn.AvgPool2d)(kernel, stride))
        elif (conv := _conv(token, spec, channels)) is not None:
            layers, channels = conv
            features += layers
        else:
            raise _bad(token, spec)
    if not any(isinstance(m, nn.Conv2d) for m in features):
        raise UserError(f"cnn spec {spec!r} has no convolution layer; start with a filter count such as 32")
    return features, head


class CNN(nn.Module):
    """A plain convolutional network: ``features`` (conv/pool stacks), then ``head`` (dense layers, classifier)."""

    def __init__(self, spec: str = DEFAULT_SPEC, num_classes: int = 10, in_chans: int = 1, img_size: int = 28) -> None:
        super().__init__()
        self.spec, self.num_classes = spec, num_classes
        features, head = parse_spec(spec, in_chans)
        self.features = nn.Sequential(*features)
        with torch.no_grad():
            shape = self._feature_shape(in_chans, img_size, spec)
        if not head:
            head = [nn.Flatten()]
        head.append(nn.LazyLinear(num_classes))
        self.head = nn.Sequential(*head)
        with torch.no_grad():  # materialise the lazy dense layers so weights can be saved and loaded
            self.head(torch.zeros(1, *shape))
        self.num_features = shape[0]
        self.grad_checkpointing = False

    def _feature_shape(self, in_chans: int, img_size: int, spec: str) -> tuple[int, ...]:
        x = torch.zeros(1, in_chans, img_size, img_size)
        for i, layer in enumerate(self.features):
            try:
                x = layer(x)
            except RuntimeError:  # pooling a map smaller than its window
                x = x[..., :0, :0]
            if x.shape[-1] < 1 or x.shape[-2] < 1:
                raise UserError(f"cnn spec {spec!r}: at {img_size}x{img_size} pixels the feature map vanishes at "
                                f"layer {i} ({layer.__class__.__name__}); use fewer pooling/strided layers or a "
                                f"larger --img-size")
        return tuple(x.shape[1:])

    # The same interface as timm's models, so transfer learning treats both alike.
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            for segment in self._segments():  # only each segment's input is kept; its inside is recomputed
                x = checkpoint(segment, x, use_reentrant=False)
            return x
        return self.features(x)

    def _segments(self) -> list[nn.Sequential]:
        """The features cut into segments of about sqrt(layers) layers (Chen et al., 2016), each starting at a
        convolution: a segment that started at an in-place ReLU would overwrite the input it keeps."""
        length, starts = math.ceil(math.sqrt(len(self.features))), [0]
        for i, layer in enumerate(self.features):
            if isinstance(layer, nn.Conv2d) and i - starts[-1] >= length:
                starts.append(i)
        return [self.features[a:b] for a, b in zip(starts, [*starts[1:], len(self.features)])]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch: recompute the features' activations in the backward pass instead of keeping them."""
        self.grad_checkpointing = enable

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # The whole head is called as one module when it runs whole, so hooks and the FLOP counter see its layers
        # under their own names (head.1...), not those of a slice.
        return self.head[:-1](x) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head[-1]

    def group_matcher(self, coarse: bool = False) -> Callable[[str], int]:
        """timm's parameter grouping: a block per convolution (with its batch-norm), then per dense layer."""
        block, ids = 0, {}
        for prefix, layers in (("features", self.features), ("head", self.head)):
            for i, layer in enumerate(layers):
                block += isinstance(layer, (nn.Conv2d, nn.Linear))
                ids[f"{prefix}.{i}"] = block
        return lambda name: ids[name.rsplit(".", 1)[0]]
