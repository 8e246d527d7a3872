"""The label check against labels corrupted on purpose (issue 26): a stratified Fashion-MNIST subset written as
PNG folders (train/CLASS/N.png, test/CLASS/N.png), its training labels flipped at a known seed, then
``imgclf check DATA --labels`` with its defaults. Per noise kind: precision and recall of the images flagged as
label issues against the known flips; the test accuracy of the default cnn trained on the noisy labels, on the
cleaned ones (through ``--apply``: drop = every flagged image dropped, relabel = every one relabelled with the
suggestion, auto = the check's label_issues.csv applied as it is: sure suggestions taken, the rest dropped) and on
the true labels, each the mean of ``--seeds`` training seeds;
and the check's wall time against one ordinary training run on the same data.

    .venv/bin/python bench/label_noise.py [--data-root ../shared/data/fashion-mnist] [--train 12000]
        [--noise symmetric,pairs] [--rate 0.1] [--seeds 1] [--actions drop,relabel,auto]
        [--suspects docs/fashion-mnist-suspects.png] [--size 96 --train-options "--model efficientnet_lite0 ..."]
        [--check-options "--epochs 15"] [--reuse]

symmetric: each flipped label becomes another class, uniformly; pairs: flips only between the confusable pairs
(Shirt <-> T-shirt/top, Pullover <-> Coat, Sneaker <-> Ankle boot), as many as the symmetric case in all.
``--size`` writes the images enlarged (bicubic) to that side, so that the check takes its path for photos (a
pretrained backbone's cached features, over 64 px); ``--train-options`` are given to every training run.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import shlex
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from predict_bulk import ROOT, bench_folder, run

CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]
PAIRS = {6: 0, 0: 6, 2: 4, 4: 2, 7: 9, 9: 7}


def idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def noisy(y: np.ndarray, kind: str, rate: float, rng: np.random.Generator) -> np.ndarray:
    """``y`` with ``rate`` of its labels flipped (see the module's docstring)."""
    out = y.copy()
    if kind == "symmetric":
        flip = rng.choice(len(y), int(rate * len(y)), replace=False)
        out[flip] = (y[flip] + rng.integers(1, len(CLASSES), len(flip))) % len(CLASSES)
    else:
        paired = np.flatnonzero(np.isin(y, list(PAIRS)))
        flip = rng.choice(paired, int(rate * len(y)), replace=False)
        out[flip] = [PAIRS[c] for c in y[flip]]
    return out


def write_folder(root: Path, x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray, size: int = 28
                 ) -> list[str]:
    """The PNG folders, the images at ``size`` px; returns the training files' paths in the order of ``x``."""
    paths = []
    for split, images, labels in (("train", x, y), ("test", xt, yt)):
        for i, (image, label) in enumerate(zip(images, labels)):
            path = root / split / CLASSES[label] / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            picture = Image.fromarray(image)
            if size != picture.width:
                picture = picture.resize((size, size), Image.Resampling.BICUBIC)
            picture.save(path)
            if split == "train":
                paths.append(str(path))
    return paths


def accuracy(data: Path, folder: Path, name: str, seeds: int, options: list[str], reuse: bool = False
             ) -> tuple[list[float], float]:
    """(test accuracies, seconds of the first run) of the model ``options`` train (the default cnn unless they name
    another) on ``data`` at seeds 0..seeds-1; with ``reuse``, a run of that name that finished is taken as it is."""
    accs, times = [], []
    for seed in range(seeds):
        tag = name if seed == 0 else f"{name}-seed{seed}"
        status = folder / "runs" / tag / "status.json"
        if reuse and status.is_file() and json.loads(status.read_text())["status"] == "finished":
            seconds = json.loads(status.read_text())["wall_s"]
        else:
            seconds, _ = run(ROOT, ["train", str(data), "--no-plots", "--no-report", "--quiet", "--project",
                                    str(folder / "runs"), "--name", tag, "--exist-ok", "--seed", str(seed),
                                    *options], folder)
        with open(folder / "runs" / tag / "eval.json", encoding="utf-8") as f:
            accs.append(json.load(f)["accuracy"])
        times.append(seconds)
    return accs, times[0]


def mean_sd(values: list[float]) -> str:
    sd = f" ± {100 * np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
    return f"{100 * np.mean(values):.2f}%{sd}"


def suspects_picture(issues: Path, out: Path, count: int = 30) -> None:
    """The ``count`` worst suspects of a label check as a grid: each image with its given and suggested label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(issues, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:count]
    fig, axes = plt.subplots(3, 10, figsize=(15, 6.6))
    for ax, row in zip(axes.flat, rows):
        ax.imshow(Image.open(row["path"]), cmap="gray")
        ax.set_title(f"{row['given_label']}\n-> {row['suggested_label']}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("Fashion-MNIST training images: the label check's 30 worst suspects (given -> suggested)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "fashion-mnist"))
    parser.add_argument("--train", type=int, default=12000)
    parser.add_argument("--noise", default="symmetric,pairs")
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=1, help="train each variant at this many seeds, the mean")
    parser.add_argument("--actions", default="drop,relabel,auto")
    parser.add_argument("--folder", default="bench-runs/label-noise")
    parser.add_argument("--size", type=int, default=28, help="the images' side in the written folders")
    parser.add_argument("--train-options", default="", help="imgclf train options of every training run")
    parser.add_argument("--check-options", default="", help="imgclf check options (--epochs 15)")
    parser.add_argument("--reuse", action="store_true", help="take the training runs and checks an earlier bench "
                                                             "finished in --folder as they are (same data only)")
    parser.add_argument("--suspects", default=None, help="also check the published labels and draw their 30 worst "
                                                         "suspects into this PNG (docs/fashion-mnist-suspects.png)")
    args = parser.parse_args()
    folder = bench_folder(args.folder)
    options, check_options = shlex.split(args.train_options), shlex.split(args.check_options)
    root = Path(args.data_root)
    x = idx(root / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    y = idx(root / "train-labels-idx1-ubyte.gz", 8).astype(np.int64)
    xt = idx(root / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    yt = idx(root / "t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
    rng = np.random.default_rng(0)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), args.train // 10, replace=False)
                                   for c in range(10)]))
    x, y = x[keep], y[keep]
    true = folder / "true"
    if not true.exists():
        write_folder(true, x, y, xt, yt, args.size)
    true_accs, true_s = accuracy(true, folder, "true", args.seeds, options, args.reuse)
    true_acc = float(np.mean(true_accs))
    print(f"true labels: test accuracy {mean_sd(true_accs)} ({true_s:.0f} s to train)", flush=True)
    if args.suspects:  # the data set's own doubtful labels: the check on the labels as published
        shutil.rmtree(folder / "runs" / "check-true", ignore_errors=True)
        run(ROOT, ["check", str(true), "--labels", "--project", str(folder / "runs"), "--name", "check-true",
                   "--quiet"], folder)
        suspects_picture(folder / "runs" / "check-true" / "label_issues.csv", Path(args.suspects))
        print(f"the 30 worst suspects of the published labels: {args.suspects}")
    for kind in args.noise.split(","):
        given = noisy(y, kind, args.rate, np.random.default_rng(1))
        data = folder / kind
        paths = write_folder(data, x, given, xt, yt, args.size) if not data.exists() else \
            [str(data / "train" / CLASSES[c] / f"{i:05d}.png") for i, c in enumerate(given)]
        flipped = {p for p, a, b in zip(paths, y, given) if a != b}
        check = folder / "runs" / "-".join(["check", kind, *(o.lstrip("-") for o in check_options)])
        if args.reuse and (check / "label_issues.csv").is_file():
            check_s, peak = None, None  # timed when it ran
        else:
            shutil.rmtree(check, ignore_errors=True)  # a check of an earlier bench
            check_s, peak = run(ROOT, ["check", str(data), "--labels", "--project", str(check.parent), "--name",
                                       check.name, "--quiet", *check_options], folder)
        with open(check / "label_issues.csv", newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["kind"] == "label"]
        flagged = {r["path"] for r in rows}
        hit = len(flagged & flipped)
        precision, recall = hit / max(1, len(flagged)), hit / len(flipped)
        fixed = sum(r["path"] in flipped and r["suggested_label"] == CLASSES[y[paths.index(r["path"])]]
                    for r in rows)
        noisy_accs, noisy_s = accuracy(data, folder, f"noisy-{kind}", args.seeds, options, args.reuse)
        noisy_acc = float(np.mean(noisy_accs))
        results = {}
        for action in args.actions.split(","):
            cleaned = check.name.replace("check-", "clean-", 1) + f"-{action}"  # clean-KIND[-CHECK OPTIONS]-ACTION
            fixes = folder / f"fixes-{cleaned[6:]}.csv"
            if action == "auto":
                fixes = check / "label_issues.csv"
            else:
                with open(fixes, "w", newline="", encoding="utf-8") as f:
                    out = csv.writer(f)
                    out.writerow(["path", "action", "label"])
                    out.writerows([r["path"], action, r["suggested_label"]] for r in rows)
            clean = folder / f"{cleaned}.csv"
            clean.unlink(missing_ok=True)
            run(ROOT, ["check", str(data), "--apply", str(fixes), "--output", str(clean)], folder)
            results[action] = accuracy(clean, folder, cleaned, args.seeds, options)[0]
        cost = noisy_acc - true_acc
        print(f"{kind} noise, {len(flipped)} of {len(y)} training labels flipped ({len(flipped) / len(y):.1%}):\n"
              f"  flagged {len(flagged)}: precision {precision:.3f}, recall {recall:.3f}; the suggestion is the "
              f"true label for {fixed} of the {hit} flips found\n"
              f"  test accuracy ({args.seeds} seed(s)): noisy {mean_sd(noisy_accs)}, "
              + ", ".join(f"{a} {mean_sd(v)}" for a, v in results.items()) + f", true labels {mean_sd(true_accs)}; "
              "recovered " + ", ".join(f"{a} {(np.mean(v) - noisy_acc) / -cost:.0%}" if cost < 0 else f"{a} n/a"
                                       for a, v in results.items()) + " of the noise's cost\n"
              + (f"  the check took {check_s:.0f} s (peak RSS {peak:.0f} MB), one training run {noisy_s:.0f} s: "
                 f"{check_s / noisy_s:.1f}x" if check_s is not None else "  the check was reused (timed when it ran)"))


if __name__ == "__main__":
    main()
