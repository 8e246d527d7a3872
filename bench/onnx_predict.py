"""ONNX prediction at the runtime's own speed: ``imgclf predict model.onnx DIR --output preds.csv`` against the plain
onnxruntime loop of ``bench/onnx_plain.py`` (same preprocessing, one thread, batches of 64), in one run.

    .venv/bin/python bench/onnx_predict.py [--files 400] [--repeats 3]

The two run at the same time, each pinned to its own core (taskset), so both see the same load; then the cores are
swapped, ``--repeats`` times each way. Bulk: images/s over ``--files`` synthetic 512x384 JPEG photos (bench/predict_bulk.py makes them, and its
96 px cnn run is the model, exported with imgclf's defaults). One image: seconds from the command to the answer,
and the peak RSS, of ``imgclf predict model.onnx photo.jpg`` and of the plain script on that one photo.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from predict_bulk import ROOT, bench_folder, make_photos, run

PLAIN = Path(__file__).resolve().parent / "onnx_plain.py"


def pair(commands: dict[str, list[str]], cores: list[int]) -> dict[str, tuple[float, float, float]]:
    """Start each command pinned to its core, all at once; (seconds, peak RSS in MB, CPU seconds) per name. The CPU
    seconds are the steadier figure on a shared machine: another process on the core lengthens the wall time only."""
    procs, started = {}, time.perf_counter()
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    for (name, cmd), core in zip(commands.items(), cores):
        procs[name] = subprocess.Popen(["taskset", "-c", str(core), *cmd], cwd=ROOT, env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = {}
    for _ in procs:
        pid, status, usage = os.wait4(-1, 0)
        name = next(n for n, p in procs.items() if p.pid == pid)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{name} failed:\n{procs[name].stderr.read().decode()[-800:]}")
        out[name] = (time.perf_counter() - started, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)
    return out


def contenders(model: Path, target: Path, folder: Path) -> dict[str, list[str]]:
    (folder / "imgclf.csv").unlink(missing_ok=True)
    return {"imgclf": [sys.executable, "-m", "imgclf", "predict", str(model), str(target), "--output",
                       str(folder / "imgclf.csv")],
            "plain": [sys.executable, str(PLAIN), str(model), str(target), str(folder / "plain.csv")]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3, help="runs per core arrangement")
    parser.add_argument("--folder", default="bench-runs/onnx")
    args = parser.parse_args()
    folder = bench_folder(args.folder)
    photos = folder / "photos"
    make_photos(photos, args.files)
    if not (folder / "runs" / "m" / "best.safetensors").exists():
        run(ROOT, ["train", str(photos), "--epochs", "1", "--quiet", "--no-plots", "--name", "m", "--exist-ok",
                   "--project", str(folder / "runs"), "--limit", "200"], folder)
    model = folder / "runs" / "m" / "model.onnx"
    run(ROOT, ["export", str(folder / "runs" / "m"), "--output", str(model)], folder)  # the defaults of today
    print(f"{args.files} photos; {model}")
    ratios, cpu_ratios = [], []
    for i in range(args.repeats * 2):
        cores = [i % 2, 1 - i % 2]
        times = pair(contenders(model, photos, folder), cores)
        (ours, rss, ours_cpu), (plain, plain_rss, plain_cpu) = times["imgclf"], times["plain"]
        ratios.append(plain / ours)
        cpu_ratios.append(plain_cpu / ours_cpu)
        print(f"bulk, imgclf on core {cores[0]}: imgclf {args.files / ours:.1f} images/s ({ours_cpu:.2f} CPU s, peak "
              f"{rss:.0f} MB), plain {args.files / plain:.1f} images/s ({plain_cpu:.2f} CPU s, peak {plain_rss:.0f} "
              f"MB): {plain / ours:.2f}x wall, {plain_cpu / ours_cpu:.2f}x CPU", flush=True)
    print(f"bulk: imgclf at {statistics.median(ratios):.2f}x the plain loop's images/s by wall time, "
          f"{statistics.median(cpu_ratios):.2f}x by CPU time (medians of {len(ratios)}, cores swapped each time)")
    one = next(photos.rglob("*.jpg"))
    seconds: dict[str, list[float]] = {"imgclf": [], "plain": []}
    peak: dict[str, float] = {}
    for i in range(args.repeats * 2):
        for name, (s, rss, _) in pair(contenders(model, one, folder), [i % 2, 1 - i % 2]).items():
            seconds[name].append(s)
            peak[name] = max(peak.get(name, 0.0), rss)
    ours, plain = statistics.median(seconds["imgclf"]), statistics.median(seconds["plain"])
    print(f"one image: imgclf {ours:.2f} s (peak {peak['imgclf']:.0f} MB), plain {plain:.2f} s (peak "
          f"{peak['plain']:.0f} MB): {ours / plain:.2f}x the plain script's start-up, model load and answer")


if __name__ == "__main__":
    main()
