"""Keras-style callbacks, importable as ``from imgclf.callbacks import ModelCheckpoint`` (they live in
:mod:`imgclf.training.callbacks`, beside the trainer that calls them)."""
from .training.callbacks import (Callback, CSVLogger, EarlyStopping, ModelCheckpoint, ProgressBar,  # noqa: F401
                              ReduceLROnPlateau)

__all__ = ["CSVLogger", "Callback", "EarlyStopping", "ModelCheckpoint", "ProgressBar", "ReduceLROnPlateau"]
