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


def test_reduce_lr_on_plateau_uses_torch_scheduler(trainer):
    plateau = ReduceLROnPlateau("val_loss", factor=0.5, patience=1, verbose=1)
    run_epochs(plateau, trainer, [1.0, 1.0, 1.0, 0.5, 0.5, 0.5], "val_loss")
    assert trainer.optimizer.param_groups[0]["lr"] == 0.25
    assert sum("learning rate" in m for m in trainer.messages) == 2


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
