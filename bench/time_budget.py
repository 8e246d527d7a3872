"""A time budget on full Fashion-MNIST: ``imgclf train fashion-mnist --time T`` for budgets of 2, 5, 10 and 20
minutes against the default 20-epoch run, in one run of this script: the epochs each budget planned, the test
accuracy, and the wall time from the command to its end against the budget.

    .venv/bin/python bench/time_budget.py [--budgets 2m,5m,10m,20m] [--data-root ../shared/data/fashion-mnist]
        [--recipe "NAME=ARGS"]...

``--recipe`` adds runs with other options under the largest budget (the search for 95% in 20 minutes).
"""
from __future__ import annotations

import argparse
import json
import shlex

import yaml
from predict_bulk import ROOT, bench_folder, run

from imgclf.config import parse_duration


def one(folder, data_root: str, name: str, options: list[str]) -> dict:
    seconds, rss = run(ROOT, ["train", "fashion-mnist", "--data-root", data_root, "--no-plots", "--quiet",
                              "--project", str(folder / "runs"), "--name", name, "--exist-ok", *options], folder)
    config = yaml.safe_load((folder / "runs" / name / "config.yaml").read_text())
    scores = json.loads((folder / "runs" / name / "eval.json").read_text())
    return {"seconds": seconds, "epochs": len((folder / "runs" / name / "metrics.csv").read_text().splitlines()) - 1,
            "planned": config["epochs"], "accuracy": scores["accuracy"], "peak_mb": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="2m,5m,10m,20m")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared/data/fashion-mnist"))
    parser.add_argument("--recipe", action="append", default=[], help="NAME=ARGS, run under the largest budget")
    parser.add_argument("--no-default", action="store_true", help="leave out the default 20-epoch run")
    parser.add_argument("--folder", default="bench-runs/time-budget")
    args = parser.parse_args()
    folder = bench_folder(args.folder)
    budgets = args.budgets.split(",")
    runs = [(f"--time {b}", b, ["--time", b]) for b in budgets]
    runs += [(f"{name} (--time {budgets[-1]})", budgets[-1], ["--time", budgets[-1], *shlex.split(options)])
             for name, _, options in (r.partition("=") for r in args.recipe)]
    if not args.no_default:
        runs.append(("default (20 epochs, no budget)", None, []))
    print("| run | epochs planned / run | test accuracy | wall time | of the budget |")
    print("|---|---|---|---|---|")
    for i, (label, budget, options) in enumerate(runs):
        r = one(folder, args.data_root, f"run{i}", options)
        share = f"{r['seconds'] / parse_duration(budget):.1%}" if budget else ""
        print(f"| {label} | {r['planned']} / {r['epochs']} | {r['accuracy']:.2%} | {r['seconds']:.0f} s | {share} |",
              flush=True)


if __name__ == "__main__":
    main()
