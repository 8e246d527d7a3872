"""Hyperparameter search on the bundled sample (issue 16): the best trial's test accuracy against the defaults', with
the same epochs, and how many trials the pruner stopped early.

    .venv/bin/python bench/tune.py [--trials 20] [--epochs 5] [--space lr,wd,dropout,label_smoothing]
    # imgclf tune fashion-mnist-sample --trials N --epochs E --space S --no-plots --quiet, then
    # imgclf train fashion-mnist-sample --epochs E --no-plots --quiet (the defaults)
"""
from __future__ import annotations

import argparse
import json
import sys

import optuna
from predict_bulk import ROOT, bench_folder, run

sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--space", default="lr,wd,dropout,label_smoothing")
    parser.add_argument("--folder", default="bench-runs/tune")
    args = parser.parse_args()
    folder = bench_folder(args.folder)
    runs = folder / "runs"
    common = ["--epochs", str(args.epochs), "--no-plots", "--quiet", "--project", str(runs)]
    seconds, _ = run(ROOT, ["tune", "fashion-mnist-sample", "--trials", str(args.trials), "--space", args.space,
                            "--name", "search", *common], folder)
    default_seconds, _ = run(ROOT, ["train", "fashion-mnist-sample", "--name", "defaults", "--exist-ok", *common],
                             folder)
    best = json.loads((runs / "search" / "best.json").read_text())
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{runs / 'search' / 'study.db'}")
    states = [t.state.name.lower() for t in study.trials]
    trial_test = json.loads((runs / "search" / f"trial-{best['best_trial']:03d}" / "eval.json").read_text())
    default_test = json.loads((runs / "defaults" / "eval.json").read_text())
    print(f"{args.trials} trials of {args.epochs} epochs over {args.space}: {seconds:.0f} s; "
          f"{states.count('complete')} complete, {states.count('pruned')} pruned, {states.count('fail')} failed")
    print(f"best trial {best['best_trial']}: val_acc {best['value']:.4f}, test accuracy "
          f"{trial_test['accuracy']:.2%}, {best['params']}")
    print(f"defaults ({args.epochs} epochs, {default_seconds:.0f} s): test accuracy {default_test['accuracy']:.2%}")
    print(f"reproduce the best: {best['command']}")


if __name__ == "__main__":
    main()
