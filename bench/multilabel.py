"""Multi-label (issue 14): Fashion-MNIST mosaics, each 56x56 image a 2x2 grid holding 1 to 4 random items in random
cells (the empty cells black), its labels the item classes present. 20,000 training and 4,000 test mosaics, made
from the training and the test images respectively. The default CNN trained the same number of epochs:

- multi-label (``imgclf train mosaics.csv``: sigmoid per label, BCE, thresholds tuned on validation);
- the naive baseline: a plain multi-class model trained on the same images with one of their items as the label
  (what forcing the data into one label per image gives), scored on the same test labels by its softmax
  probabilities (mAP) and by answering its top 2 (about the mean number of labels), or, as an upper bound no
  top-k user has, its top k with k the image's true number of labels.

    .venv/bin/python bench/multilabel.py [--data-root ../shared/data/fashion-mnist] [--epochs 6]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from predict_bulk import ROOT, bench_folder, run


def mosaics(pixels: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, list[list[int]]]:
    """``n`` 56x56 mosaics of 1-4 items drawn from ``pixels`` (28x28), and the classes each one shows."""
    out = np.zeros((n, 56, 56), dtype=np.uint8)
    shown = []
    for i in range(n):
        cells = rng.choice(4, rng.integers(1, 5), replace=False)
        items = rng.choice(len(pixels), len(cells), replace=False)
        for cell, item in zip(cells, items):
            r, c = divmod(int(cell), 2)
            out[i, 28 * r:28 * r + 28, 28 * c:28 * c + 28] = pixels[item]
        shown.append(labels[items].tolist())
    return out, shown


def write_data(folder: Path, data_root: str, n_train: int, n_test: int) -> tuple[Path, Path]:
    """mosaics.csv (path,labels,split) and naive.csv (path,label,split: one random item's class)."""
    sys.path.insert(0, str(ROOT))
    from imgclf.data.builtin import load_builtin

    source = load_builtin("fashion-mnist", data_root)
    classes = source.classes
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows, naive = ["path,labels,split"], ["path,label,split"]
    for split, n, part in (("train", n_train, source.splits["train"]), ("test", n_test, source.splits["test"])):
        images, shown = mosaics(part.pixels, part.labels, n, rng)
        for i, (image, items) in enumerate(zip(images, shown)):
            name = f"images/{split}{i:05d}.png"
            Image.fromarray(image).save(folder / name)
            present = sorted(set(items))
            rows.append(f"{name},{'|'.join(classes[c] for c in present)},{split}")
            naive.append(f"{name},{classes[items[rng.integers(len(items))]]},{split}")
    (folder / "mosaics.csv").write_text("\n".join(rows) + "\n")
    (folder / "naive.csv").write_text("\n".join(naive) + "\n")
    return folder / "mosaics.csv", folder / "naive.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared/data/fashion-mnist"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--test", type=int, default=4000)
    parser.add_argument("--folder", default="bench-runs/multilabel")
    args = parser.parse_args()
    folder = bench_folder(args.folder)
    data, naive = folder / "mosaics.csv", folder / "naive.csv"
    if not data.exists():
        data, naive = write_data(folder, args.data_root, args.train, args.test)
    common = ["--epochs", str(args.epochs), "--no-plots", "--quiet", "--project", str(folder / "runs"), "--exist-ok"]
    ml_seconds, ml_peak = run(ROOT, ["train", str(data), "--name", "multilabel", *common], folder)
    mc_seconds, mc_peak = run(ROOT, ["train", str(naive), "--name", "naive", *common], folder)

    sys.path.insert(0, str(ROOT))
    import imgclf
    from imgclf.metrics.multilabel import MultiLabelEvaluation

    ml = json.loads((folder / "runs" / "multilabel" / "eval.json").read_text())
    clf = imgclf.load(folder / "runs" / "naive", device="cpu")
    multi = imgclf.load(folder / "runs" / "multilabel", device="cpu")
    images, _ = multi.eval_images(str(data), split="test")  # the test mosaics with all their labels
    truth = images.y.numpy().astype(np.uint8)
    order = [clf.classes.index(c) for c in multi.classes]  # the naive model's outputs in the labels' order
    probs = clf.predict_proba(images.x).numpy()[:, order]

    def top_k(ks: np.ndarray) -> MultiLabelEvaluation:
        rank = np.argsort(-probs, axis=1, kind="stable").argsort(1)  # 0 for the most likely class
        decided = (rank < ks[:, None]).astype(np.float32)
        return MultiLabelEvaluation(multi.classes, truth, decided, np.full(len(multi.classes), 0.5))

    soft = MultiLabelEvaluation(multi.classes, truth, probs, np.full(len(multi.classes), 0.5))
    top2, oracle = top_k(np.full(len(truth), 2)), top_k(truth.sum(1))
    print(f"{args.train:,} training / {args.test:,} test mosaics at 56 px, {truth.sum(1).mean():.2f} labels per "
          f"test image; default cnn, {args.epochs} epoch(s) each (a tenth of train held out for validation)")
    print("| model | decision | test mAP | macro F1 | micro F1 | exact match | train wall time | peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| multi-label (sigmoid, BCE) | per-label thresholds tuned on validation | {ml['map']:.4f} | "
          f"{ml['macro_f1']:.4f} | {ml['micro_f1']:.4f} | {ml['exact_match']:.2%} | {ml_seconds:.0f} s | "
          f"{ml_peak:,.0f} MB |")
    for name, ev in (("top 2", top2), ("top k, k = true label count (oracle)", oracle)):
        print(f"| multi-class, one item's label (naive) | {name} | {soft.mean_average_precision:.4f} | "
              f"{ev.macro_f1:.4f} | {ev.micro_f1:.4f} | {ev.exact_match:.2%} | {mc_seconds:.0f} s | "
              f"{mc_peak:,.0f} MB |")


if __name__ == "__main__":
    main()
