"""How close the training-step memory estimate (imgclf/models/memory.py, computed on the meta device before anything
is allocated) comes to what one real step takes: for each model, input size and batch, a fresh process builds the
model, runs one forward/backward/AdamW step in fp32 on random images, and reports its peak RSS above what it held
before the model was built.

    .venv/bin/python bench/step_memory.py [--cases cnn:28:128,resnet18:128:32,...]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = "cnn:28:128,cnn:96:64,resnet18:128:32,efficientnet_lite0:224:32,googlenet:224:16"


def one_step(name: str, size: int, batch: int) -> None:
    """In this (fresh) process: the estimate, then the measured peak of one real training step, as JSON."""
    sys.path.insert(0, str(ROOT))
    import torch

    from imgclf.models import create_model
    from imgclf.models.memory import step_memory

    torch.set_num_threads(1)
    need = step_memory(name, 10, 3, size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model = create_model(name, 10, 3, size).train()
    optimizer = torch.optim.AdamW(model.parameters())
    out = model(torch.randn(batch, 3, size, size))
    loss = sum(torch.nn.functional.cross_entropy(o, torch.zeros(batch, dtype=torch.long))
               for o in (out if isinstance(out, tuple) else (out,)))
    loss.backward()
    optimizer.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"estimate": need.total(batch), "measured": peak - before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=CASES, help="MODEL:SIZE:BATCH, comma-separated")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        name, size, batch = args.one.rsplit(":", 2)
        one_step(name, int(size), int(batch))
        return
    print("| model | input | batch | estimate | measured (peak RSS of one step) | estimate / measured |")
    print("|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        name, size, batch = case.rsplit(":", 2)
        done = subprocess.run([sys.executable, __file__, "--one", case], capture_output=True, text=True, check=True)
        got = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {name} | {size}x{size} | {batch} | {got['estimate'] / 1e6:,.0f} MB | {got['measured'] / 1e6:,.0f} MB"
              f" | {got['estimate'] / got['measured']:.2f} |")


if __name__ == "__main__":
    main()
