"""``imgclf benchmark RUN|MODEL``: how fast a model is on this machine, engine by engine, and what each engine costs
in accuracy (timm's ``benchmark.py``, Ultralytics' benchmark mode).

Inference images/s and latency at batch 1 and at a larger batch for PyTorch eager, PyTorch compiled
(``torch.compile``), ONNX Runtime fp32 and ONNX Runtime INT8 (exported to a temporary folder with export's own code),
OpenVINO (the fp32 ONNX file converted, run in float32), then training images/s (forward, backward, optimizer step at
the run's precision). ``--formats all`` gives a row per export target instead (:data:`EXPORT_MATRIX`): those
runtimes, LiteRT fp32 and INT8 (the interpreter, one image a call), the web app in headless Chromium
(:mod:`imgclf.deploy.browser`, one image at a time as the page runs it) and the Core ML package (converted and sized;
Core ML runs only on Apple's systems), each with its file size. A run's
validation images (else its test images) give each engine's accuracy and its top-1
agreement with PyTorch eager, so speed never hides a loss; a bare model name is timed on random images, without
accuracy.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..config import BENCHMARK_ENGINES, EXPORT_MATRIX, TrainConfig
from ..data.transforms import normalize
from ..device import autocast_dtype, autocast_for
from ..errors import UserError
from ..inference.classifier import Classifier
from ..inference.litert import LiteRtClassifier
from ..inference.onnx import OnnxClassifier
from ..inference.openvino import OpenVinoClassifier, openvino_module
from ..metrics.by_task import evaluation_for
from ..models import create_model, default_img_size, pretrained_preprocess
from .browser import browser_page, classify_in_browser, png_base64
from .coreml import PixelsToProbabilities, coremltools_module, to_coreml
from .export import check_images, metadata, photos, quantize_int8, to_onnx
from .litert import to_litert
from .raw_input import add_raw_input
from .web import MODEL, ORT_WEB_VERSION, app_around_model


@dataclass
class Row:
    """One engine at one batch size: throughput, median latency of a batch, and accuracy on the run's images."""

    engine: str
    batch: int
    images_per_s: float | None
    latency_ms: float | None
    accuracy: float | None = None
    note: str = ""
    agreement: float | None = None  # the share of images whose top-1 class is PyTorch eager's
    size_mb: float | None = None  # the model's file(s): weights for PyTorch, the exported file otherwise


def timed(step: Callable[[], object], seconds: float, warmup: int = 2, least: int = 5) -> float:
    """The median seconds of ``step`` over at least ``least`` calls and about ``seconds`` in all, after ``warmup``
    untimed calls (the first calls allocate, and a compiled model compiles then)."""
    for _ in range(warmup):
        step()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < least or time.perf_counter() - started < seconds:
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _model_only(name: str, device: str) -> Classifier:
    """A bare architecture with random weights (speed does not depend on them) and 1,000 outputs, as timm times."""
    size = default_img_size(name)
    pre = pretrained_preprocess(name, 3)
    config = TrainConfig(model=name, channels=3, img_size=size, mean=pre["mean"], std=pre["std"],
                         crop_pct=pre["crop_pct"], interpolation=pre["interpolation"])
    return Classifier(create_model(name, 1000, 3, size), [str(i) for i in range(1000)], config, None, device)


def load_target(target: str, device: str = "cpu") -> Classifier:
    """A run directory (its best weights) or a timm architecture name."""
    import timm

    if Path(target).exists() or (Path("runs") / target).exists() or not timm.is_model(target):
        return Classifier.load(target, device=device)
    return _model_only(target, device)


def benchmark(target: str, batch: int = 64, seconds: float = 2.0, images: int = 256, device: str = "cpu",
              engines: tuple[str, ...] = BENCHMARK_ENGINES, log: Callable[[str], None] = print) -> list[Row]:
    """Time every engine of ``engines`` on ``target``'s model at batch 1 and ``batch``; see the module docstring."""
    known = dict.fromkeys(BENCHMARK_ENGINES + EXPORT_MATRIX)
    unknown = [e for e in engines if e not in known]
    if unknown:
        raise UserError(f"--engines {', '.join(unknown)}: choose from {', '.join(known)}, or all")
    clf = load_target(target, device)
    x, y = _images(clf, images, (clf.config.channels, clf.config.img_size, clf.config.img_size))
    model = clf.model.float().eval()
    with torch.inference_mode():
        reference = np.concatenate([model(normalize(x[i:i + batch].to(clf.device), clf.mean, clf.std)).float().cpu()
                                    .numpy().argmax(1) for i in range(0, len(x), batch)])
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for engine in engines:
            log(f"timing {engine} ...")
            try:
                rows += _engine(engine, clf, model, x, y, batch, seconds, Path(tmp), reference)
            except Exception as exc:  # noqa: BLE001 - one engine that cannot run here must not hide the others
                rows.append(Row(engine, batch, None, None, note=f"failed: {str(exc).splitlines()[0][:120]}"))
    return rows


