"""The README's first command: the whole workflow on the bundled Fashion-MNIST sample, offline."""
from __future__ import annotations

import time

from PIL import Image

from ..data.builtin import load_builtin
from ..inference.inputs import format_table
from ..training.job import train


def run_demo(epochs: int = 15, project: str = "runs") -> float:
    """Train the default CNN on 8,000 bundled images, evaluate on 1,000 more, predict a few PNG files."""
    started = time.perf_counter()
    clf = train("fashion-mnist-sample", epochs=epochs, project=project)
    samples = clf.run / "samples"
    samples.mkdir(exist_ok=True)
    test = load_builtin("fashion-mnist-sample", None).splits["test"]
    for i in range(0, 100, 20):
        Image.fromarray(test.pixels[i]).save(samples / f"test{i:03d}-{clf.classes[test.labels[i]].replace('/', '-')}"
                                                        f".png")
    print("\npredictions for a few test images (the file name holds the true class):")
    print(format_table(clf.predict([str(samples)], top_k=3)))
    accuracy = clf.evaluation.accuracy
    print(f"\ntest accuracy: {accuracy:.4f} on {len(clf.evaluation.y_true)} images "
          f"({time.perf_counter() - started:.0f} s in all)")
    print(f"run directory: {clf.run.path}  (try: imgclf info {clf.run.path})")
    return accuracy
