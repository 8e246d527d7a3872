"""What a new user trips over (issue 12): the kept checkpoint, Keras-style callbacks, numeric options, tiny data
sets, evaluation of other data, run names, where commands write, pixel CSVs in predict, and small wrong answers."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

import imgclf
from imgclf.callbacks import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau
from imgclf.cli.main import main
from imgclf.config import TrainConfig
from imgclf.errors import UserError
from imgclf.metrics.classification import Evaluation
from imgclf.metrics.diagnose import diagnose
from imgclf.run import kept_epoch

from .conftest import TINY, TINY_ARGS, FakeTrainer, write_class_folders


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---- 1, 2: the kept checkpoint ---------------------------------------------------------------------------------
def test_tied_accuracy_keeps_the_later_epoch_with_the_lower_loss(tmp_path):
    trainer = FakeTrainer()
    trainer.weights_metadata = {}
    checkpoint = ModelCheckpoint(tmp_path / "best.safetensors", "val_acc", save_best_only=True)
    # 100% from epoch 1; the loss keeps falling until epoch 4, then rises
    for epoch, loss in enumerate([0.9, 0.5, 0.2, 0.1, 0.3]):
        with torch.no_grad():
            trainer.model.weight.fill_(epoch)
        checkpoint.on_epoch_end(trainer, epoch, {"val_acc": 1.0, "val_loss": loss})
    assert checkpoint.best_epoch == 3 and kept_epoch(tmp_path / "best.safetensors") == 4
    assert load_file(str(tmp_path / "best.safetensors"))["weight"].unique().tolist() == [3.0]


def test_a_last_epoch_that_is_no_worse_by_both_measures_is_kept_despite_min_delta(tmp_path):
    trainer = FakeTrainer()
    trainer.weights_metadata = {}
    checkpoint = ModelCheckpoint(tmp_path / "b.safetensors", "val_acc", save_best_only=True, min_delta=0.05)
    checkpoint.on_epoch_end(trainer, 0, {"val_acc": 0.90, "val_loss": 0.5})
    checkpoint.on_epoch_end(trainer, 1, {"val_acc": 0.92, "val_loss": 0.3})  # better by less than min_delta
    checkpoint.on_epoch_end(trainer, 2, {"val_acc": 0.91, "val_loss": 0.2})  # worse accuracy: not dominated
    assert checkpoint.best_epoch == 1


def test_an_easy_validation_set_keeps_trained_weights_not_epoch_one(tmp_path, run_cwd):
    data = write_class_folders(tmp_path / "easy", per_class=20)
    clf = imgclf.train(str(data), epochs=5, name="easy", **TINY | {"lr": 0.03})
    rows = clf.run.metrics()
    top = max(r["val_acc"] for r in rows)
    kept = kept_epoch(clf.run / "best.safetensors")
    assert kept is not None
    row = rows[kept - 1]
    # the kept epoch has the best accuracy and, among the epochs tied on it, the lowest validation loss
    assert row["val_acc"] == top
    assert row["val_loss"] == min(r["val_loss"] for r in rows if r["val_acc"] == top)
    last = rows[-1]
    assert not (last["val_acc"] >= row["val_acc"] and last["val_loss"] < row["val_loss"])
    info = clf.info()
    assert info["best"].startswith(f"val_acc {row['val_acc']:.4f} at epoch {kept} of 5")
    assert f"at epoch {kept} of 5; those weights are kept" in (clf.run / "train.log").read_text()


def test_diagnosis_names_the_monitored_metric_and_the_kept_epoch():
    rows = [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "train_acc": 0.9 + 0.02 * i, "val_loss": v,
             "val_acc": a} for i, (v, a) in enumerate([(0.6, 0.80), (0.5, 0.85), (0.55, 0.86), (0.7, 0.86)])]
    found = diagnose(rows, "val_acc")
    assert found.verdict == "over-fitting"
    # val_acc 0.86 ties at epochs 3 and 4; epoch 3 has the lower loss: that is what the checkpoint keeps
    assert found.best_epoch == 3 and "best checkpoint by val_acc, epoch 3" in found.text
    assert "by validation loss" not in found.text
    assert "epoch 2" in diagnose(rows, "val_loss").text


# ---- 3, 16a: numeric options ------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["train", "DATA", "--epochs", "0"], ["train", "DATA", "--epochs", "-2"], ["train", "DATA", "--batch-size", "0"],
    ["train", "DATA", "--lr", "0"], ["train", "DATA", "--patience", "-1"], ["train", "DATA", "--workers", "-1"],
    ["train", "DATA", "--seed", "-1"], ["train", "DATA", "--img-size", "0"], ["train", "DATA", "--plateau-factor", "0"],
    ["train", "DATA", "--weight-decay", "-0.1"], ["train", "DATA", "--warmup-epochs", "-1"],
    ["predict", "RUN", "x.png", "--top-k", "0"], ["predict", "RUN", "x.png", "--batch-size", "0"],
    ["evaluate", "RUN", "--top-k", "0"], ["check", "DATA", "--max-pixels", "0"], ["summary", "cnn", "--num-classes", "0"],
    ["viz", "kernel", "x.png", "--stride", "0"], ["viz", "pool", "x.png", "--size", "0"],
    ["export", "RUN", "--check-images", "0"], ["serve", "RUN", "--port", "0"], ["serve", "RUN", "--workers", "0"],
    ["serve", "RUN", "--max-files", "0"], ["demo", "--epochs", "0"],
])
def test_zero_and_negative_numbers_are_one_line_errors(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1
    assert argv[-2] in err and ("at least" in err or "more than" in err), err


def test_epochs_zero_from_python_is_refused_not_replaced(image_folder, run_cwd):
    with pytest.raises(UserError, match="^epochs must be at least 1, got 0"):  # Python names the argument
        imgclf.train(str(image_folder), epochs=0, **TINY)
    assert not (run_cwd / "runs").exists()


def test_help_shows_no_default_for_flags():
    out = subprocess.run([sys.executable, "-m", "imgclf", "train", "--help"], capture_output=True, text=True).stdout
    assert "(default: True)" not in out and "(default: False)" not in out
    assert "3x that for --mode feature-extract" in " ".join(out.split())


# ---- 6, 7: resolved settings, tiny data sets ---------------------------------------------------------------------
def test_feature_extract_learning_rate_is_resolved_and_documented():
    cfg = TrainConfig(pretrained=True, mode="feature-extract")
    cfg.resolve_mode()
    assert cfg.lr == pytest.approx(9e-3) and cfg.weight_decay == 0.05 and cfg.warmup_epochs == 5.0
    assert cfg.head_epochs == 0 and cfg.workers >= 1


def test_a_tiny_data_set_keeps_every_image_and_says_what_it_changed(image_folder, run_cwd, capsys):
    # 36 images: 32 train, 4 validation; asked for 128 per batch over 2 epochs
    args = [a for a in TINY_ARGS if a not in ("--quiet",)]
    args[args.index("--batch-size") + 1] = "128"
    assert main(["train", str(image_folder), "--epochs", "2", "--name", "tiny", *args]) == 0
    run = run_cwd / "runs" / "tiny"
    log = (run / "train.log").read_text()
    assert "batch size 32 instead of 128: the training split has 32 images" in log
    assert "too few for the onecycle schedule" in log
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["batch_size"] == 32 and cfg["scheduler"] == "none"
    assert all(cfg[k] is not None for k in ("lr", "weight_decay", "warmup_epochs", "head_epochs", "workers"))
    for row in _rows(run / "metrics.csv"):  # every image, every epoch
        assert round(float(row["images_per_s"]) * float(row["time"])) == 32


def test_no_batch_of_a_single_image():
    from imgclf.training.batch_size import fit_batch_size

    cfg = TrainConfig(batch_size=128, epochs=10)
    cfg.resolve_mode()
    messages = []
    fit_batch_size(cfg, 129, messages.append)
    assert cfg.batch_size == 127 and 129 % 127 != 1 and "no batch" in messages[0]


# ---- 5, 12: Keras-style callbacks ---------------------------------------------------------------------------------
def test_keras_callbacks_port_line_by_line(image_folder, run_cwd):
    keras_style = [
        ModelCheckpoint(str(run_cwd / "ckpt" / "model-{epoch:02d}-{val_accuracy:.2f}.h5"), monitor="val_loss",
                        save_best_only=False, save_weights_only=True, mode="min", verbose=1),
        ModelCheckpoint(str(run_cwd / "ckpt" / "best.keras"), monitor="val_loss", save_best_only=True,
                        save_weights_only=True, mode="min", verbose=1),
        ReduceLROnPlateau(monitor="train_loss", factor=0.5, patience=0, min_delta=10.0, cooldown=0, min_lr=1e-6,
                          mode="min", verbose=1),
        EarlyStopping(monitor="val_accuracy", patience=5, min_delta=0, mode="max", restore_best_weights=True),
    ]
    clf = imgclf.train(str(image_folder), epochs=3, name="keras", callbacks=keras_style, **TINY)
    run = clf.run
    # every epoch saved where the user said, as safetensors; the run's own best checkpoint is intact
    saved = sorted(p.name for p in (run_cwd / "ckpt").iterdir())
    assert len([n for n in saved if n.startswith("model-")]) == 3 and "best.safetensors" in saved
    assert all(n.endswith(".safetensors") for n in saved)
    assert kept_epoch(run / "best.safetensors") is not None
    # the plateau callback, not one-cycle, set the learning rate: constant, then halved after epoch 2
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    lrs = [float(r["lr"]) for r in _rows(run / "metrics.csv")]
    assert cfg["scheduler"] == "plateau" and lrs[0] == lrs[1] == pytest.approx(cfg["lr"])
    assert lrs[2] == pytest.approx(cfg["lr"] * 0.5)
    log = (run / "train.log").read_text()
    assert "ReduceLROnPlateau callback was given" in log and "saving model to" in log
    # any weights file of the run loads
    first = next((run_cwd / "ckpt").glob("model-01-*.safetensors"))
    again = imgclf.load(run.path, weights=first)
    state = load_file(str(first))
    assert all(torch.equal(v, state[k]) for k, v in again.model.state_dict().items())


def test_keras_file_names_become_safetensors_and_keep_their_fields():
    names = {"best_model.h5": "best_model.safetensors", "best.weights.h5": "best.weights.safetensors",
             "ck/m-{epoch:02d}-{val_loss:.2f}": "ck/m-{epoch:02d}-{val_loss:.2f}.safetensors"}
    assert {k: str(ModelCheckpoint(k).path) for k in names} == names


def test_early_stopping_restores_the_best_weights_keras_style():
    trainer = FakeTrainer()
    trainer.stop_signal = None
    stopper = EarlyStopping(monitor="val_accuracy", patience=1, mode="max", restore_best_weights=True, verbose=1)
    for epoch, acc in enumerate([0.5, 0.8, 0.7]):
        with torch.no_grad():
            trainer.model.weight.fill_(epoch)
        stopper.on_epoch_end(trainer, epoch, {"val_acc": acc})
    assert trainer.stop_training and stopper.best_epoch == 1
    stopper.on_train_end(trainer)
    assert trainer.model.weight.unique().tolist() == [1.0]


def test_reduce_lr_on_plateau_honours_cooldown_and_min_lr():
    trainer = FakeTrainer()
    plateau = ReduceLROnPlateau("val_loss", factor=0.5, patience=0, cooldown=1, min_lr=0.3, verbose=1)
    plateau.on_train_begin(trainer)
    for epoch in range(6):
        plateau.on_epoch_end(trainer, epoch, {"val_loss": 1.0})
    # 1.0 -> 0.5 (epoch 2), cooldown (epoch 3), -> 0.3, the floor (epoch 4)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.3)
    assert sum("learning rate" in m for m in trainer.messages) == 2


def test_a_user_checkpoint_cannot_take_the_runs_own_file(image_folder, run_cwd):
    with pytest.raises(UserError, match="own best checkpoint"):
        imgclf.train(str(image_folder), epochs=1, name="own",
                     callbacks=[ModelCheckpoint(run_cwd / "runs" / "own" / "best.safetensors")], **TINY)


# ---- 4: predict --------------------------------------------------------------------------------------------------
@pytest.fixture
def pixel_run(tmp_path, run_cwd):
    """A run trained on a Kaggle-style pixel CSV, and a test.csv without labels."""
    rng = np.random.default_rng(0)
    images = np.zeros((60, 28, 28), np.uint8)
    labels = np.arange(60) % 2
    images[labels == 0, :, 10:18] = 255  # a vertical bar
    images[labels == 1, 10:18, :] = 255  # a horizontal bar
    images = np.clip(images + rng.integers(0, 30, images.shape), 0, 255)
    columns = [f"pixel{i}" for i in range(784)]
    train = pd.DataFrame(images.reshape(60, -1), columns=columns)
    train.insert(0, "label", labels)
    train.to_csv(tmp_path / "train.csv", index=False)
    train.drop(columns=["label"]).iloc[:7].to_csv(tmp_path / "test.csv", index=False)
    assert main(["train", str(tmp_path / "train.csv"), "--epochs", "4", "--name", "digits", *TINY_ARGS]) == 0
    return run_cwd / "runs" / "digits", tmp_path


def test_predict_a_pixel_csv_writes_a_kaggle_submission(pixel_run, capsys):
    run, data = pixel_run
    assert main(["predict", str(run), str(data / "test.csv"), "--output", str(data / "submission.csv")]) == 0
    rows = _rows(data / "submission.csv")
    assert list(rows[0]) == ["ImageId", "Label"] and [r["ImageId"] for r in rows] == [str(i) for i in range(1, 8)]
    assert {r["Label"] for r in rows} <= {"0", "1"}
    capsys.readouterr()
    assert main(["predict", str(run), str(data / "train.csv"), "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert "train.csv#60" in out and "accuracy" in out and "labelled row(s)" in out


def test_predict_exits_1_when_nothing_could_be_predicted(pixel_run, capsys):
    run, data = pixel_run
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    capsys.readouterr()
    assert main(["predict", str(run), str(data / "broken.png")]) == 1
    assert "none of the 1 input(s) could be predicted" in capsys.readouterr().err


def test_predict_never_overwrites_an_output_file(pixel_run, capsys):
    run, data = pixel_run
    target = data / "mine.csv"
    target.write_text("precious\n")
    assert main(["predict", str(run), str(data / "test.csv"), "--output", str(target)]) == 2
    assert target.read_text() == "precious\n" and "--overwrite" in capsys.readouterr().err
    assert main(["predict", str(run), str(data / "test.csv"), "--output", str(target), "--overwrite"]) == 0
    assert target.read_text().startswith("ImageId,Label")


def test_evaluate_on_a_pixel_csv_gives_no_torch_warning(pixel_run):
    run, data = pixel_run
    clf = imgclf.load(run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.evaluate(str(data / "train.csv"))
    assert not [w for w in caught if "not writable" in str(w.message)]


# ---- 8: evaluating other data -----------------------------------------------------------------------------------
def test_evaluate_other_data_keeps_the_runs_own_report_and_names_the_label_sets(image_folder, run_cwd, capsys):
    assert main(["train", str(image_folder), "--epochs", "1", "--name", "own", *TINY_ARGS]) == 0
    run = run_cwd / "runs" / "own"
    before = {n: hashlib.sha256((run / n).read_bytes()).hexdigest() for n in ("eval.json", "report.txt")}
    other = write_class_folders(run_cwd / "food-test", 3, classes=("bar", "dark"))
    capsys.readouterr()
    assert main(["evaluate", str(run), str(other)]) == 0
    captured = capsys.readouterr()
    assert "2 of the model's 3 classes" in captured.err and "bright" in captured.err
    assert (run / "eval" / "food-test" / "eval.json").exists()
    assert {n: hashlib.sha256((run / n).read_bytes()).hexdigest() for n in before} == before
    assert main(["evaluate", str(run), str(other)]) == 0  # a second evaluation gets its own folder
    assert (run / "eval" / "food-test-2" / "report.txt").exists()


# ---- 9, 10, 11: files --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "/tmp/abs"])
def test_a_run_name_is_one_folder_name(image_folder, run_cwd, name, capsys):
    assert main(["train", str(image_folder), "--epochs", "1", "--name", name, *TINY_ARGS]) == 2
    assert "single folder name" in capsys.readouterr().err
    assert not (run_cwd / "escape").exists() and not (run_cwd / "runs").exists()


def test_lessons_write_under_runs_numbered_never_over_a_file(tmp_path, run_cwd, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 600), dtype=np.uint8)).save(photo)
    assert main(["viz", "kernel", str(photo)]) == 0
    assert "input 400x600" in capsys.readouterr().out  # the photo's own size, not a thumbnail
    assert main(["viz", "kernel", str(photo), "--max-side", "256"]) == 0
    assert "input 171x256" in capsys.readouterr().out
    assert sorted(p.name for p in (run_cwd / "runs" / "viz").iterdir()) == ["kernel-2.png", "kernel.png"]
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"mine")
    assert main(["viz", "pool", str(photo), "--output", str(mine)]) == 2
    assert mine.read_bytes() == b"mine" and "--overwrite" in capsys.readouterr().err
    assert main(["viz", "pool", str(photo), "--output", str(mine), "--overwrite"]) == 0
    assert main(["viz", "data", str(tmp_path / "shapes")]) == 2  # (no such data) nothing written either
    write_class_folders(tmp_path / "shapes", 4)
    assert main(["viz", "data", str(tmp_path / "shapes")]) == 0
    assert (run_cwd / "runs" / "viz" / "data" / "samples.png").exists()
    assert sorted(p.name for p in run_cwd.iterdir()) == sorted(["runs", "photo.png", "mine.png", "shapes"])


def test_explain_numbers_its_pictures_instead_of_overwriting(image_folder, run_cwd, capsys):
    assert main(["train", str(image_folder), "--epochs", "1", "--name", "x", *TINY_ARGS]) == 0
    image = str(next(image_folder.rglob("*.png")))
    assert main(["explain", "runs/x", image]) == 0
    assert main(["explain", "runs/x", image]) == 0
    names = sorted(p.name for p in (run_cwd / "runs" / "x" / "explain").iterdir())
    assert names == ["000_gradcam-2.png", "000_gradcam.png"]


def test_a_missing_best_checkpoint_falls_back_loudly(image_folder, run_cwd, capsys):
    assert main(["train", str(image_folder), "--epochs", "1", "--name", "m", *TINY_ARGS]) == 0
    (run_cwd / "runs" / "m" / "best.safetensors").unlink()
    capsys.readouterr()
    assert main(["predict", "runs/m", str(image_folder)]) == 0
    err = capsys.readouterr().err
    assert "best.safetensors is missing" in err and "last.pt" in err


# ---- 15, 16: offline hub and small ones ------------------------------------------------------------------------
def test_offline_hub_is_detected_at_once(monkeypatch):
    from imgclf.models import create_model
    from imgclf.models.timm_models import hub_unreachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set.*--weights FILE"):
        create_model("resnet18", 2, pretrained=True)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    assert "127.0.0.1 cannot be reached" in hub_unreachable("resnet18")


def test_a_paths_csv_whose_files_are_all_missing_says_so(tmp_path, capsys):
    (tmp_path / "list.csv").write_text("path,label\n" + "".join(f"gone/{i}.jpg,{i % 2}\n" for i in range(6)))
    assert main(["train", str(tmp_path / "list.csv"), *TINY_ARGS]) == 2
    assert "none of its 6 files exist (e.g. file not found" in capsys.readouterr().err


def test_check_and_train_give_the_same_reason_for_a_truncated_jpeg(tmp_path):
    from imgclf.data.check import inspect_file
    from imgclf.data.decode import BadImage, Preprocess

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(buffer, "JPEG")
    for cut in (200, 600, len(buffer.getvalue()) // 2):
        path = tmp_path / f"cut{cut}.jpg"
        path.write_bytes(buffer.getvalue()[:cut])
        with pytest.raises(BadImage) as train_says:
            Preprocess(3, 32).load(path)
        assert inspect_file(path)["reason"] == str(train_says.value)


def test_positive_suggests_imagenet_synonyms_by_spelling():
    from timm.data import ImageNetInfo

    from imgclf.inference.decide import positive_ids

    info = ImageNetInfo()
    classes = [info.index_to_description(i) for i in range(1000)]
    with pytest.raises(UserError) as wrong:
        positive_ids("hotdgo", classes)
    assert "hotdog, hot dog, red hot" in str(wrong.value) and "lotion" not in str(wrong.value)


def test_summary_of_a_textbook_name_says_what_to_use(capsys):
    assert main(["summary", "inception_v1"]) == 2
    err = capsys.readouterr().err
    assert "not a timm or torchvision architecture" in err and "googlenet" in err and "no such run" not in err


def test_two_class_reports_have_no_top_1_line():
    two = Evaluation(["cat", "dog"], np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    assert "top-1" not in two.report() and "top1_accuracy" not in json.dumps(two.as_dict())
    three = Evaluation(["a", "b", "c"], np.array([0, 1]), np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]))
    assert "top-2 accuracy: 1.0000" in three.report()


def test_a_run_that_never_finished_an_epoch_refuses_to_predict(tmp_path, capsys):
    data = write_class_folders(tmp_path / "data", 6)
    run = imgclf.train(str(data), epochs=1, project=str(tmp_path / "runs"), name="fm1", **TINY).run.path
    image = str(next((data / "bar").iterdir()))
    (run / "best.safetensors").unlink()  # what a stop at step 7 of epoch 1 leaves: last.pt, no epoch in metrics
    metrics = (run / "metrics.csv").read_text()
    (run / "metrics.csv").write_text(metrics.splitlines()[0] + "\n")
    assert main(["predict", str(run), image]) == 2
    err = capsys.readouterr().err
    assert "has no trained epoch yet" in err and "imgclf train --resume --name fm1" in err
    (run / "metrics.csv").write_text(metrics)  # one epoch done: its weights, said plainly
    assert main(["predict", str(run), image]) == 0
    assert "using the weights of epoch 1" in capsys.readouterr().err
    assert main(["info", str(run)]) == 0 and "status: finished" in capsys.readouterr().out


def test_a_run_has_one_writer_at_a_time(tmp_path, capsys):
    data, project = write_class_folders(tmp_path / "data", 6), tmp_path / "runs"
    args = ["--project", str(project), "--name", "race", *TINY_ARGS]
    assert main(["train", str(data), "--epochs", "1", *args]) == 0
    lock = project / "race" / ".lock"
    assert not lock.exists()  # released at the end
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"pid": other.pid, "host": __import__("socket").gethostname()}))
        before = (project / "race" / "metrics.csv").read_text()
        for extra in (["--resume", "--epochs", "2"], ["--exist-ok", "--epochs", "1"]):
            assert main(["train", *([] if "--resume" in extra else [str(data)]), *extra, *args]) == 2
            err = capsys.readouterr().err
            assert f"run race is being trained by process {other.pid}" in err
        assert (project / "race" / "metrics.csv").read_text() == before  # the live run's files untouched
    finally:
        other.kill()
        other.wait()
    assert main(["train", "--resume", "--epochs", "2", *args]) == 0  # a dead holder's lock is taken over
    assert "is gone; taking the run over" in capsys.readouterr().err and not lock.exists()
    assert [r["epoch"] for r in _rows(project / "race" / "metrics.csv")] == ["1", "2"]


def test_two_trainings_started_at_once_with_one_name_do_not_share_a_folder(tmp_path):
    data, project = write_class_folders(tmp_path / "data", 6), tmp_path / "runs"
    command = [sys.executable, "-m", "imgclf", "train", str(data), "--epochs", "1", "--project", str(project),
               "--name", "twin", *TINY_ARGS]
    both = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(300), p.stderr.read()) for p in both]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    assert "already exists" in "".join(err for _, err in results) or \
        "is being trained by process" in "".join(err for _, err in results)
    assert [r["epoch"] for r in _rows(project / "twin" / "metrics.csv")] == ["1"]


def test_resuming_a_finished_run_says_so_and_does_nothing(tmp_path, capsys):
    data, project = write_class_folders(tmp_path / "data", 6), tmp_path / "runs"
    args = ["--project", str(project), "--name", "done", *TINY_ARGS]
    assert main(["train", str(data), "--epochs", "1", *args]) == 0
    files = {p.name: p.stat().st_mtime_ns for p in (project / "done").iterdir()}
    capsys.readouterr()
    args.remove("--quiet")
    assert main(["train", "--resume", *args]) == 0
    out = capsys.readouterr().out
    scheduler = yaml.safe_load((project / "done" / "config.yaml").read_text())["scheduler"]
    further = "start a new run from its weights" if scheduler in ("onecycle", "cosine") else "add --epochs N"
    assert "is finished (1 of 1 epochs)" in out and further in out
    assert {p.name: p.stat().st_mtime_ns for p in (project / "done").iterdir()} == files  # nothing rewritten


def test_the_runs_table_calls_a_validation_score_what_it_is(tmp_path):
    data = write_class_folders(tmp_path / "data", 6)  # no test split: the final evaluation is on validation
    imgclf.train(str(data), epochs=1, project=str(tmp_path / "runs"), name="v", **TINY)
    assert json.loads((tmp_path / "runs" / "v" / "eval.json").read_text())["split"] == "val"
    row = imgclf.runs(str(tmp_path / "runs")).iloc[0]
    assert pd.isna(row["test_acc"]) and row["best"] is not None


def test_a_stopped_predict_says_what_is_on_disk_and_a_file_that_is_no_run_says_what_it_is_not(tmp_path, capsys,
                                                                                                monkeypatch):
    import os
    import signal

    from imgclf.inference.classifier import Classifier

    data = write_class_folders(tmp_path / "data", 6)
    run = imgclf.train(str(data), epochs=1, project=str(tmp_path / "runs"), name="p", **TINY).run.path
    original = Classifier.iter_predict

    def stopped_after_five(self, *args, **kwargs):  # systemd or `timeout` sends SIGTERM half way
        for i, p in enumerate(original(self, *args, **kwargs)):
            if i == 5:
                os.kill(os.getpid(), signal.SIGTERM)
            yield p

    monkeypatch.setattr(Classifier, "iter_predict", stopped_after_five)
    out = tmp_path / "out.csv"
    assert main(["predict", str(run), str(data), "--output", str(out), "--batch-size", "2", "--workers", "0"]) == 130
    err = capsys.readouterr().err
    rows = len(out.read_text().splitlines()) - 1
    assert f"holds {rows} row(s)" in err and "--resume adds the rest" in err and 5 <= rows < 18
    assert signal.getsignal(signal.SIGTERM) is not stopped_after_five  # the handler is put back
    evil = tmp_path / "evil.pt"
    evil.write_bytes(b"not a run")
    assert main(["predict", str(evil), str(out)]) == 2
    assert "is a file, not a run directory" in capsys.readouterr().err


def test_the_python_api_shows_itself(tmp_path):
    assert {"train", "load", "Classifier", "runs", "callbacks"} <= set(dir(imgclf))
    data = write_class_folders(tmp_path / "data", 10)
    clf = imgclf.train(str(data), epochs=2, project=str(tmp_path / "runs"), name="api", limit=18, **TINY)
    text = repr(clf)
    assert text.startswith("Learner(model='cnn:8-m-16-m-fc16'") and "classes=3" and "runs/api" in text
    assert "array" not in repr(clf.evaluation) and repr(clf.evaluation).startswith("Evaluation(accuracy=")
    again = imgclf.load(clf.run.path)
    history = again.history
    assert len(history["val_loss"]) == 2 and len(history["train_loss"]) == 2
    # the loaded run has its final evaluation back, image by image
    assert np.array_equal(again.evaluation.probs, clf.evaluation.probs) and again.evaluation.accuracy == \
        clf.evaluation.accuracy
    # limit=18: a stratified sample of 18 of the 30 training images, 6 per class, before the validation split
    images = json.loads((clf.run / "status.json").read_text())["images"]
    assert images["train"] + images["val"] == 18 and clf.config.limit == 18
    with pytest.raises(UserError, match="epoch \\(did you mean epochs\\?\\)"):
        imgclf.train(str(data), epoch=2, project=str(tmp_path / "runs"), **TINY)
    # Python names the keyword argument, the command line its flag
    with pytest.raises(UserError) as wrong:
        imgclf.train(str(data), project=str(tmp_path / "runs"), **(TINY | {"lr": -1}))
    assert str(wrong.value).startswith("lr must be positive") and wrong.value.cli_message.startswith("--lr must")


def test_a_mistyped_path_fails_before_torch_is_imported(tmp_path):
    (tmp_path / "food").mkdir()
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'timm', 'torchvision'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from imgclf.cli.main import main
assert main(['train', {str(tmp_path / 'fod')!r}]) == 2
assert main(['predict', {str(tmp_path / 'runs' / 'nothere')!r}, 'x.jpg']) == 2
assert main(['info', 'runs/nothere']) == 2
assert main(['viz', 'bottleneck']) == 0  # arithmetic: no torch at all
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "(did you mean food?)" in done.stderr and done.stderr.count("no such run") == 2
    assert "the 1x1 reduction needs 9.7x fewer multiply-adds" in done.stdout


# ---- 5: an input size whose training step cannot fit --------------------------------------------------------------
def test_a_huge_img_size_is_refused_before_anything_is_allocated(tmp_path, capsys, monkeypatch):
    from imgclf.models.memory import step_memory
    from imgclf.training import setup

    data = write_class_folders(tmp_path / "data", per_class=6)
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(data), "--img-size", "100000", "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--img-size 100000: a training step of cnn with batches of" in err and "GB of memory available" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
    fits = int(err.split("--img-size ")[2].split()[0])
    assert 8 <= fits < 100000 and fits % 8 == 0
    # Against a budget of 1 GB: the size offered fits it, and 8 pixels more would not.
    monkeypatch.setattr(setup, "memory_room", lambda device: 10 ** 9)
    assert main(["train", str(data), "--img-size", "1000", "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    fits = int(err.split("--img-size ")[2].split()[0])
    batch = 8  # from 96 px the batch is measured and may be made of accumulated batches: the least of them, 8
    assert step_memory("cnn", 3, 3, fits).total(batch) <= 10 ** 9 < step_memory("cnn", 3, 3, fits + 8).total(batch)


def test_the_step_memory_counts_every_layers_output():
    from imgclf.models.memory import BYTES_PER_PARAMETER, step_memory

    need = step_memory("cnn:8-m", 4, 1, 16)
    # input 1x16x16, conv 8x16x16, batch-norm 8x16x16, ReLU 8x16x16, pool 8x8x8, flatten 512, dense 4: float32
    assert need.per_image == 4 * (256 + 3 * 8 * 256 + 512 + 512 + 4)
    assert need.fixed == (8 * 9 + 16 + 512 * 4 + 4) * BYTES_PER_PARAMETER  # conv (no bias), BN, dense
