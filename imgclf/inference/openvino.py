"""Predict with an OpenVINO IR (``model.xml`` + ``model.bin``, written by ``imgclf export --format openvino``): the
OpenVINO runtime runs it on the CPU, and the class names and preprocessing come from the file's ``rt_info``, under
``imgclf``, as an ONNX file carries them in its metadata."""
from __future__ import annotations


import numpy as np

from ..errors import UserError
from ..resources import threads_per_process
from .onnx import OnnxClassifier

# OpenVINO runs in bfloat16 on CPUs that have it unless told otherwise: 8 bits of mantissa, an answer far from
# PyTorch's. The export keeps float32 in the file's runtime options, and the predictor asks for it too.
PRECISION = {"INFERENCE_PRECISION_HINT": "f32"}


def openvino_module():
    """The ``openvino`` package, or a one-line error naming the extra."""
    try:
        import openvino
    except ImportError:
        raise UserError("the OpenVINO runtime is not installed: pip install 'imgclf[openvino]'") from None
    return openvino


class OpenVinoClassifier(OnnxClassifier):
    """:class:`OnnxClassifier`'s predict API on the OpenVINO runtime (CPU, float32)."""

    def _open(self, threads: int | None) -> tuple[dict[str, str], int | str | None]:
        ov = openvino_module()
        if not self.path.is_file() or not self.path.with_suffix(".bin").is_file():
            raise UserError(f"{self.path}: no such OpenVINO model (an .xml file with its .bin beside it)")
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except RuntimeError as exc:
            raise UserError(f"{self.path}: not a valid OpenVINO model ({str(exc).splitlines()[0][:200]})") from None
        meta = {key: model.get_rt_info(["imgclf", key]).astype(str) for key in model.get_rt_info()["imgclf"]} \
            if model.has_rt_info(["imgclf"]) else {}
        self.compiled = core.compile_model(model, "CPU", PRECISION | {"INFERENCE_NUM_THREADS": threads or
                                                                      threads_per_process()})
        first = model.inputs[0].get_partial_shape()[0]
        return meta, first.get_length() if first.is_static else None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.compiled(batch)[0]
