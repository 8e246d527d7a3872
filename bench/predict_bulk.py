"""Bulk prediction: ``imgclf predict RUN DIR --output preds.csv`` over many photo-sized JPEG files, this checkout vs
another commit (the serial path it replaced), in one run: images/s and peak RSS of the whole process.

    .venv/bin/python bench/predict_bulk.py [--files 20000] [--baseline e88814d] [--folder bench-runs/bulk] [--onnx]

The photos are synthetic 512x384 JPEGs (smooth colour fields with shapes, about 20 KB each, like photos they take a
real JPEG decode and a resize); a from-scratch CNN run at 96 px is trained on 200 of them first (its accuracy is not
the point). Nothing here imports torch, so the peak RSS measured for each child is its own.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent


def bench_folder(path: str) -> Path:
    """The benchmark's own folder (made if missing), which also holds the decoded-image and feature caches its
    runs make (``$IMGCLF_CACHE_DIR``), so none of them lands in ~/.cache."""
    folder = Path(path).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["IMGCLF_CACHE_DIR"] = str(folder / "cache")
    return folder


def make_photos(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` JPEG files in 4 class folders; kept between runs (made once)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        path = folder / f"class{i % 4}" / f"{i:06d}.jpg"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((512, 384),
                                                                                        Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(small)
        x, y = rng.integers(0, 400), rng.integers(0, 280)
        draw.ellipse((x, y, x + 40 + 20 * (i % 4), y + 80), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        small.save(path, quality=85)


def run(tree: Path, args: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of ``python -m imgclf ARGS`` with imgclf imported from ``tree``."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "imgclf", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=os.environ | {"PYTHONPATH": str(tree)})
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"imgclf {' '.join(args)} failed:\n{proc.stderr.read().decode()[-800:]}")
    # ru_maxrss of wait4 is the largest of the process and its waited-for children (the decode workers): the
    # peak of the biggest single process, not their sum
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def code_trees(folder: Path, baseline: str) -> dict[str, Path]:
    """This checkout and, given a commit, a git worktree of it in ``folder`` (see :func:`remove_baseline`)."""
    base = folder / "baseline-tree"
    if baseline and not base.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), baseline], check=True,
                       capture_output=True)
    return ({f"baseline ({baseline})": base} if baseline else {}) | {"this checkout": ROOT}


def remove_baseline(folder: Path) -> None:
    if (folder / "baseline-tree").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder / "baseline-tree")],
                       check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--baseline", default="e88814d", help="the commit to compare with ('' for none)")
    parser.add_argument("--folder", default="bench-runs/bulk")
    parser.add_argument("--onnx", action="store_true", help="predict with the run exported to ONNX (onnxruntime)")
    args = parser.parse_args()
    folder = Path(args.folder).resolve()
    started = time.perf_counter()
    make_photos(folder / "photos", args.files)
    print(f"{args.files} photos in {folder / 'photos'} ({time.perf_counter() - started:.0f} s to make the missing)")
    train = folder / "train"
    if not train.exists():
        for i in range(200):  # 50 per class
            path = folder / "photos" / f"class{i % 4}" / f"{i:06d}.jpg"
            (train / path.parent.name).mkdir(parents=True, exist_ok=True)
            (train / path.parent.name / path.name).symlink_to(path)
    if not (folder / "runs" / "bulk" / "best.safetensors").exists():
        run(ROOT, ["train", str(train), "--epochs", "1", "--quiet", "--no-plots", "--name", "bulk", "--exist-ok",
                   "--project", str(folder / "runs")], folder)
    model = folder / "runs" / "bulk"
    if args.onnx:
        model = model / "model.onnx"
        if not model.exists():
            run(ROOT, ["export", str(folder / "runs" / "bulk")], folder)
    trees = code_trees(folder, args.baseline)
    results = {}
    try:
        for label, tree in trees.items():
            out = folder / f"preds-{label.split()[0]}.csv"
            out.unlink(missing_ok=True)
            seconds, rss = run(tree, ["predict", str(model), str(folder / "photos"), "--output", str(out)], folder)
            with out.open(newline="") as f:
                rows = sum(1 for _ in csv.reader(f)) - 1
            results[label] = (seconds, rss, rows)
            print(f"{label}: {rows} rows in {seconds:.1f} s = {rows / seconds:.0f} images/s, peak RSS {rss:.0f} MB",
                  flush=True)
    finally:
        remove_baseline(folder)
    if len(results) == 2:
        (old, _, _), (new, _, _) = results.values()
        print(f"speed-up: {old / new:.2f}x")


if __name__ == "__main__":
    main()
