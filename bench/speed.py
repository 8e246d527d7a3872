"""Training speed on this machine (issue 15): the ceiling, today's settings, the new defaults, side by side.

(a) the bare training step of the default cnn (forward, backward, AdamW step on random batches of Fashion-MNIST's
shape, nothing else): the ceiling for this model here, in fp32, fp32 channels-last and bf16 channels-last;
(b) ``imgclf train fashion-mnist --precision fp32 --per-image-augment --model cnn:FORMER_SPEC`` (the settings
before this issue);
(c) ``imgclf train fashion-mnist`` (the new defaults: bf16 autocast where the CPU has it, batched augmentation, the
new default cnn);
(d) any extra recipe given with ``--recipe``, e.g. more epochs for 94%.
Each run at each epoch count in its list; a run's test accuracy is on the 10,000 test images; time to 93.0% is the
wall time of the shortest run that reaches it. Also the progress bar's cost per epoch.

    .venv/bin/python bench/speed.py [--data-root ../shared/data/fashion-mnist] [--today 15,20] [--new 10,15,20]
        [--recipe "new, 40 epochs=40:"] [--recipe "wider=30:--model cnn:64-64-m-128-128-m-fc256"]
"""
from __future__ import annotations

import argparse
import io
import json
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from peers import KERAS_NET
from predict_bulk import ROOT, bench_folder, run

sys.path.insert(0, str(ROOT))

from imgclf.config import TrainConfig  # noqa: E402
from imgclf.data.transforms import normalize  # noqa: E402
from imgclf.models import create_model  # noqa: E402
from imgclf.training.optim import create_optimizer  # noqa: E402

TARGETS = (0.93, 0.94)
FORMER_SPEC = "32-m-64-m-128-m-d0.3-fc256-d0.3"  # the default cnn before issue 15


def bare_step(model: str, batch: int, channels_last: bool, dtype: torch.dtype | None, steps: int = 40) -> float:
    """Images/s of the training step alone (the run's optimizer from timm's factory, its loss) on one batch of
    random uint8 images, normalised each step as training does; the median step."""
    torch.manual_seed(0)
    net = create_model(model, 10, 1, 28)
    net = net.to(memory_format=torch.channels_last) if channels_last else net
    net.train()
    optimizer = create_optimizer(net, TrainConfig(lr=3e-3, weight_decay=0.05))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (batch,))
    mean, std = torch.tensor([0.286]), torch.tensor([0.353])

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(net(normalize(x, mean, std, channels_last)), y)
        loss.backward()
        optimizer.step()
    for _ in range(5):
        step()
    times = []
    for _ in range(steps):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return batch / statistics.median(times)


def progress_bar_cost(steps: int = 469) -> float:
    """Seconds the progress bar adds to an epoch of ``steps`` batches when it is drawn (to a file, not a tty)."""
    from tqdm import tqdm

    from imgclf.training.callbacks import ProgressBar

    class Trainer:
        steps_per_epoch, epochs = steps, 20

    bar, trainer = ProgressBar(), Trainer()
    started = time.perf_counter()
    bar.bar = tqdm(total=steps, file=io.StringIO(), dynamic_ncols=True)
    for step in range(1, steps + 1):
        bar.on_batch_end(trainer, step, {"loss": 0.5, "acc": 0.9})
    bar.bar.close()
    return time.perf_counter() - started


