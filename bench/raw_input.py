"""The preprocessing inside a raw-input export (issue 27) against imgclf's own, in Python with Pillow: the grey-level
differences of the model's input on scikit-image's photos, per input size and filter, and the milliseconds the graph
takes (onnxruntime) against Pillow's for photos of 0.2, 1.4 and 12 megapixels.

    .venv/bin/python bench/raw_input.py
"""
from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
import skimage.data
from onnx import helper
from PIL import Image

from imgclf.config import TrainConfig
from imgclf.data.decode import Preprocess
from imgclf.deploy.raw_input import preprocessing_graph

PHOTOS = {"coffee (400x600)": skimage.data.coffee(), "astronaut (512x512)": skimage.data.astronaut(),
          "chelsea (300x451)": skimage.data.chelsea()}


def session(cfg: TrainConfig) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    model = preprocessing_graph(cfg, "out", [helper.make_opsetid("", 18)], 9)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def config(size: int, crop: float, interpolation: str) -> TrainConfig:
    return TrainConfig(model="cnn", channels=3, img_size=size, resize="crop", crop_pct=crop,
                       interpolation=interpolation, mean=[0.0] * 3, std=[1 / 255] * 3)  # output in grey levels


def median_ms(fn, runs: int = 5) -> float:
    fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    print("| photo | model input | filter | mean difference | largest | pixels > 1 level apart |")
    print("|---|---|---|---|---|---|")
    for name, photo in PHOTOS.items():
        for size, crop, interpolation in ((224, 0.875, "bicubic"), (96, 1.0, "bilinear"), (28, 1.0, "bicubic")):
            cfg = config(size, crop, interpolation)
            ours = Preprocess.of(cfg)(Image.fromarray(photo)).astype(np.float32)
            theirs = session(cfg).run(None, {"pixels": photo[None]})[0][0]
            gap = np.abs(ours - theirs)
            print(f"| {name} | {size} px, crop {crop:g} | {interpolation} | {gap.mean():.3f} | {gap.max():.0f} | "
                  f"{(gap > 1.01).mean():.2%} |")
    cfg = config(224, 0.875, "bicubic")
    graph = session(cfg)
    print("\n| photo size | graph (onnxruntime) | Pillow (imgclf's Preprocess) |")
    print("|---|---|---|")
    rng = np.random.default_rng(0)
    for h, w in ((384, 512), (1024, 1365), (3000, 4000)):
        photo = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
        image = Image.fromarray(photo[0])
        print(f"| {w}x{h} | {median_ms(lambda: graph.run(None, {'pixels': photo})):.0f} ms | "
              f"{median_ms(lambda: Preprocess.of(cfg)(image)):.0f} ms |")


if __name__ == "__main__":
    main()
