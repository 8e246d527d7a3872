"""Speed features (issue 15), tested for correctness, not timing: bf16 autocast where the CPU has it, the batched
light augmentation (per-image parameters, labels kept, --no-flip, the seed, resume, random erasing), the time split in
metrics.csv, --compile, and ``imgclf benchmark``."""
from __future__ import annotations

import json
import re
import sys

import pytest
import torch
from torchvision.transforms import v2

import imgclf
from imgclf.callbacks import Callback
from imgclf.cli.main import main
from imgclf.config import EXPORT_MATRIX, TrainConfig
from imgclf.data.batch_augment import BatchAugment, reflect
from imgclf.device import autocast_dtype, fast_bf16, native_bf16
from imgclf.errors import UserError
from imgclf.training import precision as precision_choice
from imgclf.training import time_budget

from .conftest import TINY, TINY_ARGS, headless_chrome, write_class_folders


def _pattern(n: int, size: int = 12) -> torch.Tensor:
    """``n`` distinct, asymmetric uint8 images: no shift of one equals a shift of another or its mirror."""
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 2, size, size), dtype=torch.uint8, generator=g)


def _views(image: torch.Tensor, pad: int, flip: bool) -> list[tuple[int, int, bool]]:
    """Every (dy, dx, mirrored) that v2.RandomCrop(padding=pad, reflect) + RandomHorizontalFlip can make of
    ``image``, as the images themselves (keyed by the parameters)."""
    padded = torch.nn.functional.pad(image[None].float(), (pad,) * 4, mode="reflect")[0]
    h, w = image.shape[1:]
    views = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = v2.functional.crop(padded, dy, dx, h, w)
            for mirrored in (False, True) if flip else (False,):
                views[(dy - pad, dx - pad, mirrored)] = crop.flip(-1) if mirrored else crop
    return views


def test_reflect_mirrors_indices_as_reflect_padding_does():
    assert reflect(torch.arange(-3, 9), 6).tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 5, 4, 3, 2]


@pytest.mark.parametrize("flip", [True, False])
def test_batched_augmentation_is_torchvisions_light_preset_per_image(flip):
    x = _pattern(64)
    out = BatchAugment(12, flip=flip, seed=3, pad=2)(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    drawn = []
    for i in range(len(x)):  # image i's output is one of image i's own views: labels stay aligned
        matches = [k for k, view in _views(x[i], 2, flip).items() if torch.equal(view, out[i].float())]
        assert len(matches) == 1, i
        drawn.append(matches[0])
    assert len(set(drawn)) > 20  # each image its own parameters
    assert any(m for *_, m in drawn) == flip  # --no-flip never mirrors


def test_batched_augmentation_is_reproducible_and_resumes_its_draws():
    x = _pattern(16)
    a, b = BatchAugment(12, seed=7), BatchAugment(12, seed=7)
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), BatchAugment(12, seed=8)(x))
    state = a.state_dict()
    expected = a(x)
    c = BatchAugment(12, seed=0)
    c.load_state_dict(state)
    assert torch.equal(c(x), expected)


def test_random_erasing_blacks_out_one_rectangle_in_the_share_of_images_asked():
    x = torch.full((400, 1, 28, 28), 200, dtype=torch.uint8)
    out = BatchAugment(28, flip=False, pad=0, seed=3, erase=0.3)(x)
    erased = (out == 0).flatten(1)
    hit = erased.any(1)
    assert 0.22 < hit.float().mean() < 0.38  # about the probability asked
    share = erased[hit].float().mean(1)
    assert share.min() >= 1 / 784 and share.max() <= 0.25 + 0.05  # 2-25% of the image, rounded to whole pixels
    for image in out[hit][:20, 0] == 0:  # one rectangle: its rows and columns span exactly what it covers
        rows, cols = image.any(1).nonzero().flatten(), image.any(0).nonzero().flatten()
        assert image.sum() == len(rows) * len(cols) == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    assert torch.equal(out[~hit], x[~hit])


def test_erasing_asks_for_the_batched_light_augmentation():
    with pytest.raises(UserError, match="erase works with the batched light augmentation"):
        TrainConfig(erase=0.3, augment="standard").resolve_mode()
    with pytest.raises(UserError, match="erase must be in"):
        TrainConfig(erase=1.5)


