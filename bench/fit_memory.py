"""Fine-tuning photos on a laptop: ``imgclf train PHOTOS --model efficientnet_lite0 --pretrained --mode fine-tune
--img-size 224`` in fp32 with the default batch, on this checkout and on a commit from before ``--batch-size auto``, inside a
cgroup memory limit like a laptop's (8 GB by default): peak RSS, whether it finished, and its validation accuracy.

    sudo .venv/bin/python bench/fit_memory.py [--limit-gb 8] [--photos 400] [--epochs 3] [--baseline b1e17b7]

Each run is also made once without the limit, for the accuracy the limit costs (none, where the effective batch is
kept). The photos are bench/predict_bulk.py's synthetic 512x384 JPEGs, four classes. Needs root for the cgroup
(cgroup v1's memory controller or v2's memory.max).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from predict_bulk import bench_folder, code_trees, make_photos, remove_baseline

GROUP_V1 = Path("/sys/fs/cgroup/memory/imgclf-bench")
GROUP_V2 = Path("/sys/fs/cgroup/imgclf-bench")


def make_group(limit: int) -> Path:
    """A cgroup limited to ``limit`` bytes; the file a process writes its PID to, to join it."""
    if Path("/sys/fs/cgroup/memory").is_dir():
        GROUP_V1.mkdir(exist_ok=True)
        (GROUP_V1 / "memory.limit_in_bytes").write_text(str(limit))
        return GROUP_V1 / "cgroup.procs"
    GROUP_V2.mkdir(exist_ok=True)
    (GROUP_V2 / "memory.max").write_text(str(limit))
    return GROUP_V2 / "cgroup.procs"


def train(tree: Path, photos: Path, project: Path, name: str, epochs: int, precision: str, procs: Path | None
          ) -> dict:
    """One fine-tune run, in the cgroup when ``procs`` is given: seconds, peak RSS (MB), exit code, accuracy."""
    cmd = [sys.executable, "-m", "imgclf", "train", str(photos), "--model", "efficientnet_lite0", "--pretrained",
           "--mode", "fine-tune", "--img-size", "224", "--precision", precision, "--epochs", str(epochs), "--project", str(project),
           "--name", name, "--exist-ok", "--no-plots", "--quiet"]
    join = f"echo $$ > {procs} && " if procs else ""
    started = time.perf_counter()
    proc = subprocess.Popen(["sh", "-c", join + 'exec "$@"', "sh", *cmd], cwd=project.parent,
                            env=os.environ | {"PYTHONPATH": str(tree)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    result = {"seconds": round(time.perf_counter() - started), "peak_mb": round(usage.ru_maxrss / 1024), "exit": code}
    scores = project / name / "eval.json"
    if code == 0 and scores.exists():
        result["val_accuracy"] = json.loads(scores.read_text())["accuracy"]
    config = project / name / "config.yaml"
    if config.exists():
        saved = yaml.safe_load(config.read_text())
        result |= {"batch_size": saved["batch_size"], "accumulate": saved["accumulate"],
                   "plan": saved.get("batch_plan")}
    if code != 0:
        result["error"] = proc.stderr.read().decode(errors="replace").strip().splitlines()[-1:] or ["killed"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit-gb", type=float, default=8.0)
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--precision", default="fp32", help="fp32: as on a CPU without native bf16 (most laptops)")
    parser.add_argument("--baseline", default="b1e17b7", help="a commit from before --batch-size auto")
    parser.add_argument("--folder", default="bench-runs/fit-memory")
    args = parser.parse_args()
    folder = bench_folder(args.folder)
    photos = folder / "photos"
    make_photos(photos, args.photos)
    procs = make_group(int(args.limit_gb * 1e9))
    trees = code_trees(folder, args.baseline)
    try:
        for label, tree in trees.items():
            for where, group in ((f"{args.limit_gb:g} GB cgroup", procs), ("no limit", None)):
                name = f"{label.split()[0]}-{'limited' if group else 'free'}"
                result = train(tree, photos, folder / "runs", name, args.epochs, args.precision, group)
                print(f"{label}, {where}: {json.dumps(result)}", flush=True)
    finally:
        remove_baseline(folder)


if __name__ == "__main__":
    main()
