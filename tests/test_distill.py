"""imgclf train --teacher (issue 27): the distillation loss, a student that learns what a teacher knows even from
labels that say nothing (the teacher's logits cached, or online on every augmented and mixed batch), a teacher at
another input size, and bad teachers refused in one line."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
import yaml

from imgclf.cli.main import main
from imgclf.data.dataset import Split
from imgclf.data.decode import Preprocess
from imgclf.data.tensors import decode_split
from imgclf.data.transforms import normalize
from imgclf.inference.classifier import Classifier
from imgclf.training.distill import Distillation, OnlineTeacher
from imgclf.training.job import train

from .conftest import TINY, write_class_folders


def test_the_loss_blends_the_labels_and_the_softened_teacher():
    base = torch.nn.CrossEntropyLoss()
    student = torch.randn(8, 3, requires_grad=True)
    labels, teacher = torch.randint(0, 3, (8,)), torch.randn(8, 3) * 3
    assert torch.allclose(Distillation(base, 0.0, 4.0)(student, (labels, teacher)), base(student, labels))
    assert Distillation(base, 1.0, 4.0)(teacher.clone(), (labels, teacher)).abs() < 1e-5  # nothing left to learn
    loss = Distillation(base, 1.0, 2.0)(student, (labels, teacher))
    loss.backward()
    moved = student - 0.5 * student.grad  # one step downhill: the student's answers come closer to the teacher's
    before = torch.softmax(student / 2, 1) - torch.softmax(teacher / 2, 1)
    after = torch.softmax(moved / 2, 1) - torch.softmax(teacher / 2, 1)
    assert after.abs().sum() < before.abs().sum()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd")
    data = write_class_folders(root / "data", 24, seed=1)
    run = train(str(data), epochs=6, img_size=16, project=str(root / "runs"), name="teacher", **TINY)
    return root, data, run


def test_a_student_learns_from_the_teacher_what_its_labels_do_not_say(teacher):
    root, data, run = teacher
    # the same pictures filed under random classes: the labels carry nothing, the teacher everything
    shuffled = root / "shuffled"
    rng = np.random.default_rng(0)
    files = sorted(data.rglob("*.png"))
    classes = sorted(p.name for p in data.iterdir())
    for i, path in enumerate(files):
        target = shuffled / classes[rng.integers(len(classes))] / f"{i:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    # no validation split: its labels are shuffled too, and would pick the epoch that learned least
    options = TINY | {"model": "cnn:8-m-fc16", "epochs": 6, "img_size": 16, "val_split": 0.0, "project": str(root / "runs")}
    alone = train(str(shuffled), name="alone", **options)
    cached = train(str(shuffled), name="cached", teacher=str(run.run.path), kd_weight=1.0, kd_logits="cached",
                   **options)
    # online, the teacher answers each augmented and mixed batch: mixing is allowed
    online = train(str(shuffled), name="online", teacher=str(run.run.path), kd_weight=1.0, mixup=0.2, **options)
    truth = [p.parent.name for p in files]

    def accuracy(clf) -> float:
        return float(np.mean([p.labels[0] == t for p, t in zip(clf.predict(files, top_k=1), truth)]))
    assert accuracy(cached) >= 0.9 and accuracy(online) >= 0.9 and accuracy(alone) < 0.7, \
        (accuracy(cached), accuracy(online), accuracy(alone))
    saved = yaml.safe_load((cached.run / "config.yaml").read_text())
    assert saved["teacher"] == str(run.run.path) and saved["kd_weight"] == 1.0 and saved["kd_logits"] == "cached"
    assert yaml.safe_load((online.run / "config.yaml").read_text())["kd_logits"] == "online"  # auto: augmented
    assert "computed once" in (cached.run / "train.log").read_text()
    assert "answers every training batch" in (online.run / "train.log").read_text()


def test_the_online_teacher_answers_the_students_own_view(teacher):
    root, data, run = teacher
    clf = Classifier.load(str(run.run.path), device="cpu")
    columns = np.arange(len(clf.classes))
    files = sorted(data.rglob("*.png"))
    split = Split(np.array([clf.classes.index(p.parent.name) for p in files]), files)
    images = decode_split(split, Preprocess.of(clf.config), 0, quiet=True)
    with torch.no_grad():
        own = clf.model(normalize(images.x, clf.mean, clf.std))
        # the student normalises by other statistics: the teacher still sees its own input
        view = normalize(images.x, torch.tensor([0.5] * 3), torch.tensor([0.25] * 3))
        online = OnlineTeacher(clf, columns, [0.5] * 3, [0.25] * 3, channels_last=False)(view)
        assert torch.allclose(online, own, atol=1e-4)
        # a student at 12 px in grey: the teacher sees the view resized and in colour, and still knows the classes
        pre = Preprocess.of(clf.config)
        small = decode_split(split, Preprocess(1, 12, pre.resize, pre.crop_pct, pre.interpolation), 0, quiet=True)
        grey = OnlineTeacher(clf, columns, [0.5], [0.25], channels_last=True)(
            normalize(small.x, torch.tensor([0.5]), torch.tensor([0.25])))
    assert grey.shape == own.shape and float((grey.argmax(1) == small.y).float().mean()) >= 0.8


def test_a_teacher_at_another_input_size_sees_its_own_preprocessing(teacher, capsys):
    root, data, run = teacher
    assert main(["train", str(data), "--teacher", str(run.run.path), "--kd-logits", "cached", "--img-size", "12", "--epochs", "1",
                 "--model", "cnn:8-m-fc16", "--batch-size", "8", "--workers", "0", "--no-plots", "--project",
                 str(root / "runs"), "--name", "small"]) == 0
    log = (root / "runs" / "small" / "train.log").read_text()
    # the teacher read the training images at its own 16 px, and knows them: its answers match their labels
    agreement = re.search(r"([\d.]+)% of them its top class = the label", log)
    assert agreement and float(agreement.group(1)) >= 80, log


def test_bad_teachers_are_one_line(teacher, tmp_path, capsys):
    root, data, run = teacher
    other = write_class_folders(tmp_path / "other", 4, classes=("cat", "dog", "bird"))
    base = ["--epochs", "1", "--batch-size", "8", "--workers", "0", "--project", str(tmp_path / "runs")]
    for args, words in (([str(other), "--teacher", str(run.run.path)], "other classes"),
                        ([str(data), "--teacher", str(tmp_path / "nope")], "nope"),
                        ([str(data), "--teacher", str(run.run.path), "--mixup", "0.2", "--kd-logits", "cached"],
                         "--kd-logits online"),
                        ([str(data), "--teacher", str(run.run.path), "--kd-weight", "2"], "--kd-weight")):
        assert main(["train", *args, *base]) == 2, args
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
