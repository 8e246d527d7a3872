"""``imgclf export --format coreml``: the run's model as a Core ML package (``model.mlpackage``) for iPhones, iPads and
Macs, converted by Apple's ``coremltools`` (float32 ML program).

The package is a Core ML *classifier*: its input is an image (RGB or grey, the run's size) that Core ML or Vision
hands over already scaled to that size, the scaling to [0, 1] and the run's mean/std are inside the graph, and it
answers with the class label and a probability per class name. What Vision's ``.centerCrop`` option does (the middle
square, then a resize) is imgclf's preprocessing where the run crops nothing (``crop_pct`` 1); the run's own resize
and crop are in the file's metadata for an app that prepares the image itself.

Core ML runs predictions only on Apple's systems. Here (Linux) the export checks what can be checked without it: the
package's spec (input kind, size and colours; outputs; the class names) and, in PyTorch, that the graph handed to
the converter (pixels in, probabilities out) answers as the run does on imgclf's preprocessing. Parity of Core ML's
own answers is reported as not measured; on macOS it is measured with ``coremltools``' predict.
"""
from __future__ import annotations

import contextlib
import io
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data.transforms import normalize
from ..errors import UserError
from ..inference.classifier import Classifier
from .export import ExportResult, check_images, finish_folder_export, metadata, writable_folder

INPUT = "image"


def coremltools_module():
    """``coremltools``, or a one-line error naming the extra."""
    # Off macOS it logs a warning for each of its runtime's missing pieces, and one for an untested torch: the
    # export says in its own words what cannot run here.
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    try:
        import coremltools
    except ImportError:
        raise UserError("the Core ML converter is not installed: pip install 'imgclf[coreml]'") from None
    return coremltools


class PixelsToProbabilities(nn.Module):
    """The run's model behind its own normalisation and in front of its probabilities: float pixels 0-255 (N, C, H,
    W), as Core ML passes an image, to one probability per class."""

    def __init__(self, clf: Classifier) -> None:
        super().__init__()
        self.model, self.task = clf.model, clf.task
        self.register_buffer("scale", 1 / (255 * clf.std.view(1, -1, 1, 1).cpu()))
        self.register_buffer("shift", (clf.mean / clf.std).view(1, -1, 1, 1).cpu())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.task.probabilities(self.model(pixels * self.scale - self.shift))


def export_coreml(clf: Classifier, output: str | Path | None = None, check: int = 256) -> ExportResult:
    """``model.mlpackage`` in ``output`` (default ``RUN/coreml``), with ``export.json``: its spec checked, and the
    converted graph checked in PyTorch on up to ``check`` validation images against the run (probabilities within
    1e-4, the same top-1 class); Core ML's own answers only where Core ML runs (macOS)."""
    if clf.run is None:
        raise UserError("export needs a run directory made by 'imgclf train'")
    ct = coremltools_module()  # before the work: a missing extra is said first
    folder = writable_folder(Path(output) if output else clf.run / "coreml", clf, make=False)  # made once converted
    package = folder / "model.mlpackage"
    cfg, started = clf.config, time.perf_counter()
    clf.model.float().eval().to(memory_format=torch.contiguous_format)
    graph = PixelsToProbabilities(clf).eval()
    images, where = check_images(clf, check)
    pixels = images.x.float()
    with torch.inference_mode():
        ours = graph(pixels).numpy()
        run = clf.task.probabilities(clf.model(normalize(images.x, clf.mean, clf.std))).numpy()
    to_coreml(ct, clf, graph, pixels[:1], package)
    spec = _spec_check(ct, package, clf)
    check_result = {
        "format": "coreml", "file": str(package), "images": len(images), "checked_on": where,
        "converted_graph_max_prob_diff": float(np.abs(ours - run).max()),
        "converted_graph_top1_agreement": float((ours.argmax(1) == run.argmax(1)).mean()), **spec,
        "bytes": sum(p.stat().st_size for p in package.rglob("*") if p.is_file()),
        "seconds": round(time.perf_counter() - started, 2), "precision": "fp32",
        "runtime": f"coremltools {ct.__version__}", **_coreml_parity(package, images, run, clf.classes)}
    check_result["passed"] = check_result["converted_graph_max_prob_diff"] <= 1e-4 and \
        check_result["converted_graph_top1_agreement"] == 1.0 and spec["spec_ok"] and \
        check_result.get("top1_agreement", 1.0) >= 0.99
    result = ExportResult(package, check_result)
    record = {"input": f"image {cfg.img_size}x{cfg.img_size} {'RGB' if cfg.channels == 3 else 'grey'}, 0-255"}
    return finish_folder_export(clf, result, folder, record, "coreml", coreml_summary(result))


