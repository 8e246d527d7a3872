import csv

import pytest
import torch
from safetensors.torch import load_file

from imgclf.training.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau

from .conftest import FakeTrainer


@pytest.fixture
def trainer():
    t = FakeTrainer()
    t.weights_metadata = {}
    return t


def run_epochs(callback, trainer, values, key):
    callback.on_train_begin(trainer)
    for epoch, value in enumerate(values):
        callback.on_epoch_end(trainer, epoch, {key: value})
        if trainer.stop_training:
            return epoch
    return None


def test_early_stopping_after_patience_epochs_without_improvement(trainer):
    stopper = EarlyStopping("val_loss", patience=2, min_delta=0.01)
    stopped_at = run_epochs(stopper, trainer, [1.0, 0.8, 0.795, 0.81, 0.7], "val_loss")
    assert stopped_at == 3 and stopper.best == 0.8 and stopper.best_epoch == 1
    assert "has not improved for 2 epoch(s)" in trainer.messages[-1]


def test_early_stopping_state_survives_resume(trainer):
    stopper = EarlyStopping("val_acc", patience=3)
    run_epochs(stopper, trainer, [0.5, 0.6, 0.55], "val_acc")
    again = EarlyStopping("val_acc", patience=3)
    again.load_state_dict(stopper.state_dict())
    assert (again.best, again.best_epoch, again.wait) == (0.6, 1, 1)


def test_checkpoint_keeps_only_the_best_weights(trainer, tmp_path):
    path = tmp_path / "best.safetensors"
    checkpoint = ModelCheckpoint(path, "val_acc", save_best_only=True)
    for epoch, acc in enumerate([0.5, 0.7, 0.6]):
        with torch.no_grad():
            trainer.model.weight.fill_(epoch)
        checkpoint.on_epoch_end(trainer, epoch, {"val_acc": acc})
    assert [m["epoch"] for m in trainer.saved] == ["1", "2"]
    assert load_file(str(path))["weight"].unique().tolist() == [1.0]
    assert not path.with_name(path.name + ".tmp").exists()


def keras_plateau(values, lr, factor, patience, min_delta, cooldown, min_lr):
    """Keras 3's ReduceLROnPlateau.on_epoch_end (mode min), transcribed: the learning rate after each epoch."""
    best, wait, cooldown_counter, out = float("inf"), 0, 0, []
    for current in values:
        if cooldown_counter > 0:
            cooldown_counter -= 1
            wait = 0
        if current < best - min_delta:
            best, wait = current, 0
        elif not cooldown_counter > 0:
            wait += 1
            if wait >= patience:
                if lr > min_lr:
                    lr = max(lr * factor, min_lr)
                    cooldown_counter, wait = cooldown, 0
        out.append(lr)
    return out


def test_reduce_lr_on_plateau_falls_after_patience_bad_epochs_as_in_keras(trainer):
    plateau = ReduceLROnPlateau("val_loss", factor=0.5, patience=1, verbose=1)
    run_epochs(plateau, trainer, [1.0, 1.0], "val_loss")
    assert trainer.optimizer.param_groups[0]["lr"] == 0.5  # one bad epoch with patience=1 (torch waits for two)


@pytest.mark.parametrize("patience,cooldown,min_delta,min_lr", [(0, 0, 0.0, 0.0), (1, 0, 1e-4, 0.0), (2, 1, 0.01, 0.0),
                                                                 (3, 2, 0.0, 0.003), (1, 3, 0.05, 0.001)])
def test_reduce_lr_on_plateau_matches_keras_epoch_by_epoch(patience, cooldown, min_delta, min_lr):
    values = [1.0 - 0.3 * (i % 7 == 0) * (i / 40) + 0.02 * ((i * 37) % 11) / 11 for i in range(40)]
    trainer = FakeTrainer()
    plateau = ReduceLROnPlateau("val_loss", factor=0.5, patience=patience, min_delta=min_delta, cooldown=cooldown,
                                min_lr=min_lr)
    plateau.on_train_begin(trainer)
    lr0, seen = trainer.optimizer.param_groups[0]["lr"], []
    for epoch, value in enumerate(values):
        plateau.on_epoch_end(trainer, epoch, {"val_loss": value})
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        if epoch == 20:  # a resume half way changes nothing
            state, plateau = plateau.state_dict(), ReduceLROnPlateau("val_loss", factor=0.5, patience=patience,
                                                                     min_delta=min_delta, cooldown=cooldown,
                                                                     min_lr=min_lr)
            plateau.load_state_dict(state)
    assert seen == pytest.approx(keras_plateau(values, lr0, 0.5, patience, min_delta, cooldown, min_lr))


def test_early_stopping_never_stops_on_the_first_epoch_as_in_keras(trainer):
    stopper = EarlyStopping("val_loss", patience=0, baseline=0.5)
    assert run_epochs(stopper, trainer, [0.9, 0.9], "val_loss") == 1


def test_missing_monitor_names_what_is_logged(trainer):
    with pytest.raises(KeyError, match="val_acc"):
        EarlyStopping("val_acc").on_epoch_end(trainer, 0, {"train_loss": 1.0})


def test_csv_logger_drops_rows_that_will_be_rerun(trainer, tmp_path):
    path = tmp_path / "metrics.csv"
    logger = CSVLogger(path)
    logger.on_train_begin(trainer)
    for epoch in range(3):
        logger.on_epoch_end(trainer, epoch, {"train_loss": 1.0 / (epoch + 1), "lr": 0.1})
    trainer.start_epoch = 2
    CSVLogger(path).on_train_begin(trainer)
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[1]["train_loss"] == "0.5"


def test_without_a_terminal_the_progress_bar_prints_a_line_every_few_seconds(trainer):
    from imgclf.training.callbacks import ProgressBar

    trainer.epochs, trainer.steps_per_epoch = 3, 50
    bar = ProgressBar(every_s=0.0)  # pytest captures the output: no terminal, the bar is off
    bar.on_epoch_begin(trainer, 1)
    for step in range(1, 51):
        bar.on_batch_end(trainer, step, {"loss": 0.5, "acc": 0.8})
    lines = [m for m in trainer.messages if "step" in m]
    assert len(lines) == 49 and lines[0].startswith("epoch 2/3  step 1/50  loss 0.5000  acc 0.8000")
    quiet = ProgressBar(every_s=3600)
    trainer.messages.clear()
    quiet.on_epoch_begin(trainer, 0)
    quiet.on_batch_end(trainer, 10, {"loss": 0.5, "acc": 0.8})
    assert trainer.messages == []


def test_decoding_progress_is_said_in_lines_where_no_bar_can_be_drawn():
    from imgclf.data.progress import Progress

    said = []
    with Progress(1000, "decoding train", every_s=0.0, say=said.append) as progress:  # pytest: no terminal
        for done in range(100, 1001, 100):
            progress.update(done)
    assert len(said) == 9 and said[0].startswith("decoding train  image 100/1,000  ")
    quiet = []
    with Progress(1000, "decoding train", quiet=True, every_s=0.0, say=quiet.append) as progress:
        progress.update(500)
    assert quiet == []
