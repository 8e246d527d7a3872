"""Keras-style callbacks, importable as ``from imgclf.callbacks import ModelCheckpoint`` (they live in
:mod:`imgclf.training.callbacks`, beside the trainer that calls them, and the trackers in :mod:`imgclf.training.trackers`)."""
from .training.callbacks import (Callback, CSVLogger, EarlyStopping, ModelCheckpoint, ProgressBar,  # noqa: F401
                                 ReduceLROnPlateau)
from .training.trackers import MLflowLogger, TensorBoardLogger  # noqa: F401

__all__ = ["CSVLogger", "Callback", "EarlyStopping", "MLflowLogger", "ModelCheckpoint", "ProgressBar",
           "ReduceLROnPlateau", "TensorBoardLogger"]
