"""bf16 autocast against fp32 on this CPU: the training step (forward, backward, AdamW) of the default cnn on
Fashion-MNIST-sized batches and of efficientnet_lite0 on photos, the two precisions interleaved in one process.

    .venv/bin/python bench/precision.py [--threads 2]

``--precision auto`` takes bf16 on a CPU only where it is the faster (imgclf/device.py, ``fast_bf16``; with AVX-512
BF16 and no AMX a long run measures it, imgclf/training/precision.py); this is the measurement those rules rest on.
The CPU's flags are printed with the figures.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from imgclf.models import create_model

CASES = (("cnn", 1, 28, 128, 20), ("efficientnet_lite0", 3, 160, 32, 3))


def step_ms(model: str, chans: int, size: int, batch: int, steps: int, channels_last: bool) -> dict[str, float]:
    """Median milliseconds per training step in bf16 autocast and in fp32, rounds of each taken in turn."""
    torch.manual_seed(0)
    net = create_model(model, 10, chans, size)
    x, y = torch.randn(batch, chans, size, size), torch.randint(0, 10, (batch,))
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)

    def step(dtype: torch.dtype | None) -> None:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    kinds = {"bf16": torch.bfloat16, "fp32": None}
    for dtype in kinds.values():  # the first steps pick and prepare their kernels
        for _ in range(2):
            step(dtype)
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(5):
        for name, dtype in kinds.items():
            started = time.perf_counter()
            for _ in range(steps):
                step(dtype)
            times[name].append((time.perf_counter() - started) / steps * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s); oneDNN bf16 {bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}, "
          f"AVX-512 BF16 {torch.cpu._is_avx512_bf16_supported()}, AMX {torch.cpu._is_amx_tile_supported()}\n")
    print("| model | batch | memory format | bf16 step | fp32 step | bf16 speed / fp32 |")
    print("|---|---|---|---|---|---|")
    for model, chans, size, batch, steps in CASES:
        for channels_last in (False, True):
            ms = step_ms(model, chans, size, batch, steps, channels_last)
            print(f"| {model} at {size} px | {batch} | {'channels-last' if channels_last else 'NCHW'} | "
                  f"{ms['bf16']:.0f} ms | {ms['fp32']:.0f} ms | {ms['fp32'] / ms['bf16']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
