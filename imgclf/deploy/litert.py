"""``imgclf export --format litert [--int8]``: the run's model as a LiteRT (TensorFlow Lite) flatbuffer for Android,
embedded Linux and microcontrollers, converted by Google's ``litert-torch`` and checked with the LiteRT interpreter
(``ai-edge-litert``) here, as every export is.

The file takes what a camera app has after resizing a photo to the model's size: uint8 pixels, NHWC (1, H, W, C),
RGB or grey; the scaling to [0, 1], the run's mean/std and the softmax (or the sigmoids of a multi-label run) are
inside, so the app reads one probability per class. The run's own resize and crop, and the labels, are in
``export.json`` and ``labels.txt`` beside it. INT8: Google's AI Edge Quantizer (the LiteRT team's post-training
tool, on the float file) with its static recipe, int8 weights per channel and int8 activations calibrated on the
run's training images, the first convolution and the classifier kept in float as onnxruntime's INT8 export keeps
them (measured on an efficientnet_lite0 fine-tune, 1,000 images: 91.8% top-1 agreement with PyTorch and 0.4 points
of accuracy lost, against 81.0% and 7.1 points from litert-torch's own PT2E quantizer, in seconds instead of a
minute); uint8 pixels in as before, the probabilities out as int8 with their scale and zero point in the file (as
TFLite's quantized classifiers answer).
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..inference.classifier import Classifier
from ..inference.litert import LITERT_INPUT_FORMAT, LiteRtClassifier, quiet, runtime_version
from .coreml import PixelsToProbabilities
from .export import (INT8_CHECK_IMAGES, MAX_ABS_DIFF, MAX_INT8_DROP, ExportResult, check_images,
                     finish_folder_export, latency_ms, metadata, torch_logits, writable_folder)

# The training images the INT8 ranges are measured on. Its min-max ranges widen with every outlier seen: on an
# efficientnet_lite0 fine-tune 128 gave 91.8% top-1 agreement with PyTorch, 256 gave 85.9%.
CALIBRATION_IMAGES = 128


def litert_converter():
    """``litert_torch``, or a one-line error naming the extra."""
    try:
        with quiet():
            import litert_torch
    except ImportError:
        raise UserError("the LiteRT converter is not installed: pip install 'imgclf[litert]' (or 'make litert' in "
                        "a checkout)") from None
    return litert_torch


class NhwcPixels(nn.Module):
    """:class:`PixelsToProbabilities` behind an app's image: uint8 (N, H, W, C) to one probability per class."""

    def __init__(self, clf: Classifier) -> None:
        super().__init__()
        self.net = PixelsToProbabilities(clf)  # not "graph": the converter's GraphModule has its own

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixels.permute(0, 3, 1, 2).float())


def to_litert(clf: Classifier, path: Path, int8: bool) -> None:
    """The run's model converted to ``path`` (written beside, then put in place: never half a file); ``int8``:
    the float file quantized (:func:`_quantize`)."""
    lt = litert_converter()
    clf.model.float().eval().to(memory_format=torch.contiguous_format)
    graph = NhwcPixels(clf).eval()
    cfg = clf.config
    example = (torch.zeros(1, cfg.img_size, cfg.img_size, cfg.channels, dtype=torch.uint8),)
    partial = path.with_name(f"partial{path.suffix}")
    try:
        with quiet():
            lt.convert(graph, example).export(str(partial))
            if int8:
                _quantize(partial, partial, clf)
    except (NotImplementedError, RuntimeError, ValueError, TypeError, AssertionError) as e:
        partial.unlink(missing_ok=True)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise UserError(f"LiteRT cannot represent {cfg.model}{' in INT8' if int8 else ''}: {reason}; export it "
                        f"with --format onnx or openvino instead") from None
    partial.replace(path)


