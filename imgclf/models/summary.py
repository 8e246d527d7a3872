"""A model's layers with output shapes, parameters (trainable and frozen) and multiply-accumulates per layer."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class LayerRow:
    name: str
    kind: str
    output: tuple[int, ...]
    params: int
    trainable: int
    macs: int


def summarize(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerRow]:
    """One row per leaf layer, in execution order, for one image of ``input_shape`` (C, H, W).

    Multiply-accumulates come from torch's FLOP counter (MACs = FLOPs / 2).
    """
    leaves = {name: m for name, m in model.named_modules() if not list(m.children())}
    shapes: dict[str, tuple[int, ...]] = {}
    order: list[str] = []

    def hook(name: str):
        def record(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if name not in shapes:
                order.append(name)
            shapes[name] = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in leaves.items()]
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    flops = counter.get_flop_counts()  # keyed by the module path under the root's class name
    root = type(model).__name__
    rows = []
    for name in order:
        module = leaves[name]
        params = sum(p.numel() for p in module.parameters(recurse=False))
        trainable = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
        rows.append(LayerRow(name, type(module).__name__, shapes[name], params, trainable,
                             int(sum(flops.get(f"{root}.{name}", {}).values()) // 2)))
    return rows


def format_summary(rows: list[LayerRow], model: nn.Module, input_shape: tuple[int, int, int]) -> str:
    """The table a learner reads: one line per layer, then the totals."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    macs = sum(r.macs for r in rows)
    width = max([len(r.name) for r in rows] + [5])
    lines = [f"{'layer':<{width}}  {'type':<18} {'output':<16} {'params':>12} {'MACs':>14}"]
    for r in rows:
        frozen = "" if r.params == r.trainable else " (frozen)"
        lines.append(f"{r.name:<{width}}  {r.kind:<18} {'x'.join(map(str, r.output)):<16} {r.params:>12,}"
                     f" {r.macs:>14,}{frozen}")
    lines += ["",
              f"input: {'x'.join(map(str, input_shape))}",
              f"parameters: {total:,} ({trainable:,} trainable, {total - trainable:,} frozen)",
              f"multiply-accumulates per image: {macs:,} ({2 * macs / 1e9:.3f} GFLOPs)"]
    return "\n".join(lines)