def to_coreml(ct, clf: Classifier, graph: nn.Module, example: torch.Tensor, package: Path) -> None:
    """``graph`` (:class:`PixelsToProbabilities` of ``clf``) converted and saved whole at ``package`` (written
    beside it, then put in place: never half a package), with the run's metadata."""
    mlmodel = _convert(ct, graph, example, clf)
    cfg = clf.config
    mlmodel.short_description = f"imgclf {cfg.model}: {len(clf.classes)} classes from a {cfg.img_size} px image"
    mlmodel.user_defined_metadata.update(metadata(clf) | {"input_format": "Core ML image (scaled by the app)"})
    package.parent.mkdir(parents=True, exist_ok=True)
    partial = package.with_name("partial.mlpackage")
    shutil.rmtree(partial, ignore_errors=True)
    mlmodel.save(str(partial))
    shutil.rmtree(package, ignore_errors=True)  # an earlier export of this run (writable_folder refused others')
    partial.rename(package)


def _convert(ct, graph: nn.Module, example: torch.Tensor, clf: Classifier):
    """The graph as a float32 ML program with one image input (and, one class per image, a classifier's outputs),
    through ``torch.export`` (TorchScript, the other way in, is deprecated). An operator Core ML lacks is one line."""
    cfg = clf.config
    try:
        program = torch.export.export(graph, (example,)).run_decompositions({})
        with contextlib.redirect_stderr(io.StringIO()):  # its progress bars for each pass
            return ct.convert(
                program, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                inputs=[ct.ImageType(name=INPUT, shape=tuple(example.shape), color_layout=ct.colorlayout.RGB
                                     if cfg.channels == 3 else ct.colorlayout.GRAYSCALE)],
                classifier_config=None if clf.task.multilabel else ct.ClassifierConfig([str(c) for c in clf.classes]))
    except (NotImplementedError, RuntimeError, ValueError, TypeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"Core ML cannot represent {cfg.model}: {reason}; export it with --format onnx or "
                        f"openvino instead") from None


def _spec_check(ct, package: Path, clf: Classifier) -> dict:
    """What the saved package declares, against the run: one image input of the run's size and colours, and (one
    class per image) a class label and a probability per class name, the names the run's."""
    spec = ct.utils.load_spec(str(package))
    description = spec.description
    image = description.input[0].type.imageType
    labels = _class_labels(spec)
    outputs = [o.name for o in description.output]
    grey = image.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.GRAYSCALE
    ok = (len(description.input) == 1 and description.input[0].name == INPUT and
          (image.width, image.height) == (clf.config.img_size, clf.config.img_size) and grey == (clf.config.channels == 1))
    if not clf.task.multilabel:
        ok = ok and labels == [str(c) for c in clf.classes] and description.predictedFeatureName in outputs
    return {"spec_ok": bool(ok), "spec_input": f"{description.input[0].name}: {image.width}x{image.height} "
                                               f"{'GRAYSCALE' if grey else 'RGB'}",
            "spec_outputs": outputs, "spec_labels": len(labels)}


def _class_labels(spec) -> list[str]:
    """The class names of an ML program's ``classify`` operation (none where it has none)."""
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                if op.type == "classify":
                    return [v for argument in op.inputs["classes"].arguments
                            for item in argument.value.immediateValue.list.values
                            for v in item.immediateValue.tensor.strings.values]
    return []


def _coreml_parity(package: Path, images, run_probs: np.ndarray, classes: list) -> dict:
    """Core ML's own answers against the run's, where Core ML runs (macOS); elsewhere said to be unmeasured."""
    if sys.platform != "darwin":
        return {"coreml_parity": f"not measured: Core ML runs predictions only on macOS and iOS, not {sys.platform}"}
    import coremltools

    model = coremltools.models.MLModel(str(package))
    labels, probs = [str(c) for c in classes], []
    for x in images.x.numpy():
        answer = model.predict({INPUT: Image.fromarray(x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0))})
        # a classifier answers {label: probability} beside its class label, in no set order; multi-label one array
        scores = next((v for v in answer.values() if isinstance(v, dict)), None)
        probs.append([scores[c] for c in labels] if scores is not None else np.ravel(next(iter(answer.values()))))
    probs = np.asarray(probs, dtype=np.float64)
    return {"top1_agreement": float((probs.argmax(1) == run_probs.argmax(1)).mean()),
            "max_prob_diff": float(np.abs(probs - run_probs).max())}


def coreml_summary(result: ExportResult) -> str:
    """One line: what was checked and what could not be."""
    c = result.check
    return (f"spec {'as the run' if c['spec_ok'] else 'NOT as the run'} ({c['spec_input']}, {c['spec_labels']} "
            f"labels); the converted graph vs the run on {c['images']} images: largest probability difference "
            f"{c['converted_graph_max_prob_diff']:.1e}, top-1 agreement {c['converted_graph_top1_agreement']:.0%}; "
            + (f"Core ML's own: top-1 agreement {c['top1_agreement']:.2%}" if "top1_agreement" in c
               else c["coreml_parity"]))
