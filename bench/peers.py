"""imgclf against the peers a learner would pick, on full Fashion-MNIST: the seeds' Keras workflow (a BatchNorm/Dropout
CNN, Adam, ReduceLROnPlateau, ModelCheckpoint) and fastai (``fit_one_cycle`` on a net with the default cnn's
layers), each pinned to its own core with one thread, two at a time: imgclf beside Keras, then beside fastai.

    .venv/bin/python bench/peers.py --keras-python /tmp/kvenv/bin/python --fastai-python /tmp/fvenv/bin/python
        [--epochs 8] [--data-root ../shared/data/fashion-mnist]

The peers run in their own virtual environments (``pip install keras tensorflow-cpu``; ``pip install fastai
torch==2.14.1 torchvision==0.29.1``), never dependencies of imgclf. Each contender reads the same IDX files and
writes, as it goes, when its first training step ended, each epoch's validation accuracy (on a tenth held out) and
the final test accuracy; from those: time from the command to the first step, training images/s, time to 92% and
93% validation accuracy, test accuracy, peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from predict_bulk import ROOT, bench_folder

READ = """
import gzip, json, sys, time
import numpy as np
def idx(path, offset):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)
root, epochs, out = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "w")
def stamp(**event):
    out.write(json.dumps(event | {"t": time.time()}) + "\\n"); out.flush()
