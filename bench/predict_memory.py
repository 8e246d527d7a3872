"""Prediction's memory inside a cgroup limit: a Classifier predicting photos in passes sized by the input alone (the
rule before issue 25: 32 MB of float32 input a pass, 13 photos at 448 px) against passes measured and fitted to the
memory (imgclf/inference/batching.py): peak RSS, whether it finished, the pass it used, seconds.

    sudo .venv/bin/python bench/predict_memory.py [--limit-gb 2] [--images 64]

The models are timm's with random weights (no download): vgg16 at 448 px (wide early layers: the case the input
rule misjudges) and efficientnet_lite0 at 224 px. Needs root for the cgroup (as bench/fit_memory.py).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from fit_memory import make_group
from predict_bulk import ROOT

PREDICT = """
import json, sys, time
import torch
from imgclf.config import TrainConfig
from imgclf.inference.classifier import Classifier
from imgclf.models import create_model
from imgclf.resources import inference_batch
model, size, images, rule = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
cfg = TrainConfig(model=model, channels=3, img_size=size, mean=[0.5] * 3, std=[0.25] * 3)
clf = Classifier(create_model(model, 10, 3, size), [str(i) for i in range(10)], cfg, device="cpu")
x = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8)
shape = (3, size, size)
started = time.perf_counter()
probs = clf.predict_proba(x, batch_size=inference_batch(shape) if rule == "input" else None)
print(json.dumps({"pass": clf.fitted_passes.get(shape, inference_batch(shape)), "images": len(probs),
                  "seconds": round(time.perf_counter() - started, 1)}))
"""


def predict(model: str, size: int, images: int, rule: str, procs) -> dict:
    """One prediction in the cgroup: its own figures, peak RSS (MB), exit code."""
    cmd = [sys.executable, "-c", PREDICT, model, str(size), str(images), rule]
    proc = subprocess.Popen(["sh", "-c", f"echo $$ > {procs} && " + 'exec "$@"', "sh", *cmd],
                            env=os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    result = {"exit": os.waitstatus_to_exitcode(status), "peak_mb": round(usage.ru_maxrss / 1024)}
    if result["exit"] == 0:
        result |= json.loads(proc.stdout.read().decode().strip().splitlines()[-1])
    else:
        result["error"] = (proc.stderr.read().decode(errors="replace").strip().splitlines() or ["killed"])[-1]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit-gb", type=float, default=2.0)
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    procs = make_group(int(args.limit_gb * 1e9))
    print(f"{args.images} images each, in a {args.limit_gb:g} GB cgroup\n")
    print("| model | passes | pass size | finished | peak RSS | seconds |")
    print("|---|---|---|---|---|---|")
    for model, size in (("vgg16", 448), ("efficientnet_lite0", 224)):
        for rule in ("input", "measured"):
            started = time.perf_counter()
            result = predict(model, size, args.images, rule, procs)
            done = "yes" if result["exit"] == 0 else f"no ({result['error'][:60]})"
            print(f"| {model} at {size} px | {'by input size' if rule == 'input' else 'measured'} | "
                  f"{result.get('pass', '-')} | {done} | {result['peak_mb']:,} MB | "
                  f"{result.get('seconds', round(time.perf_counter() - started))} |", flush=True)


if __name__ == "__main__":
    main()
