"""The Python API, Keras-style: train, predict, evaluate, load, callbacks and resume."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import imgclf
from imgclf.training.callbacks import Callback

from .conftest import TINY


class Interrupt(Callback):
    """Simulates Ctrl-C at the start of an epoch."""

    def __init__(self, at_epoch):
        self.at_epoch = at_epoch

    def on_epoch_begin(self, trainer, epoch):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt


class Recorder(Callback):
    def __init__(self):
        self.epochs, self.steps = [], []

    def on_batch_end(self, trainer, step, logs):
        self.steps.append(step)
        assert 0 <= logs["acc"] <= 1 and logs["loss"] > 0

    def on_epoch_end(self, trainer, epoch, logs):
        self.epochs.append(epoch)


def test_train_predict_evaluate_load(image_folder, run_cwd):
    recorder = Recorder()
    clf = imgclf.train(str(image_folder), epochs=3, name="api", callbacks=[recorder], **TINY)
    assert recorder.epochs == [0, 1, 2] and recorder.steps[0] == 1  # the first step is heard at once
    assert isinstance(clf, imgclf.Classifier) and clf.classes == ["bar", "bright", "dark"]
    assert clf.evaluation is not None and 0 <= clf.evaluation.accuracy <= 1

    path = image_folder / "bright" / "000.png"
    from_file = clf.predict([str(path)], top_k=2)[0]
    from_pil = clf.predict(Image.open(path), top_k=2)[0]
    from_array = clf.predict(np.asarray(Image.open(path)), top_k=2)[0]
    assert from_file.labels == from_pil.labels == from_array.labels and len(from_file.labels) == 2
    assert from_file.probs == pytest.approx(from_pil.probs)
    assert sum(clf.predict([str(image_folder)], top_k=1)[i].label == p for i, p in
               enumerate(["bar"] * 12 + ["bright"] * 12 + ["dark"] * 12)) >= 30

    result = clf.evaluate(str(image_folder))
    assert result.accuracy >= 0.8 and result.confusion.sum() == 36

    again = imgclf.load(run_cwd / "runs" / "api")
    x = torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)
    assert torch.allclose(again.predict_proba(x), clf.predict_proba(x))


def test_resume_continues_exactly(image_folder, run_cwd):
    options = dict(TINY, augment="none", scheduler="cosine", deterministic=True)
    imgclf.train(str(image_folder), epochs=4, name="whole", **options)
    with pytest.raises(KeyboardInterrupt):
        imgclf.train(str(image_folder), epochs=4, name="cut", callbacks=[Interrupt(at_epoch=2)], **options)
    assert torch.load(run_cwd / "runs" / "cut" / "last.pt", weights_only=True)["epoch"] == 2
    from imgclf.cli.main import main

    assert main(["train", "--resume", "--name", "cut", "--quiet"]) == 0

    whole = torch.load(run_cwd / "runs" / "whole" / "last.pt", weights_only=True)
    cut = torch.load(run_cwd / "runs" / "cut" / "last.pt", weights_only=True)
    assert cut["epoch"] == 4
    for key, value in whole["model"].items():
        assert torch.equal(value, cut["model"][key]), key
    rows = (run_cwd / "runs" / "cut" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert rows[1:] != [] and rows[-1].split(",")[1] == (run_cwd / "runs" / "whole" / "metrics.csv") \
        .read_text().splitlines()[-1].split(",")[1]


def test_resume_without_checkpoint_is_a_user_error(run_cwd):
    with pytest.raises(imgclf.UserError, match="no run with a checkpoint"):
        imgclf.train(resume=True)


def test_early_stopping_and_plateau_from_options(image_folder, run_cwd):
    clf = imgclf.train(str(image_folder), epochs=30, name="es", patience=2, min_delta=0.5,
                       scheduler="plateau", **TINY)
    rows = clf.run.metrics()
    assert len(rows) == 3  # epoch 1 sets the best; two epochs without a 0.5 gain stop training
    assert "early stopping" in (clf.run / "train.log").read_text()


def test_best_weights_carry_metadata(image_folder, run_cwd):
    clf = imgclf.train(str(image_folder), epochs=1, name="meta", **TINY)
    from safetensors import safe_open

    with safe_open(str(clf.run / "best.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["model"] == "cnn:8-m-16-m-fc16" and json.loads(meta["classes"]) == ["bar", "bright", "dark"] and meta["epoch"] == "1"
    assert set(load_file(str(clf.run / "best.safetensors"))) == set(clf.model.state_dict())


def test_a_user_callback_replaces_the_default_of_its_class(image_folder, run_cwd):
    from imgclf.training.callbacks import EarlyStopping

    clf = imgclf.train(str(image_folder), epochs=30, name="mine", patience=20,
                       callbacks=[EarlyStopping("val_acc", patience=1, min_delta=0.9)], **TINY)
    assert len(clf.run.metrics()) == 2  # the user's patience of 1, not the default one of 20


def test_diverging_loss_stops_with_a_hint(image_folder, run_cwd):
    options = dict(TINY, optimizer="sgd", scheduler="none", label_smoothing=0.0)
    options["lr"] = 1e12
    with pytest.raises(imgclf.UserError, match="try a lower --lr"):
        imgclf.train(str(image_folder), epochs=3, name="nan", **options)


def test_config_yaml_holds_every_value_the_run_used(image_folder, run_cwd):
    """The choices made for the user (batch size that fits, schedule, normalisation, task, monitor, input size) are
    settled before config.yaml is written, so the file describes the run that trained."""
    import yaml

    seen = {}

    class Record(Callback):
        def on_train_begin(self, trainer):
            seen.update(batch=trainer.train_loader.batch_size, epochs=trainer.epochs,
                        lr=trainer.optimizer.param_groups[0]["lr"], monitor=trainer.monitor)

    clf = imgclf.train(str(image_folder), epochs=1, callbacks=[Record()], **(TINY | {"batch_size": 500}))
    saved = yaml.safe_load((clf.run.path / "config.yaml").read_text())
    assert saved["batch_size"] == seen["batch"] < 500 and saved["epochs"] == seen["epochs"] == 1
    assert saved["scheduler"] == "none" and saved["lr"] == pytest.approx(seen["lr"])  # too few steps to schedule
    assert saved["task"] == "multiclass" and saved["monitor"] == seen["monitor"] == "val_acc"
    assert saved["img_size"] == 16 and saved["channels"] == 3 and len(saved["mean"]) == 3
    assert clf.config.batch_size == saved["batch_size"]


def test_a_learner_trains_further_and_shows_its_results(image_folder, run_cwd):
    import sys

    clf = imgclf.train(str(image_folder), epochs=1, name="first", **TINY)
    assert isinstance(clf, imgclf.Learner)
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    assert clf.fit(2) is clf  # Keras' second fit, fastai's way: a new run from these weights
    assert clf.run.name == "first-more" and len(clf.run.metrics()) == 2 and clf.evaluation is not None
    assert clf.config.weights.endswith("first/best.safetensors") and clf.config.model == TINY["model"]
    assert any(not torch.equal(before[k], v) for k, v in clf.model.state_dict().items())
    assert len(imgclf.load("runs/first").run.metrics()) == 1  # the run it came from is left as it was
    again = imgclf.load("runs/first")
    assert isinstance(again, imgclf.Learner) and again.fit(1).run.name == "first-more2"
    path = clf.show_results(4)
    assert path == clf.run / "results.png" and path.stat().st_size > 1000
    assert clf.show_results(3, worst=True, save_to="worst.png").name == "worst.png"
    # loading a run to predict imports neither the training job nor timm
    code = ("import sys, imgclf; c = imgclf.load('runs/first'); assert type(c).__name__ == 'Learner'; "
            "assert 'imgclf.training.job' not in sys.modules and 'timm' not in sys.modules, 'heavy'")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_a_cnn_run_imports_neither_timm_nor_torchvision(image_folder, run_cwd):
    # timm imports torchvision's model zoo: seconds before the first step that a cnn run has no use for
    code = (f"import sys, imgclf; imgclf.train({str(image_folder)!r}, epochs=2, quiet=True, workers=0, "
            f"model={TINY['model']!r}, batch_size=8, report=False); "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {{'timm', 'torchvision'}}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (run_cwd / "runs").is_dir() and list((run_cwd / "runs").glob("*/samples.png"))  # the overview was drawn


class _NoFiguresYet(Callback):
    """Before training's first step the data overview has not begun: its figures would delay that step."""

    def on_train_begin(self, trainer):
        self.before = sorted(p.name for p in trainer.checkpoint_path.parent.glob("*.png"))


def test_the_data_overview_is_drawn_once_training_has_begun(image_folder, run_cwd):
    early = _NoFiguresYet()
    clf = imgclf.train(str(image_folder), epochs=1, name="late", callbacks=[early], **{**TINY, "plots": True})
    assert early.before == [] and (clf.run.path / "samples.png").exists()
