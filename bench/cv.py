"""k-fold cross-validation (issue 14): ``imgclf cv fashion-mnist-sample --folds 5``, the default CNN; each fold's
accuracy, their mean and standard deviation, and the test accuracy of the folds' ensemble against a single fold's.

    .venv/bin/python bench/cv.py [--folds 5] [--epochs 15]
"""
from __future__ import annotations

import argparse
import json

from predict_bulk import ROOT, bench_folder, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--folder", default="bench-runs/cv")
    args = parser.parse_args()
    folder = bench_folder(args.folder)
    seconds, _ = run(ROOT, ["cv", "fashion-mnist-sample", "--folds", str(args.folds), "--epochs", str(args.epochs),
                            "--no-plots", "--quiet", "--project", str(folder / "runs"), "--name", "sample",
                            "--exist-ok"], folder)
    print((folder / "runs" / "sample" / "summary.txt").read_text())
    summary = json.loads((folder / "runs" / "sample" / "summary.json").read_text())
    test = summary["test"]
    print(f"test accuracy, {test['images']} images: ensemble {test['ensemble']:.2%} vs single fold "
          f"{test['mean_fold']:.2%} on average (folds: {', '.join(f'{a:.2%}' for a in test['fold_accuracies'])}); "
          f"{seconds:.0f} s in all")


if __name__ == "__main__":
    main()