def test_precision_auto_is_bf16_only_where_faster_and_old_runs_read_as_before(capsys):
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None and autocast_dtype("bf16", cpu) == torch.bfloat16
    emulated = "no native bfloat16" in capsys.readouterr().err  # a slow path chosen by hand is said out loud
    assert emulated == (not native_bf16(cpu))
    # auto: bf16 with AMX, fp32 without native bf16; AVX-512 BF16 alone is faster on some chips, slower on others,
    # so the flags leave it open (None) and a long training run measures it (imgclf.training.precision)
    flags = (native_bf16(cpu), torch.cpu._is_amx_tile_supported())
    known = {(True, True): True, (True, False): None}.get(flags, False)
    assert fast_bf16(cpu) is known
    assert autocast_dtype("auto", cpu) == (torch.bfloat16 if known else None)
    assert TrainConfig.from_dict({"amp": False}).precision == "fp32"
    assert TrainConfig.from_dict({"amp": True}).precision == "auto"


class _OneEpoch(Callback):
    def on_epoch_end(self, trainer, epoch, logs):
        trainer.stop_training = True


def _open_bf16(monkeypatch, fp32_s: float | None = None, bf16_s: float | None = None) -> list[str]:
    """A CPU whose flags leave bf16's speed open, the precisions' step times faked where given; the precisions
    timed are listed."""
    timed: list[str] = []
    monkeypatch.setattr(precision_choice, "fast_bf16", lambda device: None)
    if fp32_s is not None:
        def fake(net, cfg, *args):
            timed.append(cfg.precision)
            return {"fp32": fp32_s, "bf16": bf16_s}[cfg.precision], 0.001
        monkeypatch.setattr(time_budget, "time_steps", fake)
    return timed


@pytest.mark.parametrize("fp32_s, bf16_s, chosen", [(0.077, 0.048, "bf16"), (0.085, 0.108, "fp32"),
                                                    (0.050, 0.048, "fp32")])
def test_precision_auto_times_both_where_the_cpu_leaves_it_open(tmp_path, monkeypatch, fp32_s, bf16_s, chosen):
    timed = _open_bf16(monkeypatch, fp32_s, bf16_s)
    data = str(write_class_folders(tmp_path / "shapes", per_class=4))
    long = dict(TINY, epochs=1000)  # 1000 epochs planned: long enough to gain (trained: 1, the run is cut below)
    clf = imgclf.train(data, project=str(tmp_path / "runs"), name="long", callbacks=[_OneEpoch()], **long)
    assert timed == ["fp32", "bf16"]
    # bf16 only when at least 1.1x faster: its rounding is not worth a few per cent
    assert clf.config.precision == chosen and f"precision: {chosen}" in (clf.run / "config.yaml").read_text()
    assert f"so the run trains in {chosen}" in (clf.run / "train.log").read_text()
    # a short run, or a precision given, is not measured
    imgclf.train(data, project=str(tmp_path / "runs"), name="short", epochs=3, **TINY)
    imgclf.train(data, project=str(tmp_path / "runs"), name="given", precision="fp32", callbacks=[_OneEpoch()],
                 **long)
    assert timed == ["fp32", "bf16"]


def test_a_timed_run_plans_from_the_steps_the_precision_was_chosen_by(tmp_path, monkeypatch):
    timed = _open_bf16(monkeypatch, 0.077, 0.048)
    monkeypatch.setattr(precision_choice, "MIN_STEPS", 1)
    data = str(write_class_folders(tmp_path / "shapes", per_class=4))
    clf = imgclf.train(data, project=str(tmp_path / "runs"), name="t", time="1h", callbacks=[_OneEpoch()], **TINY)
    assert timed == ["fp32", "bf16"]  # the steps are timed once in each precision, not again for the plan
    assert "(a step of 8 images 48 ms, measured)" in (clf.run / "train.log").read_text()


def test_precision_auto_measures_the_real_model(tmp_path, monkeypatch):
    _open_bf16(monkeypatch)  # the real timings, in bf16 even where the CPU emulates it
    monkeypatch.setattr(precision_choice, "MIN_STEPS", 1)
    data = str(write_class_folders(tmp_path / "shapes", per_class=4))
    clf = imgclf.train(data, project=str(tmp_path / "runs"), name="t", epochs=1, **TINY)
    log = (clf.run / "train.log").read_text()
    assert re.search(r"takes \d+ ms in bf16 and \d+ ms in fp32 on this CPU \(measured\)", log), log
    assert clf.config.precision in ("bf16", "fp32") and f"trains in {clf.config.precision}" in log


def test_bf16_and_fp32_training_reach_the_same_accuracy(tmp_path):
    data = str(write_class_folders(tmp_path / "shapes", per_class=30))
    scores = {}
    for precision in ("fp32", "bf16"):
        clf = imgclf.train(data, epochs=6, precision=precision, name=precision, project=str(tmp_path / "runs"),
                           **TINY)
        scores[precision] = clf.evaluation.accuracy
    assert min(scores.values()) >= 0.9, scores