def _quantize(float_file: Path, out: Path, clf: Classifier) -> None:
    """``float_file`` with int8 weights (per channel) and int8 activations, their ranges measured on the run's
    training images, except the first convolution (it sees the raw pixels' full range) and the last fully connected
    layer (the logits), which stay in float. The softmax answers int8 (scale 1/256), as TFLite's quantized
    classifiers do: the output's scale and zero point are in the file."""
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    qt = quantizer.Quantizer(str(float_file))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    model = fb.read_model(str(float_file))
    graph = model.subgraphs[0]
    ops = [(fb.TFL_OP_CODE_TO_NAME.get(model.operatorCodes[op.opcodeIndex].builtinCode), op) for op in graph.operators]
    ends = [op for op in ops if op[0] == "CONV_2D"][:1] + [op for op in ops if op[0] == "FULLY_CONNECTED"][-1:]
    for name, op in ends:
        qt.update_quantization_recipe(regex=re.escape(fb.get_op_scope(op, graph.tensors)),
                                      operation_name=qtyping.TFLOperationName(name),
                                      algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    images, _ = clf.eval_images(split="train", limit=CALIBRATION_IMAGES)
    signature = LiteRtClassifier.signature(float_file)
    samples = [{signature[1]: x[None]} for x in images.x.permute(0, 2, 3, 1).contiguous().numpy()]
    qt.quantize(qt.calibrate({signature[0]: samples})).export_model(str(out), overwrite=True)


def export_litert(clf: Classifier, output: str | Path | None = None, int8: bool = False, check: int = 256
                  ) -> ExportResult:
    """``model.tflite`` (or ``model_int8.tflite``) in ``output`` (default ``RUN/litert`` or ``RUN/litert-int8``)
    with ``labels.txt`` and ``export.json``, checked with the LiteRT interpreter on up to ``check`` validation
    images (INT8: at least 1,000) against PyTorch: fp32, every probability within 1e-4 and the same top-1 class;
    INT8, at most 1 point of accuracy lost."""
    if clf.run is None:
        raise UserError("export needs a run directory made by 'imgclf train'")
    litert_converter()  # before the work: a missing extra is said first
    default = clf.run / ("litert-int8" if int8 else "litert")
    folder = writable_folder(Path(output) if output else default, clf)
    path = folder / ("model_int8.tflite" if int8 else "model.tflite")
    images, where = check_images(clf, max(check, INT8_CHECK_IMAGES) if int8 else check)
    started = time.perf_counter()
    try:
        to_litert(clf, path, int8)
    except UserError:
        if not any(folder.iterdir()):
            folder.rmdir()  # nothing written: no empty folder left that looks like an export
        raise
    seconds = time.perf_counter() - started
    meta = metadata(clf) | {"input_format": LITERT_INPUT_FORMAT}
    (folder / "labels.txt").write_text("".join(f"{c}\n" for c in clf.classes), encoding="utf-8")
    LiteRtClassifier.write_metadata(folder, meta)  # what predict on the file reads
    runtime = LiteRtClassifier(path)
    run = clf.task.probabilities_np(torch_logits(clf.model, clf, images.x))
    check_result = {"format": "litert int8" if int8 else "litert", "file": str(path), "images": len(images),
                    "checked_on": where, **parity(run, runtime.outputs(images.x.numpy()), images.y.numpy(),
                                                  int8),
                    "bytes": path.stat().st_size, "seconds": round(seconds, 2),
                    "precision": "int8 weights and activations (first conv and classifier in float)" if int8 else
                    "fp32",
                    "runtime": f"LiteRT interpreter (ai-edge-litert {runtime_version()}), XNNPACK",
                    "converter": f"litert-torch {litert_converter().__version__}"
                                 + (" and ai-edge-quantizer (static int8)" if int8 else ""),
                    "latency_ms_batch1": latency_ms(runtime, images.x.numpy()[:1])}
    del runtime
    result = ExportResult(path, check_result)
    return finish_folder_export(clf, result, folder, {"input": LITERT_INPUT_FORMAT, "metadata": meta},
                                "litert-int8" if int8 else "litert", litert_summary(result))


def parity(reference: np.ndarray, probs: np.ndarray, labels: np.ndarray, int8: bool) -> dict:
    """The export's probabilities against the run's: the largest difference, the top-1 agreement and the accuracy
    of both (multi-label: the share of label decisions at p >= 0.5 right). Passed: fp32 within ``MAX_ABS_DIFF``
    with the same top-1 class everywhere; INT8 at most ``MAX_INT8_DROP`` points less accurate."""
    if labels.ndim == 2:
        right_ref, right = (reference >= 0.5) == (labels > 0), (probs >= 0.5) == (labels > 0)
    else:
        right_ref, right = reference.argmax(1) == labels, probs.argmax(1) == labels
    out = {"max_prob_diff": float(np.abs(reference - probs).max()),
           "top1_agreement": float((reference.argmax(1) == probs.argmax(1)).mean()),
           "accuracy_pytorch": float(right_ref.mean()), "accuracy_export": float(right.mean())}
    out["accuracy_drop_points"] = 100 * (out["accuracy_pytorch"] - out["accuracy_export"])
    out["passed"] = out["accuracy_drop_points"] <= MAX_INT8_DROP if int8 else \
        out["max_prob_diff"] <= MAX_ABS_DIFF and out["top1_agreement"] == 1.0
    return out


def litert_summary(result: ExportResult) -> str:
    """One line: the check's numbers against its limits."""
    c = result.check
    if "int8" in c["format"]:
        return (f"INT8 with the LiteRT interpreter vs PyTorch on {c['images']} images: top-1 agreement "
                f"{c['top1_agreement']:.2%}, accuracy {c['accuracy_pytorch']:.2%} -> {c['accuracy_export']:.2%} "
                f"(drop {c['accuracy_drop_points']:.2f} points, limit {MAX_INT8_DROP})")
    return (f"the LiteRT interpreter vs PyTorch on {c['images']} images: largest probability difference "
            f"{c['max_prob_diff']:.1e} (limit {MAX_ABS_DIFF:.0e}), top-1 agreement {c['top1_agreement']:.2%}")

