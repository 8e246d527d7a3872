"""``imgclf export``: a run's model as ONNX (optionally INT8) or TorchScript, with its preprocessing and class names
in the file, and a parity check against PyTorch on the run's own validation images."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import __version__
from ..data.tensors import ImageTensors
from ..data.transforms import normalize
from ..errors import CheckFailed, UserError
from ..inference.classifier import Classifier
from ..inference.onnx import INPUT_FORMAT, RAW_INPUT_FORMAT, OnnxClassifier, RawPixels
from ..task import Task
from .raw_input import add_raw_input

FORMATS = ("onnx", "torchscript")
# fp32 exports must match PyTorch this closely on every checked image, with the same top-1 class.
MAX_ABS_DIFF = 1e-4
# INT8 may cost at most this much accuracy (points) on the checked images.
MAX_INT8_DROP = 1.0
INT8_CHECK_IMAGES = 1000
EXPORT_RECORD = "export.json"  # in a folder export (web, openvino): the files, the check and the latency here
# --raw-input: whole photos resized in the graph (float) against Pillow's 8-bit resize may differ on an image or two
MIN_RAW_AGREEMENT = 0.99


@dataclass
class ExportResult:
    """The exported file and its parity check (also saved as ``<name>.check.json`` in the run directory)."""

    path: Path
    check: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.check.get("passed"))


def metadata(clf: Classifier) -> dict[str, str]:
    """Everything needed to predict from the file alone, as strings (ONNX metadata_props)."""
    cfg = clf.config
    return {"labels": json.dumps(clf.classes, ensure_ascii=False), "model": cfg.model, "channels": str(cfg.channels),
            "img_size": str(cfg.img_size), "resize": cfg.resize, "crop_pct": str(cfg.crop_pct),
            "interpolation": cfg.interpolation, "mean": json.dumps(cfg.mean), "std": json.dumps(cfg.std),
            "input_format": INPUT_FORMAT, "exported_by": f"imgclf {__version__}", "flip": json.dumps(cfg.flip),
            "task": clf.task.name,
            # the run's decision threshold(s) (two classes: class 1's; multi-label: each label's, a JSON list), so
            # predict on the file answers as predict on the run
            **({"threshold": json.dumps(clf.threshold)} if clf.threshold is not None else {}),
            # a two-class run's positive class (its id): the one its precision, recall and ROC describe
            **({"positive": str(clf.positive)} if len(clf.classes) == 2 and not clf.task.multilabel else {})}


def writable_folder(folder: Path, clf: Classifier, make: bool = True) -> Path:
    """``folder``, made if missing (and ``make``); one that holds files and lies outside the run directory is
    refused (an export never writes over a user's files)."""
    inside = folder.resolve().is_relative_to(clf.run.path.resolve())
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not inside)):
        raise UserError(f"--output {folder}: exists and is not an empty folder; choose a new one (export never "
                        f"writes over files outside the run directory)")
    if make:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_images(clf: Classifier, limit: int) -> tuple[ImageTensors, str]:
    """The run's validation images (its test images when it has no validation split), at most ``limit``."""
    for split in ("val", "test"):
        try:
            images, where = clf.eval_images(split=split, limit=limit)
        except UserError:
            continue
        if len(images):
            return images, where
    raise UserError(f"{clf.config.data}: no validation or test images to check the export against")


