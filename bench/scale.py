"""Peak memory of one training epoch as the data set grows, with the decoded images in a disk store (issue 13).

    .venv/bin/python bench/scale.py [--sizes 2000,8000,32000] [--models cnn,efficientnet_lite0]
                                    [--folder bench-runs/scale] [--speed 2000]

For each size N: the first N of bench/predict_bulk.py's synthetic 512x384 JPEG photos (4 class folders), then
``imgclf train DIR --img-size 224 --epochs 1 --cache disk`` from scratch (``--model cnn``) and as feature extraction
(``--model efficientnet_lite0 --pretrained --mode feature-extract``), each a fresh process: its peak RSS (the largest
single process, from ``wait4``), the disk store's size and build time (from the run's log), and the growth of peak
RSS per photo between the smallest and the largest N. ``--speed N`` then trains the scratch model for one more epoch
on N photos from RAM and from the (warm) disk store and compares their training images/s.
"""
from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

from predict_bulk import bench_folder, make_photos, run

MODELS = {"cnn": [], "efficientnet_lite0": ["--pretrained", "--mode", "feature-extract", "--feature-cache", "memory"]}


def subset(folder: Path, n: int) -> Path:
    """A folder of the first ``n`` photos (symbolic links), ``n / 4`` per class."""
    data = folder / f"data-{n}"
    if not data.exists():
        for i in range(n):
            photo = folder / "photos" / f"class{i % 4}" / f"{i:06d}.jpg"
            (data / photo.parent.name).mkdir(parents=True, exist_ok=True)
            (data / photo.parent.name / photo.name).symlink_to(photo)
    return data


def train(folder: Path, data: Path, name: str, model: str, cache: str) -> dict[str, float | str]:
    args = ["train", str(data), "--model", model, *MODELS[model], "--img-size", "224", "--epochs", "1",
            "--cache", cache, "--quiet", "--no-plots", "--project", str(folder / "runs"), "--name", name,
            "--exist-ok"]
    seconds, mb = run(Path(__file__).resolve().parents[1], args, folder)
    log = (folder / "runs" / name / "train.log").read_text()
    built = re.search(r"train: decoded images in disk store \S+ \(.*?; ([\d,]+) MB built in ([\d.]+) s\)", log)
    with (folder / "runs" / name / "metrics.csv").open() as f:
        epoch = list(csv.DictReader(f))[-1]
    return {"seconds": seconds, "peak_mb": mb, "images_per_s": float(epoch["images_per_s"]),
            "store": f"{built.group(1)} MB in {built.group(2)} s" if built else "reused"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,8000,32000")
    parser.add_argument("--models", default="cnn,efficientnet_lite0")
    parser.add_argument("--folder", default="bench-runs/scale")
    parser.add_argument("--speed", type=int, default=2000, help="photos for the disk vs RAM speed check (0: none)")
    args = parser.parse_args()
    folder = bench_folder(args.folder)
    sizes = [int(n) for n in args.sizes.split(",")]
    make_photos(folder / "photos", max(sizes + [args.speed]))
    print("| model | photos | peak RSS | disk store (train split) | whole command | train images/s |")
    print("|---|---|---|---|---|---|")
    peaks: dict[str, list[tuple[int, float]]] = {}
    for model in args.models.split(","):
        for n in sizes:
            r = train(folder, subset(folder, n), f"{model}-{n}", model, "disk")
            peaks.setdefault(model, []).append((n, r["peak_mb"]))
            print(f"| {model} | {n:,} | {r['peak_mb']:,.0f} MB | {r['store']} | {r['seconds']:.0f} s | "
                  f"{r['images_per_s']:.1f} |", flush=True)
    for model, rows in peaks.items():
        (n0, m0), (n1, m1) = rows[0], rows[-1]
        print(f"{model}: peak RSS grows by {(m1 - m0) * 1024 / (n1 - n0):,.1f} KB per photo ({n0:,} -> {n1:,} photos)")
    if args.speed:
        data = subset(folder, args.speed)
        train(folder, data, "speed-disk-warmup", "cnn", "disk")  # the store exists and the page cache holds it
        ram = train(folder, data, "speed-ram", "cnn", "ram")
        disk = train(folder, data, "speed-disk", "cnn", "disk")
        print(f"training on {args.speed:,} photos, warm: ram {ram['images_per_s']:.1f} images/s, disk "
              f"{disk['images_per_s']:.1f} images/s (disk/ram {disk['images_per_s'] / ram['images_per_s']:.2f})")


if __name__ == "__main__":
    main()
