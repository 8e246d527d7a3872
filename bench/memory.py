"""Peak memory of ``imgclf train DIR --img-size 224 --epochs 1`` as the data set grows: how many bytes each photo
costs, this checkout vs another commit, in one run.

    .venv/bin/python bench/memory.py [--sizes 1000,2000,4000] [--baseline e88814d] [--folder bench-runs/memory]
                                     [--model cnn|efficientnet_lite0] [--cache ram|disk]

The photos are bench/predict_bulk.py's synthetic 512x384 JPEGs, in 4 class folders. A decoded 224 px RGB image is
147 KB, so a store that holds the decoded images once grows by about that per photo; the growth is the slope of
peak RSS (the largest single process, from ``wait4``) between the sizes.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from predict_bulk import code_trees, make_photos, remove_baseline, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,2000,4000")
    parser.add_argument("--baseline", default="e88814d", help="the commit to compare with ('' for none)")
    parser.add_argument("--folder", default="bench-runs/memory")
    parser.add_argument("--model", default="cnn", help="e.g. cnn, or efficientnet_lite0 for feature extraction")
    parser.add_argument("--cache", default=None, help="ram or disk for this checkout (the baseline has RAM only)")
    args = parser.parse_args()
    folder = Path(args.folder).resolve()
    os.environ["IMGCLF_CACHE_DIR"] = str(folder / "cache")  # a disk store goes here, not to ~/.cache
    sizes = [int(n) for n in args.sizes.split(",")]
    make_photos(folder / "photos", max(sizes))
    trees = code_trees(folder, args.baseline)
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
                cache = ["--cache", args.cache] if args.cache and tree == trees["this checkout"] else []
                seconds, mb = run(tree, ["train", str(data), "--model", args.model, *extra, *cache, "--img-size",
                                         "224", "--epochs", "1", "--quiet", "--no-plots", "--project",
                                         str(folder / "runs")], folder)
                results.setdefault(label, []).append((n, mb, seconds))
                print(f"{label}: {n} photos, peak RSS {mb:,.0f} MB, {seconds:.0f} s", flush=True)
    finally:
        remove_baseline(folder)
    for label, rows in results.items():
        (n0, m0, _), (n1, m1, _) = rows[0], rows[-1]
        print(f"{label}: {(m1 - m0) * 1024 / (n1 - n0):,.0f} KB per photo ({n0} -> {n1} photos)")


if __name__ == "__main__":
    main()
