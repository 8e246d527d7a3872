"""The modern recipe on the default CNN (issue 14): full Fashion-MNIST, 20 epochs, today's recipe vs ``--mixup 0.2
--cutmix 1.0`` vs ``--ema``, and test-time augmentation on today's run; test accuracy and wall time in one table.

    .venv/bin/python bench/recipe.py [--data-root ../shared/data/fashion-mnist] [--epochs 20]
"""
from __future__ import annotations

import argparse
import json
import time

from predict_bulk import ROOT, bench_folder, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared/data/fashion-mnist"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--folder", default="bench-runs/recipe")
    args = parser.parse_args()
    folder = bench_folder(args.folder)
    print("| recipe | test accuracy | wall time |")
    print("|---|---|---|")
    for label, extra in (("today's (light augmentation, label smoothing, AdamW one-cycle)", []),
                         ("+ --mixup 0.2 --cutmix 1.0", ["--mixup", "0.2", "--cutmix", "1.0"]),
                         ("+ --ema", ["--ema"])):
        name = "base" if not extra else "-".join(a.strip("-") for a in extra)
        seconds, _ = run(ROOT, ["train", "fashion-mnist", "--data-root", args.data_root, "--epochs", str(args.epochs),
                                "--no-plots", "--quiet", "--project", str(folder / "runs"), "--name", name,
                                "--exist-ok", *extra], folder)
        report = json.loads((folder / "runs" / name / "eval.json").read_text())
        print(f"| {label} | {report['accuracy']:.2%} | {seconds:.0f} s |", flush=True)
    started = time.perf_counter()
    run(ROOT, ["evaluate", str(folder / "runs" / "base"), "--tta", "--output-dir", str(folder / "tta"),
               "--overwrite"], folder)
    report = json.loads((folder / "tta" / "eval.json").read_text())
    print(f"| today's, evaluated with --tta (4 views) | {report['accuracy']:.2%} (without: "
          f"{report['tta']['accuracy_without']:.2%}) | {time.perf_counter() - started:.0f} s (evaluation) |")


if __name__ == "__main__":
    main()
