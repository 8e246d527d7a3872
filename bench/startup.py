"""Start-up cost of the commands a user types most: wall time and peak memory (RSS) of whole processes.

    .venv/bin/python bench/startup.py [--baseline REV] [--repeat 5]

Trains and exports a tiny run once, then times ``imgclf --help``, ``imgclf --version``, ``imgclf train --help`` and
``imgclf predict model.onnx IMAGE`` in fresh interpreters, for this checkout and, with ``--baseline``, for another
commit of the repository (checked out in a temporary git worktree), in the same run so the figures compare.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(tree: Path, args: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of ``python -m imgclf ARGS`` importing imgclf from ``tree``."""
    env = os.environ | {"PYTHONPATH": str(tree)}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "imgclf", *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{tree}: imgclf {' '.join(args)} failed: {proc.stderr.read().decode()[-500:]}")
    return seconds, usage.ru_maxrss / 1024


def make_tiny_onnx(work: Path) -> None:
    """WORK/tiny.onnx, a tiny trained run exported, and WORK/data/a/0.png to predict. Run in a child process
    (``--make``): a child forked from a parent that holds torch would count the parent's memory in its peak RSS."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from PIL import Image

    import imgclf
    from imgclf.deploy.export import export

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (work / "data" / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(work / "data" / name / f"{i}.png")
    clf = imgclf.train(str(work / "data"), model="cnn:8-m-fc8", epochs=1, quiet=True, plots=False,
                       project=str(work / "runs"), name="tiny", workers=0)
    export(clf, "onnx", work / "tiny.onnx", check=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=None, help="a commit to compare with, e.g. HEAD~1")
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (the median is reported)")
    parser.add_argument("--make", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        make_tiny_onnx(Path(args.make))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, __file__, "--make", str(work)], check=True)
        onnx, image = work / "tiny.onnx", work / "data" / "a" / "0.png"
        trees = {"this checkout": ROOT}
        if args.baseline:
            base = work / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.baseline],
                           check=True, capture_output=True)
            trees = {f"baseline ({args.baseline})": base} | trees
        commands = {"imgclf --help": ["--help"], "imgclf --version": ["--version"],
                    "imgclf train --help": ["train", "--help"],
                    "imgclf predict model.onnx IMAGE": ["predict", str(onnx), str(image)]}
        results: dict[str, dict[str, tuple[float, float]]] = {}
        try:
            for label, tree in trees.items():
                for name, argv in commands.items():
                    runs = [measure(tree, argv, work) for _ in range(args.repeat)]
                    results.setdefault(name, {})[label] = (statistics.median(r[0] for r in runs),
                                                           max(r[1] for r in runs))
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
                shutil.rmtree(base, ignore_errors=True)
    labels = list(trees)
    print(f"median of {args.repeat} runs; peak RSS of the process")
    print("| command | " + " | ".join(f"{label}: s, MB" for label in labels) +
          (" | speed-up |" if len(labels) == 2 else " |"))
    print("|---" * (len(labels) + 1 + (len(labels) == 2)) + "|")
    for name, by in results.items():
        cells = " | ".join(f"{by[label][0]:.2f} s, {by[label][1]:,.0f} MB" for label in labels)
        ratio = f" | {by[labels[0]][0] / by[labels[1]][0]:.1f}x |" if len(labels) == 2 else " |"
        print(f"| `{name}` | {cells}{ratio}")


if __name__ == "__main__":
    main()
