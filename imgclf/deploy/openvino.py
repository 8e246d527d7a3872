"""``imgclf export --format openvino``: the run's model as an OpenVINO IR (``model.xml`` + ``model.bin``) for Intel
CPUs and GPUs, converted from the ONNX export by OpenVINO's own converter (``openvino.convert_model``), whole photos
in by default (the raw-input graph of :mod:`imgclf.deploy.raw_input`), the class names and preprocessing in the
file's ``rt_info``, and checked with the OpenVINO runtime here against PyTorch, as every export is."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from ..data.transforms import normalize
from ..errors import UserError
from ..inference.classifier import Classifier
from ..inference.onnx import RAW_INPUT_FORMAT
from ..inference.openvino import OpenVinoClassifier, openvino_module
from .export import (ExportResult, check_images, compare, finish_folder_export, latency_ms, metadata, photos,
                     summary, to_onnx, torch_logits, writable_folder)
from .raw_input import add_raw_input


def export_openvino(clf: Classifier, output: str | Path | None = None, check: int = 256,
                    raw_input: bool = True) -> ExportResult:
    """``model.xml`` and ``model.bin`` in ``output`` (default ``RUN/openvino``), checked on up to ``check``
    validation images with the OpenVINO runtime in float32: whole photos (``raw_input``) against PyTorch on
    imgclf's preprocessing, at least 99% the same top-1 class; else the model's own input, logits within 1e-4."""
    if clf.run is None:
        raise UserError("export needs a run directory made by 'imgclf train'")
    ov = openvino_module()  # before the work: a missing extra is said first
    folder = writable_folder(Path(output) if output else clf.run / "openvino", clf)
    model = clf.model.float().eval().to(memory_format=torch.contiguous_format)
    images, where = check_images(clf, check)
    meta = metadata(clf) | ({"input_format": RAW_INPUT_FORMAT} if raw_input else {})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = Path(tmp) / "model.onnx"
        to_onnx(model, normalize(images.x[:2].to(clf.device), clf.mean, clf.std), onnx_file, None, True, meta)
        if raw_input:
            add_raw_input(onnx_file, clf.config, meta)
        converted = ov.convert_model(str(onnx_file))
    for key, value in meta.items():
        converted.set_rt_info(value, ["imgclf", key])
    converted.set_rt_info("f32", ["runtime_options", "INFERENCE_PRECISION_HINT"])  # not bfloat16 where the CPU has it
    xml = folder / "model.xml"
    ov.save_model(converted, str(xml), compress_to_fp16=False)
    runtime = OpenVinoClassifier(xml)
    inputs = photos(images) if raw_input else images.x.numpy()
    check_result = compare(torch_logits(model, clf, images.x), runtime.logits(inputs), images.y.numpy(), False,
                           clf.task if raw_input else None)
    check_result.update({"format": "openvino", "file": str(xml), "images": len(images), "checked_on": where,
                         "bytes": xml.stat().st_size + xml.with_suffix(".bin").stat().st_size,
                         "seconds": round(time.perf_counter() - started, 2), "precision": "f32",
                         "runtime": f"OpenVINO {ov.__version__.split('-')[0]}", "latency_ms_batch1": latency_ms(runtime, inputs[:1])})
    del runtime  # the files are closed before they may be set aside
    result = ExportResult(xml, check_result)
    return finish_folder_export(clf, result, folder, {"input": meta["input_format"]}, "openvino", summary(result))
