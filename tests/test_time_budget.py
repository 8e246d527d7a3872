"""--time: durations read the way people write them, the epochs planned from the measured step (the schedule and its
warm-up with them), --epochs as a cap, a budget too small refused before training, and the stop after an epoch
that would overrun."""
from __future__ import annotations

import math
import time
from types import SimpleNamespace

import pytest
import torch
import yaml

from imgclf import train
from imgclf.callbacks import Callback
from imgclf.cli.main import main
from imgclf.config import TrainConfig, duration, parse_duration
from imgclf.errors import UserError
from imgclf.training import time_budget
from imgclf.training.optim import StepSchedule
from imgclf.training.time_budget import TimeLimit

from .conftest import TINY, write_class_folders


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("1.5h", 5400), ("600", 600), (45, 45),
                                           (" 2 min ", 120)])
def test_durations_are_read_as_people_write_them(text, seconds):
    assert parse_duration(text) == seconds


def test_durations_are_written_back_short():
    assert (duration(600), duration(90), duration(5400), duration(61)) == ("10m", "90s", "1.5h", "61s")


@pytest.mark.parametrize("text", ["10x", "ten minutes", "-5m", "0"])
def test_a_duration_that_is_not_one_is_a_one_line_error(text):
    with pytest.raises(UserError) as error:
        parse_duration(text)
    assert error.value.cli_message.startswith("--time") and "\n" not in error.value.cli_message


@pytest.fixture
def data(tmp_path):
    return write_class_folders(tmp_path / "data", 40)  # 120 images: 108 train, 12 val


def _timed(monkeypatch, step_s: float, image_s: float) -> None:
    monkeypatch.setattr(time_budget, "time_steps", lambda *args: (step_s, image_s))


def test_the_epochs_and_the_schedule_are_planned_for_the_budget(data, tmp_path, monkeypatch):
    # 108 training images in batches of 8: 14 steps of 0.5 s, x1.1 for the rest of an epoch, + 12 validation
    # images at 0.01 s: 7.82 s an epoch; the end: (2 x 12) x 0.01 + 3 s = 3.24 s
    _timed(monkeypatch, 0.5, 0.01)
    monkeypatch.setattr(TimeLimit, "_replan", lambda *args: None)  # the plan before training; its correction below
    clf = train(str(data), project=str(tmp_path / "runs"), name="t", time="60s", **TINY)
    saved = yaml.safe_load((clf.run / "config.yaml").read_text())
    assert saved["time"] == 60.0
    planned = math.floor((60 - 3.24) / 7.82)  # less the few seconds spent preparing
    assert planned - 1 <= saved["epochs"] <= planned
    assert saved["warmup_epochs"] == saved["epochs"] / 4  # one-cycle's warm-up follows the planned epochs
    assert len(clf.run.metrics()) == saved["epochs"]
    assert "time budget 1m" in (clf.run / "train.log").read_text()


def test_epochs_given_too_cap_the_plan(data, tmp_path, monkeypatch):
    _timed(monkeypatch, 0.01, 0.001)
    clf = train(str(data), epochs=2, project=str(tmp_path / "runs"), name="t", time="1h", **TINY)
    assert clf.config.epochs == 2 and "(--epochs 2 decides)" in (clf.run / "train.log").read_text()


def test_a_budget_too_small_for_one_epoch_is_refused_before_training(data, tmp_path, monkeypatch, capsys):
    _timed(monkeypatch, 5.0, 0.01)  # an epoch: 14 steps of 5 s
    code = main(["train", str(data), "--time", "30s", "--project", str(tmp_path / "runs"),
                 "--model", "cnn:8-m-16-m-fc16", "--batch-size", "8", "--quiet", "--no-plots"])
    err = capsys.readouterr().err
    assert code == 2 and "one epoch of 108 images takes about 77 s" in err and "give --time" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_an_epoch_that_would_end_past_the_budget_is_not_started():
    logged = []
    trainer = SimpleNamespace(epochs=10, stop_training=False, log=logged.append)
    limit = TimeLimit(deadline=time.time() + 50, finish_s=5)
    limit.on_epoch_begin(trainer, 0)
    limit.on_epoch_end(trainer, 0, {})
    assert not trainer.stop_training  # an instant epoch: room for many more
    limit.epoch_began -= 60  # an epoch of a minute: another and the end would pass the deadline
    limit.on_epoch_end(trainer, 1, {})
    assert trainer.stop_training and "stopping after epoch 2 of 10" in logged[0]