def latency_ms(predictor: OnnxClassifier, sample: np.ndarray | list[np.ndarray], runs: int = 20) -> float:
    """The median milliseconds of ``predictor.logits(sample)`` (one image: batch 1) on this machine, after 3
    warm-up calls."""
    for _ in range(3):
        predictor.logits(sample)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        predictor.logits(sample)
        times.append(time.perf_counter() - started)
    return round(1000 * sorted(times)[len(times) // 2], 3)


def torch_logits(model: torch.nn.Module, clf: Classifier, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([model(normalize(x[i:i + 128].to(clf.device), clf.mean, clf.std)).float().cpu()
                          for i in range(0, len(x), 128)]).numpy()


def to_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int | None, dynamic: bool,
            meta: dict[str, str]) -> None:
    """``model`` (float32, eval) as an ONNX file at ``path`` (torch.onnx's dynamo exporter), a dynamic batch
    dimension when ``dynamic``, ``meta`` in its metadata, checked by onnx's checker."""
    import onnx

    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic else None
    # The exporter narrates each stage on stdout; the user only needs to know that it worked.
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=opset, input_names=["images"],
                          output_names=["logits"], dynamic_shapes=shapes, external_data=False, verbose=False)
    proto = onnx.load(str(path))
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _opset(path: Path) -> int | None:
    """The ONNX operator set the file was written with (the exporter's default unless --opset)."""
    import onnx

    found = [o.version for o in onnx.load(str(path), load_external_data=False).opset_import if o.domain in ("",
                                                                                                         "ai.onnx")]
    return found[0] if found else None


class _Calibration:
    """onnxruntime's CalibrationDataReader over normalised training images, one batch at a time."""

    def __init__(self, name: str, batches: list[np.ndarray]) -> None:
        self.name, self.batches = name, iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: batch}