def train(folder: Path, data_root: str, name: str, epochs: int, options: list[str]) -> dict:
    seconds, peak = run(ROOT, ["train", "fashion-mnist", "--data-root", data_root, "--epochs", str(epochs),
                               "--no-plots", "--quiet", "--project", str(folder / "runs"), "--name", name,
                               "--exist-ok", *options], folder)
    rows = (folder / "runs" / name / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    epochs_rows = [dict(zip(header, map(float, r.split(",")))) for r in rows[1:]]
    report = json.loads((folder / "runs" / name / "eval.json").read_text())
    return {"seconds": seconds, "peak": peak, "accuracy": report["accuracy"],
            "images_per_s": statistics.mean(r["images_per_s"] for r in epochs_rows),
            "epoch_s": statistics.mean(r["time"] for r in epochs_rows),
            "augment_share": statistics.mean(r.get("augment_time", 0) / r["time"] for r in epochs_rows),
            "data_share": statistics.mean(r.get("data_time", 0) / r["time"] for r in epochs_rows)}


# (d) the seeds' Keras workflow: a BatchNorm/Dropout CNN like the default cnn, Adam, ReduceLROnPlateau and
# ModelCheckpoint on a tenth held out, then the best weights on the test split. Run by a Python that has Keras
# (pip install keras tensorflow-cpu: optional, never a dependency of imgclf).
KERAS = """
import json, sys, time
import numpy as np
data, epochs, out = np.load(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
x, y, xt, yt = data["x"][..., None], data["y"], data["xt"][..., None], data["yt"]
""" + KERAS_NET + """
started = time.perf_counter()
history = model.fit(x, y, batch_size=128, epochs=epochs, validation_split=0.1, verbose=0, callbacks=[
    keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=2),
    keras.callbacks.ModelCheckpoint(out + "/best.keras", monitor="val_accuracy", save_best_only=True)])
seconds = time.perf_counter() - started
best = keras.models.load_model(out + "/best.keras")
accuracy = float(best.evaluate(xt, yt, verbose=0)[1])
print(json.dumps({"seconds": seconds, "accuracy": accuracy, "images_per_s": 0.9 * len(x) * epochs / seconds}))
"""


def keras_run(python: str, folder: Path, data_root: str, epochs: int) -> dict:
    """Train the Keras model with ``python`` on Fashion-MNIST (the same files, as arrays)."""
    import subprocess

    from imgclf.data.builtin import load_builtin

    arrays = folder / "fashion.npz"
    if not arrays.exists():
        source = load_builtin("fashion-mnist", data_root)
        np.savez(arrays, x=source.splits["train"].pixels, y=source.splits["train"].labels,
                 xt=source.splits["test"].pixels, yt=source.splits["test"].labels)
    started = time.perf_counter()
    out = subprocess.run([python, "-c", KERAS, str(arrays), str(epochs), str(folder)], capture_output=True,
                         text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared/data/fashion-mnist"))
    parser.add_argument("--today", default="15,20", help="epoch counts for today's settings")
    parser.add_argument("--new", default="8,20", help="epoch counts for the new defaults")
    parser.add_argument("--recipe", action="append", default=[],
                        help="'LABEL=EPOCHS[,EPOCHS]:OPTIONS' an extra recipe on top of the new defaults")
    parser.add_argument("--keras-python", default=None, help="a Python with keras and tensorflow for (d)")
    parser.add_argument("--keras-epochs", default="20", help="epoch counts for (d)")
    parser.add_argument("--folder", default="bench-runs/speed")
    args = parser.parse_args()
    folder = bench_folder(args.folder)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: "
          f"{bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}")
    ceilings = {label: bare_step("cnn", 128, cl, dtype) for label, cl, dtype in
                (("fp32", False, None), ("fp32 channels-last", True, None),
                 ("bf16 channels-last", True, torch.bfloat16))}
    print("\n(a) the bare training step, default cnn, batch 128, 28x28x1 (median of 40 steps):")
    for label, speed in ceilings.items():
        print(f"  {label}: {speed:,.0f} img/s")
    recipes = [("(b) today's settings (--precision fp32 --per-image-augment, the former default cnn)", args.today,
                ["--precision", "fp32", "--per-image-augment", "--model", f"cnn:{FORMER_SPEC}"]),
               ("(c) the new defaults", args.new, [])]
    for spec in args.recipe:
        label, rest = spec.split("=", 1)
        epochs, options = rest.split(":", 1)
        recipes.append((f"(d) {label}", epochs, options.split()))
    print("\n(the ceiling is measured again right before and after each run, this machine's speed drifts; the "
          "ratio is to their mean, in the run's precision)")
    print("| run | epochs | training images/s | ceiling | loop / ceiling | epoch | augmentation / data wait | test "
          "accuracy | wall time |")
    print("|---|---|---|---|---|---|---|---|---|")
    reached: dict[str, dict[float, float]] = {}
    for label, epochs, options in recipes:
        for n in (int(e) for e in epochs.split(",") if e):  # an empty list skips the recipe
            name = f"{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')[:40]}-{n}"  # a folder per recipe
            fp32 = "fp32" in options
            # the run's own model and batch size
            model = options[options.index("--model") + 1] if "--model" in options else "cnn"
            batch = int(options[options.index("--batch-size") + 1]) if "--batch-size" in options else 128
            ceiling = [bare_step(model, batch, True, None if fp32 else torch.bfloat16)]
            r = train(folder, args.data_root, name, n, options)
            ceiling.append(bare_step(model, batch, True, None if fp32 else torch.bfloat16))
            for target in TARGETS:
                if r["accuracy"] >= target:
                    best = reached.setdefault(label, {})
                    best[target] = min(best.get(target, float("inf")), r["seconds"])
            top = statistics.mean(ceiling)
            print(f"| {label} | {n} | {r['images_per_s']:,.0f} | {top:,.0f} | {r['images_per_s'] / top:.0%}"
                  f" | {r['epoch_s']:.1f} s | {r['augment_share']:.1%} / {r['data_share']:.1%} | "
                  f"{r['accuracy']:.2%} | {r['seconds']:.0f} s |", flush=True)
    if args.keras_python:
        label = "(d) the seeds' Keras workflow (BatchNorm/Dropout CNN, ReduceLROnPlateau, ModelCheckpoint)"
        recipes.append((label, args.keras_epochs, []))
        for n in (int(e) for e in args.keras_epochs.split(",")):
            r = keras_run(args.keras_python, folder, args.data_root, n)
            for target in TARGETS:
                if r["accuracy"] >= target:
                    best = reached.setdefault(label, {})
                    best[target] = min(best.get(target, float("inf")), r["wall"])
            print(f"| {label} | {n} | {r['images_per_s']:,.0f} | | | {r['seconds'] / n:.1f} s | | "
                  f"{r['accuracy']:.2%} | {r['wall']:.0f} s |", flush=True)
    print("\ntime to reach the test accuracy (the shortest run that does):")
    for label, _, _ in recipes:
        got = reached.get(label, {})
        print(f"  {label}: " + ", ".join(f"{t:.0%} in {got[t]:.0f} s" if t in got else f"{t:.0%} not reached"
                                         for t in TARGETS))
    cost = progress_bar_cost()
    print(f"\nprogress bar: {1000 * cost:.1f} ms per epoch of 469 batches drawn to a file")


if __name__ == "__main__":
    main()
