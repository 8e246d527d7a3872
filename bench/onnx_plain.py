"""The plain onnxruntime loop that ``bench/onnx_predict.py`` holds imgclf's ONNX prediction against: what a user
would write in 30 lines, with imgclf's own preprocessing (so both decode the same pixels at the same cost).

    python bench/onnx_plain.py model.onnx FOLDER OUT.csv [--batch-size 64] [--threads 1]
"""
import argparse
import csv
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from imgclf.data.decode import Preprocess

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("folder")
parser.add_argument("out")
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
options = ort.SessionOptions()
options.intra_op_num_threads = args.threads
session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
labels, mean, std = (json.loads(meta[k]) for k in ("labels", "mean", "std"))
pre = Preprocess(int(meta["channels"]), int(meta["img_size"]), meta["resize"], float(meta["crop_pct"]),
                 meta["interpolation"])
mean, std = (np.asarray(v, np.float32).reshape(1, -1, 1, 1) for v in (mean, std))
root = Path(args.folder)
paths = sorted(root.rglob("*.jpg")) if root.is_dir() else [root]
with open(args.out, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["path", "label", "probability"])
    for i in range(0, len(paths), args.batch_size):
        chunk = paths[i:i + args.batch_size]
        x = (np.stack([pre.load(p) for p in chunk]).astype(np.float32) / 255 - mean) / std
        logits = session.run(None, {session.get_inputs()[0].name: x})[0]
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        for path, p in zip(chunk, probs):
            writer.writerow([path, labels[int(p.argmax())], f"{p.max():.6f}"])
