"""``imgclf tune``: Optuna trials as run directories, a study in SQLite that a second call resumes, pruning that
stops a trial clearly behind the others, and clear errors for a bad search space."""
from __future__ import annotations

import json

import optuna
import yaml

from imgclf.cli.main import main
from imgclf.experiments.tune import Pruning, train_command, with_dropout

from .conftest import TINY_ARGS, write_multilabel_csv


def test_three_trials_then_a_resumed_search_adds_new_ones(split_folder, run_cwd, capsys):
    args = ["tune", str(split_folder), "--epochs", "2", "--space", "lr,wd,dropout", "--name", "search",
            *(a for a in TINY_ARGS if a != "--quiet"), "--model", "cnn:8-m-d0.2-16-m-fc16"]
    assert main([*args, "--trials", "3"]) == 0
    out = capsys.readouterr().out
    folder = run_cwd / "runs" / "search"
    assert sorted(p.name for p in folder.glob("trial-*")) == ["trial-000", "trial-001", "trial-002"]
    assert all((folder / f"trial-{i:03d}" / "config.yaml").exists() for i in range(3))
    best = json.loads((folder / "best.json").read_text())
    assert best["command"].startswith(f"imgclf train {split_folder}") and "--lr" in best["command"]
    assert best["command"] in out and (folder / "history.png").exists() and (folder / "importances.png").exists()

    assert main(["tune", "--resume", "--name", "search", "--trials", "5", "--quiet"]) == 0
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{folder / 'study.db'}")
    assert len(study.trials) == 5
    points = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(points)) == 5  # no trial repeated another
    trained = yaml.safe_load((folder / "trial-004" / "config.yaml").read_text())
    # the search's own data and options, not the resuming command line's defaults
    assert trained["data"] == str(split_folder) and trained["epochs"] == 2 and trained["batch_size"] == 8


def test_pruning_stops_a_trial_behind_the_others():
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    for _ in range(2):  # two good trials
        trial = study.ask()
        for epoch in range(4):
            trial.report(0.9, epoch)
        study.tell(trial, 0.9)

    class Trainer:
        stop_training, epochs = False, 4
        log = staticmethod(print)

    trainer, pruning = Trainer(), Pruning(study.ask(), "val_acc")
    pruning.on_epoch_end(trainer, 0, {"val_acc": 0.2})
    assert not trainer.stop_training  # warm-up: the first epoch is never judged
    pruning.on_epoch_end(trainer, 1, {"val_acc": 0.2})
    assert trainer.stop_training and pruning.pruned_at == 2
    last, late = Trainer(), Pruning(study.ask(), "val_acc")
    late.on_epoch_end(last, 3, {"val_acc": 0.2})
    assert not last.stop_training and late.pruned_at is None  # at the last epoch stopping saves nothing


def test_bad_search_spaces_are_one_line_errors(split_folder, run_cwd, capsys):
    assert main(["tune", str(split_folder), "--space", ",", *TINY_ARGS]) == 2
    assert "--space is empty" in capsys.readouterr().err
    assert main(["tune", str(split_folder), "--space", "lr,momentum_of_doom", *TINY_ARGS]) == 2
    assert "'momentum_of_doom' is not a parameter" in capsys.readouterr().err
    assert main(["tune", str(split_folder), "--space", "dropout", *TINY_ARGS]) == 2  # cnn:8-m-16-m-fc16 has none
    assert "no dropout layer" in capsys.readouterr().err
    assert main(["tune", "--resume", "--name", "nothing"]) == 2
    assert "no search to continue" in capsys.readouterr().err
    assert not (run_cwd / "runs").exists() or not any((run_cwd / "runs").iterdir())


def test_dropout_rewrites_the_cnn_spec_and_the_command_reproduces_settings():
    assert with_dropout("cnn:32-m-d0.25-64-m-fc128-d0.5", 0.1) == "cnn:32-m-d0.1-64-m-fc128-d0.1"
    command = train_command("data", "cnn:8-m-fc16", 5, {"lr": 0.0123456, "plots": False, "flip": False,
                                                         "batch_size": 128, "quiet": True})
    assert command == "imgclf train data --model cnn:8-m-fc16 --epochs 5 --lr 0.01235 --no-plots --no-flip"


def test_ctrl_c_names_the_command_that_resumes_the_search(split_folder, run_cwd, monkeypatch, capsys):
    import imgclf.training.job
    from imgclf.errors import Interrupted

    def stopped(*args, **kwargs):
        raise Interrupted("stopped by SIGINT after epoch 1", 130)
    monkeypatch.setattr(imgclf.training.job, "train", stopped)
    assert main(["tune", str(split_folder), "--name", "cut", "--space", "lr", *TINY_ARGS]) == 130
    assert "imgclf tune --resume --name cut" in capsys.readouterr().err
    study = optuna.load_study(study_name="cut", storage=f"sqlite:///{run_cwd / 'runs' / 'cut' / 'study.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]  # resumed as a new trial, not redone


def test_an_auto_detected_multi_label_csv_is_tuned_on_map(tmp_path, run_cwd):
    csv_path = write_multilabel_csv(tmp_path / "bars", n=48)
    args = ["tune", str(csv_path), "--epochs", "1", "--space", "lr", "--name", "labels", "--trials", "1",
            *TINY_ARGS]
    assert main(args) == 0
    best = json.loads((run_cwd / "runs" / "labels" / "best.json").read_text())
    assert best["monitor"] == "val_map"  # the task decides the monitor, not the binary accuracy of "auto"
    trained = yaml.safe_load((run_cwd / "runs" / "labels" / "trial-000" / "config.yaml").read_text())
    assert trained["task"] == "multilabel"
