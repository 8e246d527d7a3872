"""Imbalanced classes (issue 14, part 2): class weights and the balanced sampler change what the model sees and raise
minority recall on a skewed set; metrics that do not hide the minority; check, the training log and the diagnosis
say so."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.utils.class_weight import compute_class_weight

import imgclf
from imgclf.cli.main import main
from imgclf.data.sampler import BalancedSampler
from imgclf.metrics.classification import confusion_scores
from imgclf.metrics.diagnose import collapse_note, diagnose
from imgclf.training.loss import class_weights


def write_skewed(root: Path, train: dict[str, int], test: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Noise images; the 'square' class has a faint brighter square: learnable, but only if the model looks."""
    rng = np.random.default_rng(seed)
    for split, counts in (("train", train), ("test", test or {})):
        for kind, n in counts.items():
            (root / split / kind).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 120, (16, 16, 3), dtype=np.uint8)
                if kind == "square":
                    img[4:12, 4:12] = np.clip(img[4:12, 4:12].astype(int) + 40, 0, 255)
                Image.fromarray(img).save(root / split / kind / f"{i:03d}.png")
    return root


def test_scores_from_the_confusion_matrix_are_scikit_learns():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 300), rng.integers(0, 3, 300)  # class 3 is never predicted
    confusion = np.zeros((4, 4), int)
    np.add.at(confusion, (y_true, y_pred), 1)
    scores = confusion_scores(confusion)
    assert scores["balanced_acc"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert scores["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert scores["acc"] == pytest.approx((y_true == y_pred).mean())


def test_the_balanced_sampler_draws_every_class_equally_and_shards_one_draw():
    labels = torch.tensor([0] * 950 + [1] * 50)
    sampler = BalancedSampler(labels, seed=3)
    drawn = labels[list(sampler)]
    assert len(drawn) == 1000 and 0.43 < drawn.float().mean() < 0.57  # 5% of the images, half of the draws
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first  # a new draw every epoch, the same one for the same epoch
    sampler.set_epoch(0)
    assert list(sampler) == first
    shards = [list(BalancedSampler(labels, seed=3, replicas=2, rank=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 500
    whole = torch.multinomial(sampler.weights, 1000, replacement=True,
                              generator=torch.Generator().manual_seed(3)).tolist()
    assert shards[0] == whole[0::2] and shards[1] == whole[1::2]


def test_class_weights_are_scikit_learns_balanced_weights():
    labels = np.array([0] * 90 + [2] * 10)  # class 1 has no training image
    weights = class_weights(labels, 3)
    expected = compute_class_weight("balanced", classes=np.array([0, 2]), y=labels)
    assert weights.tolist() == pytest.approx([expected[0], 1.0, expected[1]])


def test_weights_and_the_sampler_raise_minority_recall_on_a_skewed_set(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_skewed(tmp_path / "skew", {"noise": 200, "square": 10}, {"noise": 40, "square": 40})
    recall, logs = {}, {}
    for name, options in (("plain", {}), ("weights", {"class_weights": "balanced"}),
                          ("sampler", {"sampler": "balanced"})):
        clf = imgclf.train(str(data), model="cnn:8-m-16-m-fc16", epochs=3, batch_size=16, quiet=True, workers=0,
                           plots=False, lr=0.003, name=name, **options)
        recall[name] = clf.evaluation.precision_recall()[1][clf.classes.index("square")]
        logs[name] = (tmp_path / "runs" / name / "train.log").read_text()
    assert recall["plain"] < 0.2 and recall["weights"] > 0.8 and recall["sampler"] > 0.8, recall
    assert "imbalanced, 20.0 to 1 ('noise' 180 images, 'square' 9); a model can score well by answering the " \
           "majority class; try --class-weights balanced or --sampler balanced" in logs["plain"]
    assert "acting on it: --class-weights balanced" in logs["weights"] and "class weights in the loss" in \
        logs["weights"]
    assert "answering the most common" in logs["plain"] or "collapsed to one class" in logs["plain"]
    assert "balanced accuracy 0.5000" in logs["plain"]


def test_monitor_macro_f1_and_the_new_validation_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_skewed(tmp_path / "skew", {"noise": 40, "square": 20})
    assert main(["train", str(data / "train"), "--model", "cnn:8-m-16-m-fc16", "--epochs", "2", "--batch-size", "8",
                 "--quiet", "--workers", "0", "--no-plots", "--monitor", "val_macro_f1", "--name", "f1"]) == 0
    header = (tmp_path / "runs" / "f1" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val_balanced_acc", "val_macro_f1"} <= set(header)
    assert "best: val_macro_f1" in (tmp_path / "runs" / "f1" / "train.log").read_text()


def test_check_counts_a_strong_imbalance_as_a_problem(tmp_path, capsys):
    data = write_skewed(tmp_path / "skew", {"noise": 44, "square": 4})
    assert main(["check", str(data / "train"), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "IMBALANCE: the largest class has 11.0 times the images of the smallest" in out
    assert "--class-weights balanced or --sampler balanced" in out and "1 problem(s) found" in out


def test_the_diagnosis_says_when_the_minority_is_missed():
    rows = [{"epoch": e, "train_loss": 0.2, "train_acc": 0.95, "val_loss": 0.25, "val_acc": 0.95,
             "val_balanced_acc": 0.5} for e in (1, 2, 3)]
    text = diagnose(rows).text
    assert "minority classes are mostly missed" in text and "no sign of over-fitting" not in text
    y_true = np.array([0] * 50 + [1] * 50)
    assert "collapsed to one class" in collapse_note(y_true, np.zeros(100, int), ["a", "b"], "test split")
    assert collapse_note(y_true, y_true, ["a", "b"], "test split") is None


def test_the_tuned_threshold_maximises_f1():
    from imgclf.metrics.classification import tune_threshold

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    scores = np.clip(0.3 * y + rng.normal(0.35, 0.2, 300), 0, 1)
    t = tune_threshold(y, scores)
    best = max(f1_score(y, (scores >= c).astype(int)) for c in np.unique(scores))
    assert f1_score(y, (scores >= t).astype(int)) == pytest.approx(best)


def test_a_two_class_run_reports_roc_auc_and_predicts_with_its_tuned_threshold(tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.chdir(tmp_path)
    data = write_skewed(tmp_path / "two", {"noise": 40, "square": 40}, {"noise": 10, "square": 10})
    assert main(["train", str(data), "--model", "cnn:8-m-16-m-fc16", "--epochs", "3", "--batch-size", "8",
                 "--quiet", "--workers", "0", "--no-report", "--name", "b", "--lr", "0.003"]) == 0
    run = tmp_path / "runs" / "b"
    saved = json.loads((run / "threshold.json").read_text())
    assert saved["positive"] == "square" and 0 < saved["threshold"] < 1
    report = json.loads((run / "eval.json").read_text())["binary"]
    assert 0 <= report["roc_auc"] <= 1 and report["threshold"] == saved["threshold"]
    assert "ROC AUC (square positive)" in (run / "report.txt").read_text() and (run / "roc_pr.png").exists()
    (run / "threshold.json").write_text(json.dumps({"positive": "square", "threshold": 1.0}))  # never square
    capsys.readouterr()
    assert main(["predict", str(run), str(data / "test" / "square"), "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    answers = [line.split()[-2] for line in out.splitlines() if line.strip().endswith("%)")]
    assert answers == ["noise"] * 10  # the threshold decides, whatever the probabilities
    assert main(["export", str(run), "--output", str(tmp_path / "b.onnx")]) == 0  # the file carries it
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "b.onnx"), str(data / "test" / "square"), "--top-k", "1"]) == 0
    answers = [line.split()[-2] for line in capsys.readouterr().out.splitlines() if line.strip().endswith("%)")]
    assert answers == ["noise"] * 10
    # A threshold saved for the other class (noise positive, from p(noise) >= 0): every image is noise, and the
    # exported file says which class is positive.
    (run / "threshold.json").write_text(json.dumps({"positive": "noise", "threshold": 0.0}))
    assert main(["export", str(run), "--output", str(tmp_path / "c.onnx")]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "c.onnx"), str(data / "test" / "square"), "--top-k", "1"]) == 0
    answers = [line.split()[-2] for line in capsys.readouterr().out.splitlines() if line.strip().endswith("%)")]
    assert answers == ["noise"] * 10 and imgclf.load(tmp_path / "c.onnx").positive == 0


def test_a_two_class_threshold_is_tuned_only_on_enough_images_and_drawn_toward_half(tmp_path):
    from types import SimpleNamespace

    import torch

    from imgclf.run import RunDir
    from imgclf.task import get_task
    from imgclf.training.thresholds import SHRINK_IMAGES, tune_thresholds

    def tuned(n: int) -> tuple[float, list[str]]:
        rng = np.random.default_rng(0)
        y = np.repeat([0, 1], n)
        p1 = np.clip(np.where(y == 1, 0.97, 0.9) + rng.normal(0, 0.01, 2 * n), 0, 1)  # best cut near 0.93
        clf = SimpleNamespace(classes=["a", "b"], task=get_task("multiclass"), threshold=None,
                              predict_proba=lambda x: torch.tensor(np.stack([1 - p1, p1], 1)))
        said: list[str] = []
        tune_thresholds(clf, RunDir(tmp_path), SimpleNamespace(x=None, y=torch.tensor(y)), None, said.append)
        return clf.threshold, said

    few, said = tuned(7)
    assert few == 0.5 and "too few to tune" in said[0]
    many, said = tuned(200)
    share = 200 / (200 + SHRINK_IMAGES)
    assert 0.5 + 0.4 * share < many < 0.5 + 0.45 * share and "drawn" in said[0]
    assert "'b' is the positive class (the second in alphabetical order; --positive a" in said[0]
    # Every score is over 0.85, so a cut drawn toward 0.5 answers every image 'b': the figure on images the cut was
    # not tuned on says so (0.5), where the split's own accuracy at its own best cut would say 1.0.
    assert "not tuned on (cross-fitted halves of the split): 0.5000" in said[0]


def test_the_positive_class_of_two_is_named_or_read_from_the_names(tmp_path):
    import json
    from types import SimpleNamespace

    import torch

    from imgclf.errors import UserError
    from imgclf.run import RunDir
    from imgclf.task import get_task
    from imgclf.training.thresholds import choose_positive, cross_fitted_accuracy, tune_thresholds

    assert choose_positive(["hot_dog", "not_hot_dog"], None)[0] == 0  # not alphabetical: not_X is the "no"
    assert choose_positive(["cat", "other"], None)[0] == 0 and choose_positive(["no_mask", "mask"], None)[0] == 1
    assert choose_positive(["cat", "dog"], None) == (1, "the second in alphabetical order; --positive cat to "
                                                        "choose the other")
    assert choose_positive(["cat", "dog"], "cat") == (0, "--positive")
    with pytest.raises(UserError, match="'dgo' is not a class of the data .*did you mean dog"):
        choose_positive(["cat", "dog"], "dgo")
    # A hot dog run: the threshold is hot_dog's, saved as such, and decisions follow it.
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 100)  # 0 hot_dog, 1 not_hot_dog
    p_hot = np.clip(np.where(y == 0, 0.8, 0.3) + rng.normal(0, 0.15, 200), 0, 1)
    probs = np.stack([p_hot, 1 - p_hot], 1)
    run = RunDir(tmp_path)
    run.save_labels(["hot_dog", "not_hot_dog"])
    clf = SimpleNamespace(classes=["hot_dog", "not_hot_dog"], task=get_task("multiclass"), threshold=None, positive=1,
                          predict_proba=lambda x: torch.tensor(probs))
    said: list[str] = []
    tune_thresholds(clf, run, SimpleNamespace(x=None, y=torch.tensor(y)), None, said.append)
    saved = json.loads((tmp_path / "threshold.json").read_text())
    assert saved["positive"] == "hot_dog" and clf.positive == 0 == run.positive()
    assert run.threshold() == pytest.approx(1 - saved["threshold"]) == pytest.approx(clf.threshold)
    answers = [get_task("multiclass").answer(p, 2, clf.threshold)[0] for p in probs]
    assert answers == [0 if p >= saved["threshold"] else 1 for p in p_hot]  # hot_dog from p(hot_dog) >= t
    assert "'hot_dog' is the positive class ('not_hot_dog' reads as its negative)" in said[0]
    assert 0.85 < saved["cross_fitted_accuracy"] < 1.0
    noise = np.random.default_rng(2)
    assert abs(cross_fitted_accuracy(noise.integers(0, 2, 4000), noise.random(4000)) - 0.5) < 0.05


def test_a_wrong_positive_class_is_refused_before_the_run_folder_is_made(tmp_path, capsys, monkeypatch):
    from .conftest import write_class_folders

    two = write_class_folders(tmp_path / "two", per_class=4, classes=("hot_dog", "not_hot_dog"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(two), "--positive", "hotdog", "--epochs", "1", "--quiet"]) == 2
    assert "--positive 'hotdog' is not a class of the data (hot_dog, not_hot_dog); did you mean hot_dog?" in \
        capsys.readouterr().err
    three = write_class_folders(tmp_path / "three", per_class=4)
    assert main(["train", str(three), "--positive", "bar", "--epochs", "1", "--quiet"]) == 2
    assert "this run has 3 classes" in capsys.readouterr().err and not (tmp_path / "runs").exists()
