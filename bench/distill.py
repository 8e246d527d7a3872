"""Knowledge distillation (issue 27): a teacher, a small student trained alone, and the same student distilled from
the teacher (``imgclf train --teacher``; the teacher answers every augmented batch unless ``--kd`` says
``--kd-logits cached``), on full Fashion-MNIST: test accuracy, parameters, training time, and the
ONNX latency of one image on this machine (from each run's export check). The real ``imgclf`` command runs each in a
subprocess.

    .venv/bin/python bench/distill.py [--data-root ../shared/data/fashion-mnist] [--teacher-epochs 10]
        [--student cnn:16-m-32-m-fc64] [--student-epochs 10] [--kd "--kd-weight 0.9 --kd-temperature 4"]
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from predict_bulk import ROOT, bench_folder, run


def one(folder: Path, data_root: str, name: str, options: list[str]) -> dict:
    """Train (unless done), export to ONNX, and gather the figures of one run."""
    runs = folder / "runs"
    seconds = None
    if not (runs / name / "eval.json").exists():
        seconds, _ = run(ROOT, ["train", "fashion-mnist", "--data-root", data_root, "--no-plots", "--no-report",
                                "--quiet", "--project", str(runs), "--name", name, "--exist-ok", *options], folder)
    run(ROOT, ["export", str(runs / name)], folder)
    evaluation = json.loads((runs / name / "eval.json").read_text())
    check = json.loads((runs / name / "model.onnx.check.json").read_text())
    from imgclf.inference.classifier import Classifier

    params = sum(p.numel() for p in Classifier.load(str(runs / name), device="cpu").model.parameters())
    return {"accuracy": evaluation["accuracy"], "params": params, "latency": check["latency_ms_batch1"],
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared/data/fashion-mnist"))
    parser.add_argument("--teacher-epochs", default="10")
    parser.add_argument("--student", default="cnn:16-m-32-m-fc64")
    parser.add_argument("--student-epochs", default="10")
    parser.add_argument("--kd", default="--kd-weight 0.9 --kd-temperature 4")
    parser.add_argument("--folder", default="bench-runs/distill")
    args = parser.parse_args()
    folder = bench_folder(args.folder)
    student = ["--model", args.student, "--epochs", args.student_epochs]
    rows = {"teacher (default cnn)": one(folder, args.data_root, "teacher", ["--epochs", args.teacher_epochs])}
    rows[f"student alone ({args.student})"] = one(folder, args.data_root, "student", student)
    kd = shlex.split(args.kd)
    name = "distilled" + "".join(a.replace("--kd", "").replace("-", "_") for a in kd)  # one run per setting
    rows[f"student distilled ({args.kd})"] = one(folder, args.data_root, name,
                                                 [*student, "--teacher", str(folder / "runs" / "teacher"), *kd])
    print("| model | test accuracy | parameters | ONNX latency, 1 image | training time |")
    print("|---|---|---|---|---|")
    for label, r in rows.items():
        took = f"{r['seconds']:.0f} s" if r["seconds"] is not None else "(trained before)"
        print(f"| {label} | {r['accuracy']:.2%} | {r['params']:,} | {r['latency']:.3f} ms | {took} |")
    teacher, alone, taught = (r["accuracy"] for r in rows.values())
    if teacher > alone:
        print(f"the distilled student closes {(taught - alone) / (teacher - alone):.0%} of the gap between the "
              f"student alone and the teacher")


if __name__ == "__main__":
    main()
