"""Benchmark: CPU inference, ONNX Runtime (fp32 and INT8) vs PyTorch eager, batch 1 and batch 32.

Trains two small runs on the bundled Fashion-MNIST sample (offline): the default CNN at 28 px (scratch, a few
epochs) and efficientnet_lite0 at --img-size px (ImageNet weights, feature extraction), exports each with
`imgclf export` (fp32 and --int8), then times the same images through every engine, one run each, with the same
thread count, after a warm-up. Accuracy is measured on the sample's 1,000 test images.

    python bench/inference.py [--img-size 128] [--seconds 5] [--threads 2] [--project bench-runs]
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from imgclf.data.transforms import normalize
from imgclf.deploy.export import export
from imgclf.inference.classifier import Classifier
from imgclf.inference.onnx import OnnxClassifier
from imgclf.training.job import train


def throughput(fn, batch: np.ndarray, seconds: float) -> float:
    """Images per second of fn(batch), timed for about ``seconds`` after three warm-up calls."""
    for _ in range(3):
        fn(batch)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn(batch)
        calls += 1
    return calls * len(batch) / (time.perf_counter() - started)


def bench_run(clf: Classifier, seconds: float, threads: int) -> list[dict]:
    fp32 = export(clf, "onnx", dynamic_batch=True, output=clf.run / "bench.onnx")
    int8 = export(clf, "onnx", dynamic_batch=True, int8=True, output=clf.run / "bench_int8.onnx")
    engines = {"onnxruntime fp32": OnnxClassifier(fp32.path, threads),
               "onnxruntime int8": OnnxClassifier(int8.path, threads)}
    images, _ = clf.eval_images()
    x = images.x
    rows = []

    def eager(batch: np.ndarray) -> None:
        with torch.inference_mode():
            clf.model(normalize(torch.from_numpy(batch), clf.mean, clf.std))

    accuracy = {"pytorch eager": float((clf.predict_proba(x).argmax(1) == images.y).float().mean())}
    for name, engine in engines.items():
        accuracy[name] = float((engine.predict_proba(x).argmax(1) == images.y).float().mean())
    for batch_size in (1, 32):
        batch = x[:batch_size].numpy()
        speeds = {"pytorch eager": throughput(eager, batch, seconds)}
        for name, engine in engines.items():
            speeds[name] = throughput(engine.logits, batch, seconds)
        for name, speed in speeds.items():
            rows.append({"model": clf.config.model, "size": clf.config.img_size, "engine": name, "batch": batch_size,
                         "images/s": speed, "vs eager": speed / speeds["pytorch eager"],
                         "accuracy": accuracy[name]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--img-size", type=int, default=128, help="efficientnet_lite0 input size")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per engine and batch size")
    parser.add_argument("--threads", type=int, default=2, help="threads for PyTorch and onnxruntime")
    parser.add_argument("--project", default="bench-runs", help="where the two runs go")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    common = dict(project=args.project, exist_ok=True, quiet=True, plots=False, device="cpu")
    runs = [train("fashion-mnist-sample", "cnn", 5, name="inference-cnn", **common),
            train("fashion-mnist-sample", "efficientnet_lite0", 3, pretrained=True, mode="feature-extract",
                  img_size=args.img_size, name="inference-lite0", **common)]
    rows = [row for clf in runs for row in bench_run(Classifier.load(clf.run.path, device="cpu"), args.seconds,
                                                      args.threads)]
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}")
    print("| model | input | engine | batch | images/s | vs eager | test accuracy |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['size']} px | {r['engine']} | {r['batch']} | {r['images/s']:,.0f} | "
              f"{r['vs eager']:.2f}x | {r['accuracy']:.2%} |")


if __name__ == "__main__":
    main()
