"""k-fold cross-validation (issue 14, part 3): stratified folds, a run per fold, the summary and out-of-fold
predictions, the folds as an ensemble, and a cross-validation that resumes at the fold it was in."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from imgclf.cli.main import main
from imgclf.data.split import fold_indices
from imgclf.errors import UserError
from imgclf.inference.load import load_predictor

from .conftest import TINY_ARGS, write_class_folders


def test_folds_are_stratified_and_cover_every_image_once():
    labels = np.array([0] * 30 + [1] * 15 + [2] * 6)
    folds = fold_indices(labels, 3, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(labels)))
    assert all(np.bincount(labels[f], minlength=3).tolist() == [10, 5, 2] for f in folds)
    with pytest.raises(UserError, match="smallest class has only 6 image"):
        fold_indices(labels, 7, seed=0)


@pytest.fixture
def cv_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "shapes"
    write_class_folders(data / "train", 9, seed=1)
    write_class_folders(data / "test", 4, seed=2)
    assert main(["cv", str(data), "--folds", "3", "--epochs", "3", "--name", "cv", "--lr", "0.01", *TINY_ARGS]) == 0
    return tmp_path / "runs" / "cv", data


def test_a_run_per_fold_a_summary_and_out_of_fold_predictions(cv_run):
    run, data = cv_run
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["fold-0", "fold-1", "fold-2"]
    assert all((run / f"fold-{k}" / "best.safetensors").exists() for k in range(3))
    assert "fold: 1" in (run / "fold-1" / "config.yaml").read_text()
    with (run / "oof.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["image"] for r in rows) == sorted(str(p) for p in (data / "train").glob("*/*.png"))
    assert {r["fold"] for r in rows} == {"0", "1", "2"}
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["folds"]) == 3 and 0.0 <= summary["accuracy"]["std"] <= 1.0
    assert summary["test"]["images"] == 12 and "ensemble" in summary["test"]
    assert "mean +- std: accuracy" in (run / "summary.txt").read_text()


def test_the_ensemble_predicts_the_mean_of_the_folds(cv_run):
    run, data = cv_run
    ensemble = load_predictor(run)
    x = np.stack([ensemble.pixels(p) for p in sorted((data / "test").glob("*/*.png"))])
    expected = np.mean([m.proba(x) for m in ensemble.members], axis=0)
    assert np.allclose(ensemble.proba(x), expected) and len(ensemble.members) == 3
    assert main(["evaluate", str(run)]) == 0  # the held-out test split, scored by the ensemble
    assert json.loads((run / "eval.json").read_text())["images"] == 12
    assert main(["predict", str(run), str(data / "test" / "bar")]) == 0


def test_an_interrupted_cross_validation_resumes_at_its_fold(cv_run, capsys):
    run, _ = cv_run
    kept = (run / "fold-0" / "best.safetensors").stat().st_mtime_ns
    (run / "fold-2" / "eval.json").unlink()  # fold 2 stopped before its end
    (run / "fold-2" / "best.safetensors").unlink()
    assert main(["cv", "--resume", "--name", "cv", "--quiet"]) == 0
    assert (run / "fold-0" / "best.safetensors").stat().st_mtime_ns == kept  # done folds are not trained again
    assert (run / "fold-2" / "eval.json").exists()


def test_cross_validation_refuses_bad_folds(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_class_folders(tmp_path / "few", 3)
    assert main(["cv", str(tmp_path / "few"), "--folds", "4", *TINY_ARGS]) == 2
    assert "--folds 4: the smallest class has only 3 image(s)" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(SystemExit):
        main(["cv", str(tmp_path / "few"), "--folds", "1"])


def test_cv_and_lr_find_say_they_run_in_one_process(tmp_path, capsys):
    for command in ("cv", "lr-find"):
        assert main([command, str(tmp_path), "--devices", "2"]) == 2
        assert "runs in one process; --devices is for imgclf train" in capsys.readouterr().err
