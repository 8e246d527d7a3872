"""Peak memory of ``imgclf train DIR --img-size 224 --epochs 1`` as the data set grows: how many bytes each photo
costs, this checkout vs another commit, in one run.

    .venv/bin/python bench/memory.py [--sizes 1000,2000,4000] [--baseline e88814d] [--folder bench-runs/memory]

The photos are bench/predict_bulk.py's synthetic 512x384 JPEGs, in 4 class folders. A decoded 224 px RGB image is
147 KB, so a store that holds the decoded images once grows by about that per photo; the growth is the slope of
peak RSS (the largest single process, from ``wait4``) between the sizes.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from predict_bulk import make_photos

ROOT = Path(__file__).resolve().parent.parent


def peak_rss(tree: Path, args: list[str], cwd: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of ``python -m imgclf ARGS`` with imgclf imported from ``tree``."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "imgclf", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=os.environ | {"PYTHONPATH": str(tree)})
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"imgclf {' '.join(args)} failed:\n{proc.stderr.read().decode()[-800:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,2000,4000")
    parser.add_argument("--baseline", default="e88814d", help="the commit to compare with ('' for none)")
    parser.add_argument("--folder", default="bench-runs/memory")
    parser.add_argument("--model", default="cnn", help="e.g. cnn, or efficientnet_lite0 for feature extraction")
    args = parser.parse_args()
    folder = Path(args.folder).resolve()
    sizes = [int(n) for n in args.sizes.split(",")]
    make_photos(folder / "photos", max(sizes))
    trees = {"this checkout": ROOT}
    base = folder / "baseline-tree"
    if args.baseline:
        if not base.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.baseline],
                           check=True, capture_output=True)
        trees = {f"baseline ({args.baseline})": base} | trees
    extra = ["--pretrained", "--mode", "feature-extract", "--feature-cache", "memory"] if args.model != "cnn" else []
    results: dict[str, list[tuple[int, float, float]]] = {}
    try:
        for n in sizes:
            data = folder / f"data-{n}"
            if not data.exists():  # the first n photos, n / 4 per class
                for i in range(n):
                    photo = folder / "photos" / f"class{i % 4}" / f"{i:06d}.jpg"
                    (data / photo.parent.name).mkdir(parents=True, exist_ok=True)
                    (data / photo.parent.name / photo.name).symlink_to(photo)
            for label, tree in trees.items():
                mb, seconds = peak_rss(tree, ["train", str(data), "--model", args.model, *extra, "--img-size", "224",
                                              "--epochs", "1", "--quiet", "--no-plots", "--project",
                                              str(folder / "runs")], folder)
                results.setdefault(label, []).append((n, mb, seconds))
                print(f"{label}: {n} photos, peak RSS {mb:,.0f} MB, {seconds:.0f} s", flush=True)
    finally:
        if args.baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    for label, rows in results.items():
        (n0, m0, _), (n1, m1, _) = rows[0], rows[-1]
        print(f"{label}: {(m1 - m0) * 1024 / (n1 - n0):,.0f} KB per photo ({n0} -> {n1} photos)")


if __name__ == "__main__":
    main()
