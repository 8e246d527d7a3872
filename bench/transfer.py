"""Benchmark: efficientnet_lite0 from scratch vs feature extraction vs fine-tuning, on one Fashion-MNIST subset.

Writes a stratified subset of Fashion-MNIST as class folders of PNG files (train/ and test/), then runs the real
`imgclf train` command in a subprocess for each way of training, with the same data, image size and epochs:

    scratch          random weights, every layer trained
    feature-extract  ImageNet backbone frozen, a new head trained on features cached once
    features-off     the same with --feature-cache off: the frozen backbone recomputed every epoch (the baseline)
    fine-tune        a new head for one epoch, then the whole backbone at half the head's learning rate

and prints one table (test accuracy, wall time, seconds per epoch) plus the cached/recomputed epoch ratio.
Usage (from the repository root):

    python bench/transfer.py [--data-root ../shared/data/fashion-mnist] [--train 10000] [--test 2000]
                             [--img-size 64] [--epochs 8] [extra train args]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import train_test_split

MODES = {
    "scratch": ["--mode", "scratch"],
    "feature-extract": ["--pretrained", "--mode", "feature-extract"],
    "features-off": ["--pretrained", "--mode", "feature-extract", "--feature-cache", "off"],
    "fine-tune": ["--pretrained", "--mode", "fine-tune"],
}


def write_subset(data_root: str, out: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """A stratified subset of Fashion-MNIST as train/<class>/*.png and test/<class>/*.png (written once)."""
    from imgclf.data.sources import load_source

    if (out / "done").exists():
        return out
    source = load_source("fashion-mnist", data_root)
    for split, n in (("train", n_train), ("test", n_test)):
        images = source.splits[split]
        index, _ = train_test_split(np.arange(len(images)), train_size=n, stratify=images.labels,
                                    random_state=seed)
        for i in index:
            folder = out / split / source.classes[images.labels[i]].replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images.pixels[i]).save(folder / f"{i:05d}.png")
    (out / "done").write_text("")
    return out


def run_mode(name: str, data: Path, project: Path, args: argparse.Namespace, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "imgclf", "train", str(data), "--model", "efficientnet_lite0",
               "--img-size", str(args.img_size), "--epochs", str(args.epochs), "--project", str(project),
               "--name", name, "--quiet", *MODES[name], *extra]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    # A fresh feature cache per benchmark, so the first epoch really computes the features.
    subprocess.run(command, check=True, env=os.environ | {"IMGCLF_CACHE_DIR": str(project / "cache")})
    wall = time.perf_counter() - started
    run = project / name
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    epochs = [float(r["time"]) + float(r.get("val_time") or 0) for r in rows]
    log = (run / "train.log").read_text()
    features = re.search(r"through the frozen backbone, .* in ([\d.]+) s", log)
    return {
        "test_accuracy": round(json.loads((run / "eval.json").read_text())["accuracy"], 4),
        "wall_s": round(wall, 1),
        "first_epoch_s": round(epochs[0] + (float(features[1]) if features else 0.0), 2),
        "later_epoch_s": round(statistics.median(epochs[1:]), 3),
        "feature_pass_s": float(features[1]) if features else None,
        "epochs": len(rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared/data/fashion-mnist"))
    parser.add_argument("--project", default="bench-runs")
    parser.add_argument("--train", type=int, default=10000, help="training images (10%% of them for validation)")
    parser.add_argument("--test", type=int, default=2000, help="test images")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--modes", default=",".join(MODES), help="which of: " + ", ".join(MODES))
    args, extra = parser.parse_known_args()

    data = write_subset(args.data_root, Path(args.project) / f"fashion-mnist-{args.train}-{args.test}",
                        args.train, args.test)
    project = Path(args.project) / f"transfer-{time.strftime('%Y%m%d-%H%M%S')}"
    started = time.perf_counter()
    results = {name: run_mode(name, data, project, args, extra) for name in args.modes.split(",")}
    summary = {
        "data": f"Fashion-MNIST subset: {args.train} train (10% held out for validation), {args.test} test, "
                f"{args.img_size}x{args.img_size} RGB",
        "epochs": args.epochs, "results": results, "total_wall_s": round(time.perf_counter() - started, 1),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                   f"torch {torch.__version__}",
    }
    if "feature-extract" in results and "features-off" in results:
        summary["cached_epoch_speedup"] = round(results["features-off"]["later_epoch_s"]
                                                / results["feature-extract"]["later_epoch_s"], 1)
    print("\n| mode | test accuracy | wall time (s) | first epoch (s) | later epochs (s) |\n|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['test_accuracy']:.2%} | {r['wall_s']} | {r['first_epoch_s']} | {r['later_epoch_s']} |")
    print(json.dumps(summary, indent=1))
    project.mkdir(parents=True, exist_ok=True)
    (project / "bench.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