class _Seen(Callback):
    """What the trainer held at the end: its epochs and its last learning rate."""

    def on_train_end(self, trainer) -> None:
        self.epochs, self.lr = trainer.epochs, trainer.optimizer.param_groups[0]["lr"]


def test_the_plan_is_corrected_from_the_first_epochs_real_time(data, tmp_path, monkeypatch):
    # measured before training: 7.82 s an epoch, so 3 fit in 30 s; the real epochs of these tiny images take a
    # fraction of a second, so after the first the plan grows to the 5 that --epochs allows, the schedule with it
    _timed(monkeypatch, 0.5, 0.01)
    seen = _Seen()
    clf = train(str(data), epochs=5, project=str(tmp_path / "runs"), name="t", time="30s", callbacks=[seen], **TINY)
    log = (clf.run / "train.log").read_text()
    assert "3 epoch(s) (the budget decides)" in log and "so 5 epochs fit instead of 3" in log, log
    saved = yaml.safe_load((clf.run / "config.yaml").read_text())
    assert saved["epochs"] == 5 and saved["warmup_epochs"] == 5 / 4  # a resume rebuilds the corrected schedule
    assert len(clf.run.metrics()) == 5 and seen.epochs == 5
    assert seen.lr < 0.01 * 1e-3  # one-cycle annealed to its end over the 5 epochs, not cut off


@pytest.mark.parametrize("kind", ["onecycle", "cosine"])
def test_a_replanned_schedule_continues_as_if_planned_so_from_the_start(kind):
    def optimizer():
        return torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": 0.1},
                                {"params": [torch.zeros(1, requires_grad=True)], "lr": 0.02}])  # two peaks

    def steps(schedule: StepSchedule, first: int, last: int) -> None:
        for step in range(first, last + 1):
            schedule.optimizer.step()
            schedule.step(step)

    stretched, planned = StepSchedule(optimizer(), kind, 100, 25), StepSchedule(optimizer(), kind, 200, 50)
    steps(stretched, 1, 10)
    stretched.replan(200, 50, done=10)
    steps(planned, 1, 10)
    for schedule in (stretched, planned):
        steps(schedule, 11, 12)
    rates = [[g["lr"] for g in s.optimizer.param_groups] for s in (stretched, planned)]
    assert rates[0] == pytest.approx(rates[1]) and rates[0][0] > 0.1 / 25
    assert stretched.peaks == [0.1, 0.02]  # each group's own peak, not the rate it had when replanned


def _timed_trainer(epochs: int, steps_per_epoch: int, done: int) -> SimpleNamespace:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    schedule = StepSchedule(optimizer, "onecycle", epochs * steps_per_epoch, epochs * steps_per_epoch // 4)
    for step in range(1, done * steps_per_epoch + 1):
        optimizer.step()
        schedule.step(step)
    return SimpleNamespace(epochs=epochs, stop_training=False, log=print, schedule=schedule, optimizer=optimizer,
                           global_step=done * steps_per_epoch)


def test_past_the_first_quarter_the_plan_only_shrinks_when_the_machine_slows():
    cfg = TrainConfig(epochs=10, warmup_epochs=2.5)
    trainer = _timed_trainer(10, 20, done=6)
    limit = TimeLimit(time.time() + 50, finish_s=0, cfg=cfg)
    limit.times = [10.0, 20.0, 20.0, 20.0, 20.0]  # the machine slowed: its epochs take 20 s now
    limit.on_epoch_begin(trainer, 5)
    limit.epoch_began -= 20  # and this one too: the 4 epochs planned would end past the 50 s left
    limit.on_epoch_end(trainer, 5, {})
    assert trainer.epochs == cfg.epochs == 8 and not trainer.stop_training  # 6 done + 2 that fit 50 s at 20 s
    assert trainer.schedule.impl.total_steps == 160  # the annealing shrunk to end with the run
    fast = _timed_trainer(10, 20, done=6)
    limit = TimeLimit(time.time() + 500, finish_s=0, cfg=TrainConfig(epochs=10, warmup_epochs=2.5))
    limit.times = [10.0] * 5
    limit.on_epoch_begin(fast, 5)
    limit.on_epoch_end(fast, 5, {})
    assert fast.epochs == 10  # room for 50 more, but a schedule annealing is not stretched again