def quantize_int8(fp32: Path, out: Path, clf: Classifier, fixed_batch: int | None) -> None:
    """Static INT8 quantization (QDQ, per-channel weights) calibrated on up to 256 training images."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images, _ = clf.eval_images(split="train", limit=256)
    x = ((images.x.float() / 255 - clf.mean.cpu().view(1, -1, 1, 1)) / clf.std.cpu().view(1, -1, 1, 1)).numpy()
    step = fixed_batch or 32
    batches = [x[i:i + step] for i in range(0, len(x) - step + 1, step)] or [x[:step]]
    prepared = fp32.with_name(fp32.stem + "-pre.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    # The first convolution (raw pixels) and the classifier stay in float: the usual recipe, and on
    # efficientnet_lite0 it halves the accuracy cost (measured: 0.25 -> 0.125 points on 800 images).
    graph = onnx.load(str(prepared)).graph.node
    convs = [n.name for n in graph if n.op_type == "Conv"]
    heads = [n.name for n in graph if n.op_type in ("Gemm", "MatMul")][-1:]
    quantize_static(str(prepared), str(out), _Calibration("images", batches), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=convs[:1] + heads)


def _target(clf: Classifier, fmt: str, output: str | Path | None, int8: bool, raw_input: bool) -> Path:
    """The file an export writes (its folder made), after refusing what cannot be exported that way."""
    if clf.run is None:
        raise UserError("export needs a run directory made by 'imgclf train'")
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise UserError("--int8 is for --format onnx (onnxruntime quantization)")
    if raw_input and fmt != "onnx":
        raise UserError("--raw-input is for --format onnx (the preprocessing as ONNX operators)")
    stem = "model_raw" if raw_input else "model"
    default = {"onnx": f"{stem}_int8.onnx" if int8 else f"{stem}.onnx", "torchscript": "model.torchscript.pt"}[fmt]
    path = Path(output) if output else clf.run / default
    if path.exists() and not path.resolve().is_relative_to(clf.run.path.resolve()):
        raise UserError(f"--output {path}: the file exists; choose a new name (export never overwrites a file "
                        f"outside the run directory)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def export(clf: Classifier, fmt: str = "onnx", output: str | Path | None = None, opset: int | None = None,
           dynamic_batch: bool = True, int8: bool = False, check: int = 256, raw_input: bool = False
           ) -> ExportResult:
    """Export the run's model and check it against PyTorch on up to ``check`` validation images. The ONNX file
    takes any batch size unless ``dynamic_batch`` is False (one image per call).

    fp32: max |logit difference| <= 1e-4 and the same top-1 class on every image. ``int8`` (ONNX only): top-1
    agreement and the accuracy drop are measured on at least 1,000 images (when the run has them); more than 1
    point is a failure. ``raw_input`` (ONNX only, :mod:`imgclf.deploy.raw_input`): the file takes whole decoded
    photos and preprocesses them itself; it is checked on the images as an app decodes them against PyTorch on
    imgclf's own preprocessing: at least 99% the same top-1 class (resizing in float and in Pillow's 8 bits may
    tip an image on the edge), the largest probability difference reported. A failed check raises
    :class:`UserError` after saving the check's numbers.
    """
    path = _target(clf, fmt, output, int8, raw_input)
    model = clf.model.float().eval().to(memory_format=torch.contiguous_format)
    # One image is 0.4 points of 256: INT8's "within 1 point" needs more images to mean anything.
    images, where = check_images(clf, max(check, INT8_CHECK_IMAGES) if int8 else check)
    batch = 2 if dynamic_batch else 1  # a fixed-batch ONNX file takes one image at a time
    example = normalize(images.x[:batch].to(clf.device), clf.mean, clf.std)
    started = time.perf_counter()
    reference = torch_logits(model, clf, images.x)
    if fmt == "torchscript":
        # PyTorch marks TorchScript deprecated (FutureWarning on every call); the help text says so once.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(model, example)
            torch.jit.save(traced, str(path), _extra_files={"imgclf.json": json.dumps(metadata(clf))})
            loaded = torch.jit.load(str(path), map_location=clf.device)
        logits = torch_logits(loaded, clf, images.x)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fp32.onnx" if int8 else path
            to_onnx(model, example, fp32, opset, dynamic_batch, metadata(clf))
            if int8:
                quantize_int8(fp32, path, clf, None if dynamic_batch else batch)
        if raw_input:
            add_raw_input(path, clf.config, metadata(clf))
        runtime = OnnxClassifier(path)
        inputs = photos(images) if raw_input else images.x.numpy()
        logits = runtime.logits(inputs)
    seconds = time.perf_counter() - started
    result = ExportResult(path, compare(reference, logits, images.y.numpy(), int8, clf.task if raw_input else None))
    result.check.update({"format": fmt + (" int8" if int8 else ""), "file": str(path), "images": len(images),
                         "checked_on": where, "bytes": path.stat().st_size, "seconds": round(seconds, 2),
                         "opset": _opset(path) if fmt == "onnx" else None, "dynamic_batch": dynamic_batch,
                         "input": RAW_INPUT_FORMAT if raw_input else INPUT_FORMAT, "labels": clf.classes})
    if fmt == "onnx":
        result.check["latency_ms_batch1"] = latency_ms(runtime, inputs[:1])
        del runtime  # the file is closed before it may be set aside
    details = clf.run / f"{path.name}.check.json"
    failed = None if result.passed else set_aside(result)
    details.write_text(json.dumps(result.check, indent=1), encoding="utf-8")
    if failed:
        raise CheckFailed(f"{failed}: parity check failed ({summary(result)}); kept under that name, details in "
                          f"{details}")
    return result


def finish_folder_export(clf: Classifier, result: ExportResult, folder: Path, record: dict, fmt: str,
                         describe: str) -> ExportResult:
    """The end of an export into a folder (OpenVINO, Core ML): a failed one set aside; ``export.json`` written in
    ``folder`` (``record`` with the labels, the check and every file's size) and the check as ``FMT.check.json`` in
    the run; :class:`CheckFailed` with ``describe`` (the check in one line) when it failed."""
    failed = None if result.passed else set_aside(result)
    sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
             for p in sorted(folder.iterdir()) if p.name != EXPORT_RECORD}
    record = {"format": fmt, **record, "labels": clf.classes, "check": result.check, "files": sizes}
    (folder / EXPORT_RECORD).write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
    (clf.run / f"{fmt}.check.json").write_text(json.dumps(result.check, indent=1), encoding="utf-8")
    if failed:
        raise CheckFailed(f"{failed}: check failed ({describe}); kept under that name, details in "
                          f"{folder / EXPORT_RECORD}")
    return result


def set_aside(result: ExportResult) -> Path:
    """An export whose check failed, renamed to say so (``model.onnx`` to ``model.check-failed.onnx``; an OpenVINO
    model's ``.bin`` with its ``.xml``), so that nothing picks it up as a good one; an older one of that name goes."""
    paths = [result.path] + ([result.path.with_suffix(".bin")] if result.path.suffix == ".xml" else [])
    for path in paths:
        aside = path.with_name(f"{path.stem}.check-failed{path.suffix}")
        if aside.is_dir():  # a Core ML package is a folder
            shutil.rmtree(aside)
        path.replace(aside)
    result.path = result.path.with_name(f"{result.path.stem}.check-failed{result.path.suffix}")
    result.check["file"] = str(result.path)
    return result.path


def photos(images: ImageTensors) -> list[np.ndarray]:
    """The checked images as an app would decode them: each file whole (uint8 RGB), or for data sets held as
    pixels (not files) their own pixels as RGB, before any resize."""
    raw = RawPixels()
    if images.paths is not None:
        return [raw.load(p) for p in images.paths]
    if images.originals is None:
        raise UserError("--raw-input checks on the images as an app decodes them, and this run's are neither files "
                        "nor pixels kept in memory")
    return [raw(Image.fromarray(x)) for x in images.originals]


def compare(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray, int8: bool, raw: "Task | None" = None
             ) -> dict:
    """Parity of the export's logits with PyTorch's: the largest difference, the top-1 agreement and the accuracy
    of both (multi-label: the share of label decisions at p >= 0.5 right). ``raw``: the export preprocesses
    whole photos itself, and is held to the top-1 agreement and its probabilities' largest difference (by the
    run's ``Task``)."""
    top_ref, top = reference.argmax(1), logits.argmax(1)
    if labels.ndim == 2:
        right_ref, right = (reference >= 0) == (labels > 0), (logits >= 0) == (labels > 0)
    else:
        right_ref, right = top_ref == labels, top == labels
    out = {"max_abs_diff": float(np.abs(reference - logits).max()), "top1_agreement": float((top_ref == top).mean()),
           "accuracy_pytorch": float(right_ref.mean()), "accuracy_export": float(right.mean())}
    out["accuracy_drop_points"] = 100 * (out["accuracy_pytorch"] - out["accuracy_export"])
    if raw is not None:
        out["input"] = RAW_INPUT_FORMAT
        out["max_prob_diff"] = float(np.abs(raw.probabilities_np(reference) - raw.probabilities_np(logits)).max())
    if int8:
        out["passed"] = out["accuracy_drop_points"] <= MAX_INT8_DROP
    elif raw is not None:
        out["passed"] = out["top1_agreement"] >= MIN_RAW_AGREEMENT
    else:
        out["passed"] = out["max_abs_diff"] <= MAX_ABS_DIFF and out["top1_agreement"] == 1.0
    return out


def summary(result: ExportResult) -> str:
    """One line: the check's numbers against its thresholds."""
    c = result.check
    raw = (f"; whole photos in: top-1 agreement with PyTorch on imgclf's preprocessing {c['top1_agreement']:.2%} "
           f"(at least {MIN_RAW_AGREEMENT:.0%}), largest probability difference {c['max_prob_diff']:.2e}"
           if "max_prob_diff" in c else "")
    if "int8" in c.get("format", ""):
        return (f"INT8 vs PyTorch on {c['images']} images: top-1 agreement {c['top1_agreement']:.2%}, accuracy "
                f"{c['accuracy_pytorch']:.2%} -> {c['accuracy_export']:.2%} (drop {c['accuracy_drop_points']:.2f} "
                f"points, limit {MAX_INT8_DROP}){raw}")
    if raw:
        return f"{c['images']} images{raw}"
    return (f"max |logit difference| {c['max_abs_diff']:.2e} (limit {MAX_ABS_DIFF:.0e}), top-1 agreement "
            f"{c['top1_agreement']:.2%} on {c['images']} images")
