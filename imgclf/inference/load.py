"""One way in for every predictor: the factory sits above the classes it builds (as timm's ``_factory.py`` beside
``_registry.py``), so none of them imports another."""
from __future__ import annotations

from pathlib import Path

from ..run import CV_FILE
from .onnx import OnnxClassifier
from .predictor import Predictor


def load_predictor(model: str | Path, weights: str = "best", device: str = "auto", module: "object | None" = None
                   ) -> Predictor:
    """A run directory or name, a pretrained model name, or an exported ``.onnx`` file (which needs neither torch
    nor timm, so neither is imported for it)."""
    # The PyTorch predictors are imported here, not at the top, so that an .onnx file never imports torch.
    if str(model).lower().endswith(".onnx"):
        return OnnxClassifier(model)
    for folder in (Path(model), Path("runs") / str(model)):
        if (folder / CV_FILE).is_file():  # a cross-validation: its folds as an ensemble
            from .ensemble import Ensemble
            return Ensemble(folder, device)
    from .classifier import Classifier
    return Classifier.load(model, weights, device, module)
