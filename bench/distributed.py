"""One process vs several on the same job (issue 13): the bundled Fashion-MNIST sample, the default CNN, the same
global batch, epochs and seed; test accuracy and wall time of each, in one run.

    .venv/bin/python bench/distributed.py [--devices 2] [--epochs 15] [--folder bench-runs/distributed]

On a CPU the processes use gloo and share its cores: on 2 cores two processes are not faster than one (each gets
one core, and they exchange gradients every step). Where GPUs are present ``--devices`` puts one process on each.
"""
from __future__ import annotations

import argparse
import json

from predict_bulk import ROOT, bench_folder, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--folder", default="bench-runs/distributed")
    args = parser.parse_args()
    folder = bench_folder(args.folder)
    print("| processes | test accuracy | best val_acc | wall time, whole command | peak RSS (largest process) |")
    print("|---|---|---|---|---|")
    for n in (1, args.devices):
        name = f"p{n}"
        seconds, mb = run(ROOT, ["train", "fashion-mnist-sample", "--epochs", str(args.epochs), "--devices", str(n),
                                 "--no-plots", "--quiet", "--project", str(folder / "runs"), "--name", name,
                                 "--exist-ok"], folder)
        result = json.loads((folder / "runs" / name / "eval.json").read_text())
        rows = (folder / "runs" / name / "metrics.csv").read_text().splitlines()
        header = rows[0].split(",")
        best = max(float(r.split(",")[header.index("val_acc")]) for r in rows[1:])
        print(f"| {n} | {result['accuracy']:.2%} | {best:.4f} | {seconds:.0f} s | {mb:,.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
