"""imgclf: image classification with convolutional networks.

    import imgclf
    clf = imgclf.train("data/food", model="cnn", epochs=10)
    clf.evaluate("data/food-test"); clf.predict(["a.jpg"], top_k=3)
    clf = imgclf.load("runs/food")

Names are imported on first use (PEP 562), so ``imgclf --help`` and predicting with an ``.onnx`` file never pay
for importing torch and timm.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {"load": "training.learner:load", "train": "training.learner", "Learner": "training.learner",
            "Classifier": "inference.classifier", "TrainConfig": "config", "UserError": "errors",
            "create_model": "models", "cross_validate": "experiments.cv", "tune": "experiments.tune",
            "runs": "reports.runs:list_runs", "Comparison": "reports.compare"}
__all__ = ["Classifier", "Comparison", "Learner", "TrainConfig", "UserError", "callbacks", "create_model",
           "cross_validate", "load", "runs", "train", "tune", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "callbacks":
        return importlib.import_module(".callbacks", __name__)
    if name in _EXPORTS:
        module, _, attribute = _EXPORTS[name].partition(":")
        return getattr(importlib.import_module(f".{module}", __name__), attribute or name)
    raise AttributeError(f"module 'imgclf' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names, for tab completion: they are imported on first use, so they are not in the module yet."""
    return sorted(set(__all__) | set(globals()))