x = idx(root + "/train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
y = idx(root + "/train-labels-idx1-ubyte.gz", 8).astype("int64")
xt = idx(root + "/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
yt = idx(root + "/t10k-labels-idx1-ubyte.gz", 8).astype("int64")
limit = int(sys.argv[5])
x, y, xt, yt = (x[:limit], y[:limit], xt[:limit], yt[:limit]) if limit else (x, y, xt, yt)
"""

# The seeds' Keras workflow's network (bench/speed.py trains it too): a BatchNorm/Dropout CNN like imgclf's former
# default cnn, Adam.
KERAS_NET = """
import keras
from keras import layers
keras.utils.set_random_seed(0)
def block(n):
    return [layers.Conv2D(n, 3, padding="same", use_bias=False), layers.BatchNormalization(), layers.ReLU(),
            layers.MaxPooling2D()]
model = keras.Sequential([layers.Input((28, 28, 1)), layers.Rescaling(1 / 255), *block(32), *block(64), *block(128),
                          layers.Flatten(), layers.Dropout(0.3), layers.Dense(256, activation="relu"),
                          layers.Dropout(0.3), layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""

KERAS = READ + """
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
""" + KERAS_NET + """
class Stamp(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 0 and not hasattr(self, "done"):
            self.done = stamp(event="first_step")
    def on_epoch_end(self, epoch, logs=None):
        stamp(event="epoch", val_acc=float(logs["val_accuracy"]))
model.fit(x[..., None], y, batch_size=128, epochs=epochs, validation_split=0.1, verbose=0, callbacks=[
    Stamp(), keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=2),
    keras.callbacks.ModelCheckpoint(sys.argv[4] + "/best.keras", monitor="val_accuracy", save_best_only=True)])
best = keras.models.load_model(sys.argv[4] + "/best.keras")
stamp(event="done", test_acc=float(best.evaluate(xt[..., None], yt, verbose=0)[1]), train=int(0.9 * len(x)))
"""

FASTAI = READ + """
import torch
torch.set_num_threads(1)
from torch import nn
from fastai.vision.all import Callback, DataLoaders, Learner, CrossEntropyLossFlat, accuracy, TfmdDL
torch.manual_seed(0)
def images(a):
    t = torch.from_numpy(a.copy()).float().div(255).unsqueeze(1)
    return (t - 0.286) / 0.353
order = np.random.default_rng(0).permutation(len(x))
valid, train = order[:len(x) // 10], order[len(x) // 10:]
pairs = lambda ids, xs, ys: list(zip(images(xs[ids]), torch.from_numpy(ys[ids])))
dls = DataLoaders(TfmdDL(pairs(train, x, y), bs=128, shuffle=True, drop_last=True),
                  TfmdDL(pairs(valid, x, y), bs=512), device="cpu")
def conv(i, o):
    return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]
net = nn.Sequential(*conv(1, 32), nn.MaxPool2d(2), *conv(32, 64), *conv(64, 64), nn.MaxPool2d(2), *conv(64, 128),
                    nn.MaxPool2d(2), nn.Dropout(0.1), nn.Flatten(), nn.Linear(128 * 9, 256), nn.ReLU(),
                    nn.Dropout(0.1), nn.Linear(256, 10))
class Stamp(Callback):
    order = 99
    def after_batch(self):
        if self.training and not hasattr(self, "done"):
            self.done = stamp(event="first_step")
    def after_epoch(self):
        stamp(event="epoch", val_acc=float(self.recorder.metrics[0].value))
learn = Learner(dls, net, loss_func=CrossEntropyLossFlat(), metrics=accuracy, cbs=[Stamp()])
with learn.no_logging(), learn.no_bar():
    learn.fit_one_cycle(epochs, 3e-3)
    test = TfmdDL(pairs(np.arange(len(xt)), xt, yt), bs=512, device="cpu")
    preds, targets = learn.get_preds(dl=test)
stamp(event="done", test_acc=float((preds.argmax(1) == targets).float().mean()), train=len(train))
"""

IMGCLF = """
import json, sys, time
import imgclf
from imgclf.callbacks import Callback
root, epochs, out, folder, limit = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "w"), sys.argv[4], sys.argv[5]
model = sys.argv[6]
def stamp(**event):
    out.write(json.dumps(event | {"t": time.time()}) + "\\n"); out.flush()
class Stamp(Callback):
    def on_batch_end(self, trainer, step, logs):
        if not hasattr(self, "done"):
            self.done = stamp(event="first_step")
    def on_epoch_end(self, trainer, epoch, logs):
        stamp(event="epoch", val_acc=logs["val_acc"])
clf = imgclf.train("fashion-mnist", model=model, data_root=root, epochs=epochs, project=folder, name="imgclf",
                   exist_ok=True, callbacks=[Stamp()], quiet=True, limit=int(limit) or None)
train = json.loads((clf.run / "status.json").read_text())["images"]["train"]
stamp(event="done", test_acc=clf.evaluation.accuracy, train=train)
"""


def launch(python: str, script: str, core: int, data_root: str, epochs: int, folder: Path, name: str,
           limit: int, model: str = "cnn") -> tuple[subprocess.Popen, float, Path]:
    events = folder / f"{name}.jsonl"
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.time()
    proc = subprocess.Popen(["taskset", "-c", str(core), python, "-c", script, data_root, str(epochs), str(events),
                             str(folder), str(limit), model], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    return proc, started, events


def summary(name: str, started: float, events: Path, peak_mb: float) -> str:
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    first = next(r["t"] for r in rows if r["event"] == "first_step") - started
    epochs = [r for r in rows if r["event"] == "epoch"]
    done = next(r for r in rows if r["event"] == "done")
    speed = done["train"] * len(epochs) / (epochs[-1]["t"] - started - first)
    reach = {goal: next((f"{r['t'] - started:.0f} s" for r in epochs if r["val_acc"] >= goal), "not reached")
             for goal in (0.92, 0.93)}
    return (f"| {name} | {first:.1f} s | {speed:,.0f} | {reach[0.92]} | {reach[0.93]} | {done['test_acc']:.2%} "
            f"| {peak_mb:,.0f} MB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keras-python", required=True)
    parser.add_argument("--fastai-python", required=True)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared/data/fashion-mnist"))
    parser.add_argument("--folder", default="bench-runs/peers")
    parser.add_argument("--limit", type=int, default=0, help="train on the first N images (a quick try of the bench)")
    parser.add_argument("--imgclf-model", default="cnn", help="imgclf's model: its default cnn, or e.g. the peers' "
                        "network, cnn:32-m-64-m-128-m-d0.3-fc256-d0.3 (Keras')")
    parser.add_argument("--peers", default="keras,fastai", help="which peers to run beside imgclf")
    args = parser.parse_args()
    folder = bench_folder(args.folder)
    print(f"{args.epochs} epochs each; time from the command; images/s over the epochs (validation included)\n")
    print("| contender | to the first step | training images/s | to 92% val | to 93% val | test accuracy | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    peers = (("Keras", args.keras_python, KERAS), ("fastai", args.fastai_python, FASTAI))
    for peer, python, script in (p for p in peers if p[0].lower() in args.peers.lower().split(",")):
        running = {"imgclf": launch(sys.executable, IMGCLF, 0, args.data_root, args.epochs, folder, "imgclf",
                                    args.limit, args.imgclf_model),
                   peer: launch(python, script, 1, args.data_root, args.epochs, folder, peer, args.limit)}
        for _ in running:
            pid, status, usage = os.wait4(-1, 0)
            name = next(n for n, (p, _, _) in running.items() if p.pid == pid)
            proc, started, events = running[name]
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"{name} failed:\n{proc.stderr.read().decode()[-1500:]}")
            label = f"imgclf (beside {peer})" if name == "imgclf" else name
            print(summary(label, started, events, usage.ru_maxrss / 1024), flush=True)


if __name__ == "__main__":
    main()