def _images(clf: Classifier, limit: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, np.ndarray | None]:
    """uint8 images to time and score on: the run's validation (else test) images, or random ones."""
    if clf.run is not None:
        images, _ = check_images(clf, limit)  # the images export checks its files on
        return images.x[:], images.y.numpy()
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (min(limit, 64), *shape), dtype=torch.uint8, generator=generator), None


def _accuracy(clf: Classifier, probs: np.ndarray, y: np.ndarray | None) -> float | None:
    if y is None:
        return None
    return float(evaluation_for(clf.task, clf.classes, y, probs, clf.threshold, positive=clf.positive).accuracy)


def _repeat(x: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` images from ``x``, repeating it when it holds fewer."""
    return x[torch.arange(n) % len(x)]


def _engine(engine: str, clf: Classifier, model: torch.nn.Module, x: torch.Tensor, y: np.ndarray | None,
            batch: int, seconds: float, tmp: Path, reference: np.ndarray) -> list[Row]:
    if engine == "training":
        return [_training(clf, batch, seconds)]
    if engine == "web":
        return [_web(clf, model, x, y, tmp, reference)]
    if engine == "coreml":
        return [_coreml(clf, model, x, tmp)]
    if engine.startswith("onnxruntime") or engine == "openvino":
        predict, note, files = _onnx_engine(engine, clf, model, x, tmp)
    elif engine.startswith("litert"):
        predict, note, files = _litert_engine(engine, clf, tmp)
    else:
        files = []
        model.to(memory_format=torch.channels_last if clf.config.channels_last else torch.contiguous_format)
        run = torch.compile(model) if engine == "pytorch-compiled" else model
        note = "torch.compile, default mode; compile time not counted" if engine == "pytorch-compiled" else "fp32"

        def predict(images: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                inputs = normalize(images.to(clf.device), clf.mean, clf.std, clf.config.channels_last)
                return run(inputs).float().cpu().numpy()
    logits = np.concatenate([predict(x[i:i + batch]) for i in range(0, len(x), batch)])
    accuracy = _accuracy(clf, clf.task.probabilities_np(logits), y)
    agreement = float((logits.argmax(1) == reference).mean())
    size_mb = sum(f.stat().st_size for f in files) / 1e6 if files else \
        sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 1e6
    rows = []
    for size in (1, batch):
        chunk = _repeat(x, size)
        seconds_per_batch = timed(lambda: predict(chunk), seconds)
        rows.append(Row(engine, size, size / seconds_per_batch, 1000 * seconds_per_batch, accuracy, note, agreement,
                        size_mb))
    return rows


def _onnx_engine(engine: str, clf: Classifier, model: torch.nn.Module, x: torch.Tensor, tmp: Path
                 ) -> tuple[Callable[[torch.Tensor], np.ndarray], str, list[Path]]:
    fp32 = tmp / "fp32.onnx"
    model.to(memory_format=torch.contiguous_format)  # the exporter traces the plain layout
    if not fp32.exists():
        to_onnx(model, normalize(x[:2].to(clf.device), clf.mean, clf.std), fp32, None, True, metadata(clf))
    path, note = fp32, "fp32"
    if engine == "onnxruntime-int8":
        if clf.run is None:
            raise UserError("INT8 calibrates on a run's training images; give a run")
        path, note = tmp / "int8.onnx", "INT8 static (QDQ), calibrated on 256 training images"
        quantize_int8(fp32, path, clf, None)
    if engine == "openvino":
        ov = openvino_module()
        xml, converted = tmp / "openvino.xml", ov.convert_model(str(fp32))
        for key, value in metadata(clf).items():  # where export --format openvino keeps them
            converted.set_rt_info(value, ["imgclf", key])
        ov.save_model(converted, str(xml), compress_to_fp16=False)
        runtime = OpenVinoClassifier(xml)
        return ((lambda images: runtime.logits(images.numpy())), f"OpenVINO {ov.__version__.split('-')[0]}, float32",
                [xml, xml.with_suffix(".bin")])
    onnx = OnnxClassifier(path)
    return (lambda images: onnx.logits(images.numpy())), note, [path]


def _litert_engine(engine: str, clf: Classifier, tmp: Path
                   ) -> tuple[Callable[[torch.Tensor], np.ndarray], str, list[Path]]:
    """The LiteRT file export writes (fp32, or INT8 calibrated on training images) on the LiteRT interpreter; the
    file takes one image per call, as a phone runs it, so a larger batch is that many calls."""
    if clf.run is None:
        raise UserError("LiteRT's export reads a run's metadata; give a run")
    folder = tmp / engine
    folder.mkdir()
    path = folder / "model.tflite"
    to_litert(clf, path, engine == "litert-int8")
    LiteRtClassifier.write_metadata(folder, metadata(clf))
    runtime = LiteRtClassifier(path)
    note = "INT8 (AI Edge Quantizer; first conv and classifier float), " if engine == "litert-int8" else "fp32, "
    return (lambda images: runtime.logits(images.numpy())), note + "one image per call, XNNPACK", [path]


def _web(clf: Classifier, model: torch.nn.Module, x: torch.Tensor, y: np.ndarray | None, tmp: Path,
         reference: np.ndarray) -> Row:
    """The web export's app in headless Chromium: every image classified by the page one at a time (as a user's
    photo is), the model run's median milliseconds as its latency. Its graph takes whole photos, so the run's
    resize is inside the time."""
    if clf.run is None:
        raise UserError("the web app is built from a run; give a run")
    folder = tmp / "web"
    folder.mkdir()
    model.to(memory_format=torch.contiguous_format)
    to_onnx(model, normalize(x[:2].to(clf.device), clf.mean, clf.std), folder / MODEL, None, True, metadata(clf))
    add_raw_input(folder / MODEL, clf.config, metadata(clf))
    app_around_model(folder, clf)
    # the photos as they were before imgclf's resize and crop: the app's graph does those itself
    originals = photos(check_images(clf, len(x))[0])
    with browser_page(folder) as page:
        probs, ms = classify_in_browser(page, [png_base64(image) for image in originals])
    latency = float(np.median(ms))
    return Row("web", 1, 1000 / latency, latency, _accuracy(clf, probs, y),
               f"onnxruntime-web {ORT_WEB_VERSION} WebAssembly, 1 thread, headless Chromium; whole image in",
               float((probs.argmax(1) == reference).mean()), (folder / MODEL).stat().st_size / 1e6)


def _coreml(clf: Classifier, model: torch.nn.Module, x: torch.Tensor, tmp: Path) -> Row:
    """The Core ML package converted and sized; not timed: Core ML runs predictions only on Apple's systems."""
    package = tmp / "model.mlpackage"
    model.to(memory_format=torch.contiguous_format)
    to_coreml(coremltools_module(), clf, PixelsToProbabilities(clf).eval(), x[:1].float(), package)
    size = sum(f.stat().st_size for f in package.rglob("*") if f.is_file()) / 1e6
    return Row("coreml", 1, None, None, note="converted; not run: Core ML predicts only on macOS and iOS",
               size_mb=size)


def _training(clf: Classifier, batch: int, seconds: float) -> Row:
    """Training steps (forward, backward, AdamW step) on random images of the model's input, at the run's
    precision, channels-last as training runs."""
    cfg = clf.config
    net = create_model(cfg.model, len(clf.classes), cfg.channels, cfg.img_size).to(clf.device)
    net = net.to(memory_format=torch.channels_last) if cfg.channels_last else net
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    dtype = autocast_dtype(cfg.precision, clf.device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, cfg.channels, cfg.img_size, cfg.img_size), dtype=torch.uint8,
                      generator=generator).to(clf.device)
    target = torch.randint(0, len(clf.classes), (batch,), generator=generator).to(clf.device)
    if clf.task.multilabel:
        target = torch.nn.functional.one_hot(target, len(clf.classes)).float()
    loss_fn = torch.nn.BCEWithLogitsLoss() if clf.task.multilabel else torch.nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(clf.device, dtype):
            loss = loss_fn(net(normalize(x, clf.mean, clf.std, cfg.channels_last)), target)
        loss.backward()
        optimizer.step()
        if clf.device.type == "cuda":
            torch.cuda.synchronize()
    per_step = timed(step, seconds)
    precision = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
    return Row("training", batch, batch / per_step, 1000 * per_step, None, f"AdamW step, {precision} autocast")


def format_rows(rows: list[Row]) -> str:
    """The table ``imgclf benchmark`` prints."""
    lines = [f"{'engine':<18} {'batch':>5} {'images/s':>10} {'latency ms':>11} {'accuracy':>9} {'top-1 agr':>9} "
             f"{'MB':>7}  note"]
    for r in rows:
        speed = f"{r.images_per_s:10,.1f}" if r.images_per_s is not None else f"{'-':>10}"
        latency = f"{r.latency_ms:11.2f}" if r.latency_ms is not None else f"{'-':>11}"
        accuracy = f"{r.accuracy:9.4f}" if r.accuracy is not None else f"{'-':>9}"
        agreement = f"{r.agreement:9.2%}" if r.agreement is not None else f"{'-':>9}"
        size = f"{r.size_mb:7.2f}" if r.size_mb is not None else f"{'-':>7}"
        lines.append(f"{r.engine:<18} {r.batch:>5} {speed} {latency} {accuracy} {agreement} {size}  {r.note}")
    return "\n".join(lines)


def as_dicts(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]
