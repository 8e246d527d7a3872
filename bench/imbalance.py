"""Imbalanced classes (issue 14): Fashion-MNIST with 5 of its 10 classes cut to 1/20 of their training images, the
default CNN trained the same number of epochs with no weighting, ``--class-weights balanced`` and ``--sampler
balanced``; macro F1 and the cut classes' mean recall on the full, balanced test split, in one table.

    .venv/bin/python bench/imbalance.py [--data-root ../shared/data/fashion-mnist] [--epochs 5]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from predict_bulk import ROOT, bench_folder, run

CUT = [1, 3, 5, 7, 9]  # trouser, dress, sandal, sneaker, ankle boot: 300 training images each instead of 6,000


def write_csv(path: Path, labels: np.ndarray, pixels: np.ndarray) -> None:
    """Kaggle's pixel-CSV layout: label,pixel0,...,pixel783."""
    with path.open("w") as f:
        f.write("label," + ",".join(f"pixel{i}" for i in range(784)) + "\n")
        for y, x in zip(labels, pixels.reshape(len(pixels), -1)):
            f.write(f"{y}," + ",".join(map(str, x)) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared/data/fashion-mnist"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--folder", default="bench-runs/imbalance")
    args = parser.parse_args()
    folder = bench_folder(args.folder)
    data, test_csv = folder / "fashion-cut-train.csv", folder / "fashion-test.csv"
    if not test_csv.exists():
        import sys
        sys.path.insert(0, str(ROOT))
        from imgclf.data.builtin import load_builtin

        source = load_builtin("fashion-mnist", args.data_root)
        train, test = source.splits["train"], source.splits["test"]
        rng = np.random.default_rng(0)
        keep = np.concatenate([np.flatnonzero(train.labels == c) if c not in CUT else
                               rng.choice(np.flatnonzero(train.labels == c), 300, replace=False) for c in range(10)])
        write_csv(data, train.labels[keep], train.pixels[keep])
        write_csv(test_csv, test.labels, test.pixels)
    print(f"train: 5 classes x 6,000 + 5 classes x 300 (ratio 20; a tenth held out for validation); test: the full "
          f"10 x 1,000; {args.epochs} epochs each")
    print("| options | test accuracy | balanced accuracy | macro F1 | recall of the cut classes | wall time |")
    print("|---|---|---|---|---|---|")
    for label, extra in (("none", []), ("--class-weights balanced", ["--class-weights", "balanced"]),
                         ("--sampler balanced", ["--sampler", "balanced"])):
        name = label.replace("--", "").replace(" ", "-")
        seconds, _ = run(ROOT, ["train", str(data), "--epochs", str(args.epochs), "--no-plots", "--quiet",
                                "--project", str(folder / "runs"), "--name", name, "--exist-ok", *extra], folder)
        run(ROOT, ["evaluate", str(folder / "runs" / name), str(test_csv), "--output-dir",
                   str(folder / "runs" / name / "test"), "--overwrite"], folder)
        report = json.loads((folder / "runs" / name / "test" / "eval.json").read_text())
        classes = list(report["per_class"])
        cut_recall = np.mean([report["per_class"][classes[c]]["recall"] for c in CUT])
        print(f"| {label} | {report['accuracy']:.2%} | {report['balanced_accuracy']:.2%} | {report['macro_f1']:.4f} "
              f"| {cut_recall:.2%} | {seconds:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
