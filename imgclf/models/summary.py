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


def _group_of(model: nn.Module, depth: int | None) -> dict[str, str]:
    """Each leaf layer's row: itself, or its block ``depth`` levels down (a wrapper's one child, such as
    torchvision's network inside imgclf's, is not a level)."""
    leaves = [name for name, m in model.named_modules() if name and not list(m.children())]
    if depth is None:
        return {name: name for name in leaves}
    paths = [name.split(".") for name in leaves]
    skip = 0
    while all(len(p) > skip + 1 and p[skip] == paths[0][skip] for p in paths):
        skip += 1
    return {name: ".".join(p[:skip + depth]) for name, p in zip(leaves, paths)}


def summarize(model: nn.Module, input_shape: tuple[int, int, int], depth: int | None = None) -> list[LayerRow]:
    """One row per leaf layer (or per block ``depth`` levels down), in execution order, for one image of
    ``input_shape`` (C, H, W). A block the forward pass does not call as a whole (only its layers, as the cnn's
    head) gets their rows instead.

    Multiply-accumulates come from torch's FLOP counter (MACs = FLOPs / 2).
    """
    group = _group_of(model, depth)
    named = dict(model.named_modules())
    watched = set(group) | set(group.values())
    shapes: dict[str, tuple[int, ...]] = {}
    ran: list[str] = []

    def hook(name: str):
        def record(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if name not in shapes:
                ran.append(name)
            shapes[name] = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
        return record

    handles = [named[name].register_forward_hook(hook(name)) for name in watched]
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
    blocks = set(group.values())
    order = [name for name in ran if name in blocks or (name in group and group[name] not in shapes)]
    flops = counter.get_flop_counts()  # keyed by the module path under the root's class name
    root = type(model).__name__
    rows = []
    for name in order:
        module = named[name]
        params = sum(p.numel() for p in module.parameters())
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
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
              *([f"of which {idle:,} in layers that run in training only (auxiliary classifiers)"]
                if (idle := total - sum(r.params for r in rows)) > 0 else []),
              f"multiply-accumulates per image: {macs:,} ({2 * macs / 1e9:.3f} GFLOPs)"]
    return "\n".join(lines)