def test_metrics_say_where_each_epoch_went_and_per_image_augmentation_stays_available(tmp_path):
    data = str(write_class_folders(tmp_path / "shapes"))
    for name, extra in (("batched", {}), ("per-image", {"batch_augment": False})):
        clf = imgclf.train(data, epochs=1, name=name, project=str(tmp_path / "runs"), **TINY, **extra)
        row = clf.run.metrics()[0]
        assert row["time"] == pytest.approx(row["data_time"] + row["augment_time"] + row["compute_time"], abs=1e-5)
        assert (row["augment_time"] > 0) == (name == "batched")  # per image it runs inside the data wait
        assert clf.config.batch_augment == (name == "batched")
    with pytest.raises(UserError, match="covers --augment light"):
        imgclf.train(data, epochs=1, augment="standard", batch_augment=True, **TINY)


def test_compile_trains_and_saves_plain_weights(tmp_path):
    clf = imgclf.train(str(write_class_folders(tmp_path / "shapes")), epochs=1, compile=True,
                       project=str(tmp_path / "runs"), **TINY)
    assert clf.config.compile and not any("_orig_mod" in k for k in clf.model.state_dict())
    assert len(clf.predict(torch.zeros(16, 16, 3, dtype=torch.uint8).numpy())[0].labels) == 3


def test_benchmark_prints_every_engine_with_its_accuracy(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_class_folders(tmp_path / "shapes")
    assert main(["train", "shapes", *TINY_ARGS, "--epochs", "1", "--name", "b"]) == 0
    capsys.readouterr()
    assert main(["benchmark", "runs/b", "--seconds", "0.05", "--images", "16", "--batch-size", "8",
                 "--output", "bench.json"]) == 0
    table = capsys.readouterr().out
    rows = json.loads((tmp_path / "bench.json").read_text())
    engines = {r["engine"] for r in rows}
    assert engines == {"pytorch", "pytorch-compiled", "onnxruntime", "onnxruntime-int8", "openvino", "training"}, table
    for r in rows:
        assert r["images_per_s"] and r["images_per_s"] > 0, r
        assert (r["accuracy"] is None) == (r["engine"] == "training"), r
        assert r["engine"] in table
    inference = [r for r in rows if r["engine"] != "training"]
    assert {r["batch"] for r in inference} == {1, 8}
    accuracies = {r["engine"]: r["accuracy"] for r in inference}
    assert accuracies["onnxruntime"] == accuracies["pytorch"] == accuracies["openvino"]  # fp32: the same answers
    assert all(r["agreement"] == 1.0 for r in inference if r["engine"] in ("pytorch", "onnxruntime", "openvino"))
    assert "top-1 agr" in table
    assert all(r["size_mb"] > 0 for r in inference)
    assert main(["benchmark", "runs/b", "--output", "bench.json"]) == 2  # never replaces a file
    assert main(["benchmark", "runs/b", "--engines", "tensorrt"]) == 2
    # the export matrix: a row per target, the web app timed in Chromium, Core ML converted but never claimed run
    headless_chrome("benchmark --formats all's web row").quit()  # a loud skip where there is no Chromium
    # (the LiteRT rows run in tests/test_litert_export.py: its converter is not in the test install)
    assert {"pytorch", "onnxruntime", "onnxruntime-int8", "openvino", "litert", "litert-int8", "web",
            "coreml"} == set(EXPORT_MATRIX)
    assert main(["benchmark", "runs/b", "--formats", "web,coreml", "--seconds", "0.05", "--images", "16",
                 "--output", "matrix.json"]) == 0  # the runtimes' rows are above; "all" adds these two
    matrix = {(r["engine"], r["batch"]): r for r in json.loads((tmp_path / "matrix.json").read_text())}
    web, coreml = matrix["web", 1], matrix["coreml", 1]
    assert web["agreement"] >= 0.9 and web["latency_ms"] > 0 and web["accuracy"] is not None, web
    assert coreml["images_per_s"] is None and "not run" in coreml["note"] and coreml["size_mb"] > 0, coreml
    # a target whose converter is missing is a row that names the extra, and the others still run
    monkeypatch.setitem(sys.modules, "litert_torch", None)
    assert main(["benchmark", "runs/b", "--formats", "litert,pytorch", "--seconds", "0.05", "--images", "16"]) == 0
    out = capsys.readouterr().out
    assert "imgclf[litert]" in out and "pytorch" in out.split("imgclf[litert]")[-1]
