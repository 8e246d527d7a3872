"""imgclf export --format litert [--int8] (issue 27): a .tflite file with the normalisation and the probabilities
inside, its labels and preprocessing beside it, checked with the LiteRT interpreter against the run; predict on it.

The converter (litert-torch, with jax and its own compiler: about 750 MB) is not in the test install CI can afford;
the tests that convert are marked ``litert`` and run with ``make test-litert``. The missing-extra errors run always."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from imgclf.cli.main import main
from imgclf.training.job import train

from .conftest import TINY, write_class_folders


@pytest.mark.litert
@pytest.mark.parametrize("grey", [True, False], ids=["grey", "rgb"])
def test_a_litert_file_answers_as_the_run_and_predicts_alone(tmp_path, capsys, grey):
    from ai_edge_litert.interpreter import Interpreter

    from imgclf.inference.load import load_predictor

    data = "fashion-mnist-sample" if grey else str(write_class_folders(tmp_path / "shapes", 10))
    clf = train(data, epochs=1, img_size=16, limit=200 if grey else None, project=str(tmp_path / "runs"),
                name="run", **TINY)
    assert main(["export", str(clf.run.path), "--format", "litert"]) == 0
    out = capsys.readouterr().out
    assert "parity check passed" in out and "Traceback" not in out
    folder = clf.run / "litert"
    record = json.loads((folder / "export.json").read_text())
    check = record["check"]
    assert check["passed"] and check["max_prob_diff"] <= 1e-4 and check["top1_agreement"] == 1.0, check
    assert record["labels"] == clf.classes and (folder / "labels.txt").read_text().split("\n")[:-1] == clf.classes
    # the file itself: uint8 NHWC of the run's size in, one probability per class out (they sum to 1)
    interpreter = Interpreter(model_path=str(folder / "model.tflite"))
    interpreter.allocate_tensors()
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert list(inp["shape"]) == [1, 16, 16, 1 if grey else 3] and inp["dtype"] == np.uint8
    interpreter.set_tensor(inp["index"], np.full(inp["shape"], 128, np.uint8))
    interpreter.invoke()
    assert abs(float(interpreter.get_tensor(outp["index"]).sum()) - 1) < 1e-5
    # predict from the file alone gives the run's probabilities
    images, _ = clf.eval_images(split="val", limit=20)
    alone = load_predictor(folder / "model.tflite")
    assert alone.classes == clf.classes
    np.testing.assert_allclose(alone.proba(images.x.numpy()), clf.proba(images.x.numpy()), atol=1e-4)
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i, image in enumerate(images.x.numpy()[:3]):
        Image.fromarray(image[0] if grey else image.transpose(1, 2, 0)).save(pngs / f"{i}.png")
    name, probs, error = next(alone.probabilities([str(pngs / "0.png")]))  # the predict API's own iterator
    assert error is None and probs.shape == (len(clf.classes),) and abs(float(probs.sum()) - 1) < 1e-4
    assert main(["predict", str(folder / "model.tflite"), str(pngs)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.split()[1] in " ".join(clf.classes) for line in lines)


@pytest.mark.litert
def test_int8_is_calibrated_checked_and_a_failed_check_is_set_aside(tmp_path, capsys, monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    from imgclf.deploy.benchmark import benchmark

    # a model trained enough for INT8's 1-point limit to mean something (a 67% one moved 1.75 points)
    clf = train("fashion-mnist-sample", epochs=3, limit=1500, project=str(tmp_path / "runs"), name="run",
                **(TINY | {"model": "cnn:16-m-32-m-fc32", "batch_size": 32, "lr": 0.003}))
    assert main(["export", str(clf.run.path), "--format", "litert", "--int8"]) == 0
    folder = clf.run / "litert-int8"
    check = json.loads((folder / "export.json").read_text())["check"]
    assert check["format"] == "litert int8" and check["passed"] and check["accuracy_drop_points"] <= 1.0
    interpreter = Interpreter(model_path=str(folder / "model_int8.tflite"))
    assert any(t["dtype"] == np.int8 for t in interpreter.get_tensor_details())  # int8 weights and activations
    # uint8 pixels in, as the fp32 file; the probabilities out as int8 with their scale and zero point
    interpreter.allocate_tensors()
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and outp["dtype"] == np.int8
    interpreter.set_tensor(inp["index"], np.full(inp["shape"], 100, np.uint8))
    interpreter.invoke()
    scale, zero = outp["quantization"]
    assert abs(float(((interpreter.get_tensor(outp["index"]) - zero) * scale).sum()) - 1) < 0.05
    # the export matrix's rows for LiteRT: the same files, timed on the interpreter, agreeing with PyTorch
    rows = {r.engine: r for r in benchmark(str(clf.run.path), batch=8, seconds=0.1, images=100,
                                           engines=("litert", "litert-int8"), log=lambda _: None) if r.batch == 1}
    assert rows["litert"].agreement == 1.0 and rows["litert-int8"].agreement >= 0.8, rows
    assert rows["litert-int8"].size_mb < rows["litert"].size_mb and rows["litert"].latency_ms > 0
    capsys.readouterr()
    # a check the file fails: exit 1, kept under a name that says so, nothing left that looks good
    monkeypatch.setattr("imgclf.deploy.litert.MAX_INT8_DROP", -1.0)
    assert main(["export", str(clf.run.path), "--format", "litert", "--int8"]) == 1
    assert "check failed" in capsys.readouterr().err
    assert (folder / "model_int8.check-failed.tflite").is_file() and not (folder / "model_int8.tflite").exists()


def test_without_the_converter_or_runtime_the_error_names_the_extra(tmp_path, capsys, monkeypatch):
    clf = train("fashion-mnist-sample", epochs=1, img_size=16, limit=100, project=str(tmp_path / "runs"), **TINY)
    monkeypatch.setitem(sys.modules, "litert_torch", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    assert main(["export", str(clf.run.path), "--format", "litert"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'imgclf[litert]'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (clf.run / "litert").exists()
    model = tmp_path / "model.tflite"
    model.write_bytes(b"not used")
    assert main(["predict", str(model), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "imgclf[litert]" in err and "Traceback" not in err


def test_raw_input_is_refused_for_litert(tmp_path, capsys):
    clf = train("fashion-mnist-sample", epochs=1, img_size=16, limit=100, project=str(tmp_path / "runs"), **TINY)
    assert main(["export", str(clf.run.path), "--format", "litert", "--raw-input"]) == 2
    assert "--raw-input is for --format onnx" in capsys.readouterr().err


@pytest.mark.litert
def test_an_operator_litert_lacks_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import litert_torch

    clf = train("fashion-mnist-sample", epochs=1, img_size=16, limit=100, project=str(tmp_path / "runs"), **TINY)

    def refuse(*args, **kwargs):
        raise RuntimeError("Lowering not found: aten.grid_sampler_2d.default\n(and a long trace)")

    monkeypatch.setattr(litert_torch, "convert", refuse)
    assert main(["export", str(clf.run.path), "--format", "litert"]) == 2
    err = capsys.readouterr().err.strip()
    assert "LiteRT cannot represent" in err and "aten.grid_sampler_2d" in err and "--format onnx" in err
    assert len(err.splitlines()) == 1 and not (clf.run / "litert").exists()
