"""End to end: the command line on tiny generated folders and CSVs."""
import csv
import hashlib
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from imgclf.cli.main import main

from .conftest import TINY_ARGS, write_class_folders


def sha256_all(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_train_evaluate_predict_info(split_folder, run_cwd, capsys):
    with_plots = [a for a in TINY_ARGS if a != "--no-plots"]
    assert main(["train", str(split_folder), "--epochs", "3", "--name", "shapes", "--lr", "0.01", *with_plots]) == 0
    run = run_cwd / "runs" / "shapes"
    for name in ("config.yaml", "labels.json", "metrics.csv", "best.safetensors", "last.pt", "curves.png",
                 "confusion_matrix.png", "confusion_matrix.csv", "report.txt", "samples.png", "report.html"):
        assert (run / name).is_file(), name
    assert json.loads((run / "labels.json").read_text()) == ["bar", "bright", "dark"]
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "time", "data_wait"} <= set(rows[0])
    capsys.readouterr()

    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "images: 15" in out and "accuracy:" in out and "precision" in out
    accuracy = float(out.split("accuracy: ")[1].split()[0])
    assert accuracy >= 0.8  # three easy shapes

    matrix = list(csv.reader((run / "confusion_matrix.csv").open()))
    assert matrix[0][1:] == ["bar", "bright", "dark"] and sum(int(v) for r in matrix[1:] for v in r[1:]) == 15

    inputs = run_cwd / "inputs"
    write_class_folders(inputs, 2, seed=9)
    (inputs / "bar" / "broken.png").write_bytes(b"not really a png")
    assert main(["predict", str(run), str(inputs), "--top-k", "2", "--output", str(run_cwd / "p.csv")]) == 0
    rows = list(csv.DictReader((run_cwd / "p.csv").open()))
    assert len(rows) == 7 and [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    broken = next(r for r in rows if r["path"].endswith("broken.png"))
    assert broken["error"] == "not an image or unsupported format" and broken["label"] == ""
    good = [r for r in rows if not r["error"]]
    assert all(r["label"] in ("bar", "bright", "dark") and float(r["prob"]) >= float(r["prob2"]) for r in good)
    assert sum(r["label"] == r["path"].split("/")[-2] for r in good) >= 5

    assert main(["predict", "shapes", str(inputs / "dark" / "*.png"), "--output", str(run_cwd / "p.json")]) == 0
    preds = json.loads((run_cwd / "p.json").read_text())
    assert len(preds) == 2 and len(preds[0]["labels"]) == 3

    capsys.readouterr()
    assert main(["info", str(run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["classes"] == ["bar", "bright", "dark"] and info["input"] == "3x16x16"
    assert info["best"].startswith("val_acc ") and info["best"].endswith("of 3 (kept in best.safetensors)") and "best.safetensors" in info["files"]
    assert info["evaluated"].endswith("on 15 images (report.txt)")


def test_corrupt_files_are_skipped_and_user_files_untouched(image_folder, run_cwd):
    (image_folder / "bar" / "empty.png").write_bytes(b"")
    (image_folder / "dark" / "text.jpg").write_text("I am not a JPEG")
    (image_folder / "bright" / "notes.txt").write_text("ignored")
    before = sha256_all(image_folder)
    assert main(["train", str(image_folder), "--epochs", "1", "--name", "s", *TINY_ARGS]) == 0
    assert sha256_all(image_folder) == before
    skipped = list(csv.DictReader((run_cwd / "runs" / "s" / "skipped.csv").open()))
    assert {(r["path"].split("/")[-1], r["reason"]) for r in skipped} == {
        ("empty.png", "empty file"), ("text.jpg", "not an image or unsupported format")}
    assert "skipped 2 unreadable file(s)" in (run_cwd / "runs" / "s" / "train.log").read_text()


def test_csv_sources_train(image_folder, run_cwd):
    rows = [{"filename": str(p.relative_to(image_folder)), "class": p.parent.name}
            for p in sorted(image_folder.rglob("*.png"))]
    pd.DataFrame(rows).to_csv(image_folder / "index.csv", index=False)
    assert main(["train", str(image_folder / "index.csv"), "--epochs", "1", "--name", "paths", *TINY_ARGS]) == 0

    rng = np.random.default_rng(0)
    labels = np.arange(60) % 2
    pixels = np.where(labels[:, None] == 1, 200, 20) + rng.integers(0, 40, (60, 144))
    frame = pd.DataFrame(pixels, columns=[f"pixel{i}" for i in range(144)])
    frame.insert(0, "label", labels)
    frame.to_csv(run_cwd / "pixels.csv", index=False)
    assert main(["train", str(run_cwd / "pixels.csv"), "--epochs", "2", "--name", "px", *TINY_ARGS]) == 0
    info = json.loads((run_cwd / "runs" / "px" / "labels.json").read_text())
    assert info == ["0", "1"]
    config = (run_cwd / "runs" / "px" / "config.yaml").read_text()
    assert "img_size: 12" in config and "channels: 1" in config


def test_timm_architecture_trains_and_predicts(image_folder, run_cwd, capsys):
    args = ["--model", "resnet18", "--img-size", "32", "--batch-size", "12", "--quiet", "--workers", "0"]
    assert main(["train", str(image_folder), "--epochs", "1", "--name", "rn", *args]) == 0
    assert "model: resnet18" in (run_cwd / "runs" / "rn" / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["predict", "runs/rn", str(image_folder / "bar" / "000.png"), "--top-k", "1"]) == 0
    assert capsys.readouterr().out.split()[-2] in ("bar", "bright", "dark")


def test_existing_run_name_is_not_overwritten(image_folder, run_cwd, capsys):
    assert main(["train", str(image_folder), "--epochs", "1", "--name", "same", *TINY_ARGS]) == 0
    best = (run_cwd / "runs" / "same" / "best.safetensors").read_bytes()
    assert main(["train", str(image_folder), "--epochs", "1", "--name", "same", *TINY_ARGS]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (run_cwd / "runs" / "same" / "best.safetensors").read_bytes() == best


def test_user_errors_are_one_line_with_exit_code_2(tmp_path, image_folder, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    write_class_folders(tmp_path / "one", 3, classes=("only",))
    (tmp_path / "bad.csv").write_text("name,label\na.png,x\n")
    cases = [
        (("train", str(tmp_path / "missing")), "no such file or folder"),
        (("train", str(tmp_path / "empty")), "no images found"),
        (("train", str(tmp_path / "one")), "single class"),
        (("train", str(tmp_path / "bad.csv")), "missing a path column"),
        (("train", str(image_folder), "--optimizer", "lbfgs"), "invalid choice"),
        (("evaluate", str(tmp_path / "nothing")), "no such run"),
    ]
    monkeypatch.chdir(tmp_path)  # in-process (test_no_traceback sweeps whole processes): a traceback fails the test
    for args, message in cases:
        try:
            code = main(list(args))
        except SystemExit as exit:  # argparse's own errors
            code = exit.code
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "runs").exists()  # failed runs leave no empty run directories


def test_evaluate_with_unknown_label_is_a_user_error(image_folder, run_cwd, capsys):
    assert main(["train", str(image_folder), "--epochs", "1", "--name", "r", *TINY_ARGS]) == 0
    other = write_class_folders(run_cwd / "other", 2, classes=("bar", "zebra"))
    capsys.readouterr()
    assert main(["evaluate", "runs/r", str(other)]) == 2
    assert "'zebra'" in capsys.readouterr().err


def test_damaged_weights_name_the_file(image_folder, run_cwd, capsys):
    assert main(["train", str(image_folder), "--epochs", "1", "--name", "d", *TINY_ARGS]) == 0
    (run_cwd / "runs" / "d" / "best.safetensors").write_bytes(b"garbage")
    capsys.readouterr()
    assert main(["predict", "runs/d", str(image_folder)]) == 2
    assert "best.safetensors" in capsys.readouterr().err


def test_help_shows_defaults():
    result = subprocess.run([sys.executable, "-m", "imgclf", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "(default: adamw)" in result.stdout and "--resume" in result.stdout


def test_feature_cache_speaks_the_words_of_cache_and_keeps_the_old_ones():
    from imgclf.cli.main import build_parser
    from imgclf.config import TrainConfig

    parse = build_parser().parse_args
    assert parse(["train", "x", "--feature-cache", "ram"]).feature_cache == "ram"
    assert parse(["train", "x", "--feature-cache", "memory"]).feature_cache == "ram"  # the old spelling
    assert TrainConfig(feature_cache="off").feature_cache == "none"  # a config.yaml from before
    with pytest.raises(SystemExit):
        parse(["train", "x", "--feature-cache", "sometimes"])
