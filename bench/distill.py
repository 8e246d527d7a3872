"""Knowledge distillation (issue 27): a teacher, a small student trained alone, and the same student distilled from
the teacher (``imgclf train --teacher``; the teacher answers every augmented batch unless ``--kd`` says
``--kd-logits cached``), on full Fashion-MNIST: test accuracy, parameters, training time, and the
ONNX latency of one image on this machine (from each run's export check). The real ``imgclf`` command runs each in a
subprocess.

    .venv/bin/python bench/distill.py [--data-root ../shared/data/fashion-mnist] [--teacher-options "--epochs 10"]
        [--student cnn:16-m-32-m-fc64] [--student-epochs 10] [--student-options "--augment none"]
        [--kd "--kd-weight 0.9 --kd-temperature 4"] [--folder bench-runs/distill]

Runs are named by their settings, so a folder keeps one of each and a second call trains only what is new.
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from predict_bulk import ROOT, bench_folder, run

STUDENT = "cnn:16-m-32-m-fc64"


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
    # a run with --tta (the accurate recipe's) is compared by its plain accuracy, as the students are scored
    plain = evaluation.get("tta", {}).get("accuracy_without", evaluation["accuracy"])
    return {"accuracy": plain, "params": params, "latency": check["latency_ms_batch1"],
            "seconds": seconds}


def _tag(options: list[str]) -> str:
    """A run name's part for these options: ``--epochs 20 --augment none`` -> ``_epochs20_augmentnone``."""
    return "".join(f"_{a.lstrip('-').replace('kd-', '').replace('-', '')}" if a.startswith("--") else a.replace(".", "")
                   for a in options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared/data/fashion-mnist"))
    parser.add_argument("--teacher-options", default="--epochs 10", help="imgclf train options of the teacher")
    parser.add_argument("--student", default=STUDENT)
    parser.add_argument("--student-epochs", default="10")
    parser.add_argument("--student-options", default="", help="more imgclf train options, for both students")
    parser.add_argument("--kd", default="--kd-weight 0.9 --kd-temperature 4")
    parser.add_argument("--folder", default="bench-runs/distill")
    args = parser.parse_args()
    folder = bench_folder(args.folder)
    student = ["--model", args.student, "--epochs", args.student_epochs, *shlex.split(args.student_options)]
    rows = {f"teacher (default cnn, {args.teacher_options})": one(folder, args.data_root, "teacher",
                                                                  shlex.split(args.teacher_options))}
    # the default student keeps the names of the runs already made; another one carries its spec
    tag = _tag(student[2:]) if args.student == STUDENT else \
        "_" + args.student.replace("cnn:", "").replace("-", "") + _tag(student[2:])
    rows[f"student alone ({args.student}, {' '.join(student[2:])})"] = one(folder, args.data_root, f"student{tag}",
                                                                           student)
    kd = shlex.split(args.kd)
    rows[f"student distilled ({args.kd})"] = one(folder, args.data_root, f"distilled{tag}{_tag(kd)}",
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
