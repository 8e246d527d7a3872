"""Start-up cost of the commands a user types most, and of their mistakes: wall time and peak memory (RSS) of
whole processes, each also as a ratio to ``python -c "import torch"`` timed in the same run (the machine's load
changes from day to day; the ratio does not).

    .venv/bin/python bench/startup.py [--baseline REV] [--repeat 5]

Trains and exports a tiny cnn run once, then times, in fresh interpreters: ``--help``, ``--version``, ``train
--help``, predicting one image with the run and with its ``.onnx`` file, and the errors that must come before
torch is imported (a mistyped DATA, a missing run), ``viz bottleneck`` (arithmetic), and a built-in dataset that is
neither on disk nor downloadable (the data root is empty; run it offline). With ``--baseline``, the same for
another commit of the repository (checked out in a temporary git worktree), in the same run so the figures compare.
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


def measure(tree: Path, args: list[str], cwd: Path, exit_code: int = 0) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of ``python -m imgclf ARGS`` importing imgclf from ``tree`` (``args`` starting
    with ``-c``: that Python code instead), which must exit with ``exit_code``."""
    env = os.environ | {"PYTHONPATH": str(tree)}
    command = [sys.executable, *args] if args[0] == "-c" else [sys.executable, "-m", "imgclf", *args]
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != exit_code:
        raise SystemExit(f"{tree}: {' '.join(args)} exited {os.waitstatus_to_exitcode(status)}, not {exit_code}: "
                         f"{proc.stderr.read().decode()[-500:]}")
    return seconds, usage.ru_maxrss / 1024


def make_tiny_onnx(work: Path, tree: Path) -> None:
    """WORK/tiny.onnx, a tiny run trained by ``tree``'s code and exported, and WORK/data/a/0.png to predict. Run in a
    child process (``--make``): a child forked from a parent that holds torch would count the parent's memory in
    its peak RSS."""
    sys.path.insert(0, str(tree))
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
    parser.add_argument("--make", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        make_tiny_onnx(Path(args.make[0]), Path(args.make[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        trees = {"this checkout": ROOT}
        if args.baseline:
            base = top / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.baseline],
                           check=True, capture_output=True)
            trees = {f"baseline ({args.baseline})": base} | trees
        results: dict[str, dict[str, tuple[float, float]]] = {}
        try:
            for label, tree in trees.items():
                work = top / f"work-{list(trees).index(label)}"
                work.mkdir()
                subprocess.run([sys.executable, __file__, "--make", str(work), str(tree)], check=True)
                for name, (argv, code) in commands_for(work).items():
                    runs = [measure(tree, argv, work, code) for _ in range(args.repeat)]
                    results.setdefault(name, {})[label] = (statistics.median(r[0] for r in runs),
                                                           max(r[1] for r in runs))
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
                shutil.rmtree(base, ignore_errors=True)
    report(results, list(trees), args.repeat)


def commands_for(work: Path) -> dict[str, tuple[list[str], int]]:
    """The commands timed, each with the exit code it must end with, on ``work``'s tiny run."""
    onnx, image = work / "tiny.onnx", work / "data" / "a" / "0.png"
    (work / "empty").mkdir(exist_ok=True)
    return {"python -c 'import torch' (the unit)": (["-c", "import torch"], 0),
            "imgclf --help": (["--help"], 0), "imgclf --version": (["--version"], 0),
            "imgclf train --help": (["train", "--help"], 0),
            "imgclf predict model.onnx IMAGE": (["predict", str(onnx), str(image)], 0),
            "imgclf predict RUN IMAGE (cnn)": (["predict", str(work / "runs" / "tiny"), str(image)], 0),
            "imgclf train data/fod (a typo)": (["train", str(work / "dat")], 2),
            "imgclf predict runs/nothere IMAGE": (["predict", str(work / "runs" / "nothere"), str(image)], 2),
            "imgclf viz bottleneck": (["viz", "bottleneck"], 0),
            "imgclf train fashion-mnist, offline, not on disk": (
                ["train", "fashion-mnist", "--data-root", str(work / "empty")], 2)}


def report(results: dict[str, dict[str, tuple[float, float]]], labels: list[str], repeat: int) -> None:
    """The table: each command's median time, its ratio to `import torch`'s, and its peak RSS, per tree."""
    unit = {label: results[next(iter(results))][label][0] for label in labels}
    print(f"median of {repeat} runs; peak RSS of the process; x torch: the time over `import torch`'s")
    print("| command | " + " | ".join(f"{label}: s, x torch, MB" for label in labels) +
          (" | speed-up |" if len(labels) == 2 else " |"))
    print("|---" * (len(labels) + 1 + (len(labels) == 2)) + "|")
    for name, by in results.items():
        cells = " | ".join(f"{by[label][0]:.2f} s, {by[label][0] / unit[label]:.2f}x, {by[label][1]:,.0f} MB"
                           for label in labels)
        ratio = f" | {by[labels[0]][0] / by[labels[1]][0]:.1f}x |" if len(labels) == 2 else " |"
        print(f"| `{name}` | {cells}{ratio}")


if __name__ == "__main__":
    main()
