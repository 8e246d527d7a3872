"""Benchmark: `imgclf train fashion-mnist` with its defaults on the full data set (60,000 + 10,000 images).

Runs the real command line in a subprocess and reports test accuracy, wall time, training images/s and the share
of each epoch spent waiting for data. Usage (from the repository root):

    python bench/fashion_mnist.py [--data-root ../shared/data/fashion-mnist] [--project bench-runs] [extra train args]
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared/data/fashion-mnist"))
    parser.add_argument("--project", default="bench-runs")
    parser.add_argument("--name", default=f"fashion-mnist-{time.strftime('%Y%m%d-%H%M%S')}")
    args, extra = parser.parse_known_args()

    command = [sys.executable, "-m", "imgclf", "train", "fashion-mnist", "--data-root", args.data_root,
               "--project", args.project, "--name", args.name, *extra]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    result = subprocess.run(command)
    wall = time.perf_counter() - started
    if result.returncode:
        return result.returncode

    run = Path(args.project) / args.name
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    report = json.loads((run / "eval.json").read_text())
    summary = {
        "test_accuracy": round(report["accuracy"], 4),
        "wall_time_s": round(wall, 1),
        "epochs": len(rows),
        "train_images_per_s": round(statistics.median(float(r["images_per_s"]) for r in rows), 1),
        "epoch_time_s": round(statistics.median(float(r["time"]) for r in rows), 1),
        "data_wait_share": round(statistics.median(float(r["data_wait"]) for r in rows), 4),
        "best_val_acc": round(max(float(r["val_acc"]) for r in rows), 4),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                   f"torch {torch.__version__}",
        "run": str(run),
    }
    print(json.dumps(summary, indent=1))
    (run / "bench.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
