"""One way in for every predictor: the factory sits above the classes it builds (as timm's ``_factory.py`` beside
``_registry.py``), so none of them imports another."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..run import CV_FILE
from .onnx import OnnxClassifier
from .predictor import Predictor

WEB_MODEL = "model_raw.onnx"  # the model of a web export's folder (imgclf.deploy.web)


def load_predictor(run: str | Path, weights: str = "best", device: str = "auto", model: "object | None" = None,
                   classifier: "type | None" = None) -> Predictor:
    """``imgclf.load``: a trained classifier back from its run directory, with its ``best`` weights, its ``last``
    epoch's, or any weights file of that run (e.g. one a :class:`~imgclf.callbacks.ModelCheckpoint` of yours
    wrote). A cross-validation gives the ensemble of its folds; an exported ``.onnx`` file its onnxruntime
    classifier (the same predict API; neither torch nor timm is imported for it); a timm or torchvision model name
    its ImageNet classifier. A run trained on your own ``nn.Module`` needs an instance of it as ``model``.
    ``classifier``: the :class:`Classifier` subclass a run loads as (imgclf.load: the training side's Learner).
    Only the libraries the model needs are imported: a cnn run needs no timm."""
    # The PyTorch predictors are imported here, not at the top, so that an .onnx file never imports torch.
    if str(run).lower().endswith(".onnx"):
        return OnnxClassifier(run)
    if str(run).lower().endswith(".xml"):  # an OpenVINO IR (its runtime is an optional extra)
        from .openvino import OpenVinoClassifier
        return OpenVinoClassifier(run)
    if str(run).lower().endswith(".tflite"):  # a LiteRT file (its interpreter is an optional extra)
        from .litert import LiteRtClassifier
        return LiteRtClassifier(run)
    if str(run).rstrip("/").lower().endswith(".mlpackage"):
        raise UserError(f"{run}: a Core ML package runs in Core ML on Apple devices (an app, or coremltools on "
                        f"macOS), not in imgclf; predict with the run, or its ONNX, OpenVINO or LiteRT export")
    if (Path(run) / WEB_MODEL).is_file() and (Path(run) / "export.json").is_file():  # imgclf export --format web
        return OnnxClassifier(Path(run) / WEB_MODEL)
    for folder in (Path(run), Path("runs") / str(run)):
        if (folder / CV_FILE).is_file():  # a cross-validation: its folds as an ensemble
            from .ensemble import Ensemble
            return Ensemble(folder, device)
    from .classifier import Classifier
    return (classifier or Classifier).load(run, weights, device, model)
