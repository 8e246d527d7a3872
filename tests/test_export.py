"""Export round trips: ONNX (fp32, dynamic batch, INT8) and TorchScript match PyTorch on the run's validation
images; the .onnx file alone predicts like the run; bad requests and bad files are one-line errors."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
import torch

import imgclf
from imgclf.cli.main import main
from imgclf.deploy import export as export_module
from imgclf.errors import UserError
from imgclf.inference.onnx import INPUT_FORMAT, OnnxClassifier
from imgclf.training.job import train

from .conftest import TINY, write_class_folders


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data = write_class_folders(root / "data", 16)
    return train(str(data), epochs=3, project=str(root / "runs"), name="e", **TINY)


def test_onnx_export_carries_its_metadata_and_matches_pytorch(run, capsys):
    assert main(["export", str(run.run.path)]) == 0
    out = capsys.readouterr().out
    assert "parity check passed: max |logit difference|" in out
    path = run.run / "model.onnx"
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["labels"]) == ["bar", "bright", "dark"]
    assert meta["img_size"] == "16" and meta["channels"] == "3" and json.loads(meta["mean"]) == run.config.mean
    assert {"resize", "crop_pct", "interpolation", "std", "input_format"} <= set(meta)
    check = json.loads((run.run / "model.onnx.check.json").read_text())
    assert check["passed"] and check["max_abs_diff"] <= 1e-4 and check["top1_agreement"] == 1.0
    assert check["images"] > 0 and "val split" in check["checked_on"]
    assert check["opset"] == next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))
    # any batch size by default, so bulk prediction batches; --no-dynamic-batch fixes it at one image
    assert OnnxClassifier.load(path).fixed_batch is None and check["dynamic_batch"] is True
    assert main(["export", str(run.run.path), "--no-dynamic-batch", "--output", str(run.run / "one.onnx")]) == 0
    assert OnnxClassifier.load(run.run / "one.onnx").fixed_batch == 1


def test_the_onnx_file_alone_predicts_like_the_run(run, tmp_path, capsys):
    export_module.export(run, "onnx", dynamic_batch=True, output=run.run / "dyn.onnx")
    alone = tmp_path / "elsewhere" / "model.onnx"
    alone.parent.mkdir()
    shutil.copy(run.run / "dyn.onnx", alone)
    images = sorted((run.run.path.parent.parent / "data").rglob("*.png"))[:12]
    onnx_clf = OnnxClassifier.load(alone)
    assert onnx_clf.fixed_batch is None and onnx_clf.classes == run.classes
    ours = onnx_clf.predict(images, top_k=3)
    theirs = run.predict(images, top_k=3)
    assert [p.labels for p in ours] == [p.labels for p in theirs]
    assert np.allclose([p.probs for p in ours], [p.probs for p in theirs], atol=1e-5)
    assert main(["predict", str(alone), *map(str, images[:3])]) == 0
    onnx_table = capsys.readouterr().out
    assert main(["predict", str(run.run.path), *map(str, images[:3])]) == 0
    assert onnx_table == capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_int8_and_torchscript(run, capsys):
    assert main(["export", str(run.run.path), "--int8"]) == 0
    assert "top-1 agreement" in capsys.readouterr().out
    check = json.loads((run.run / "model_int8.onnx.check.json").read_text())
    assert check["format"] == "onnx int8" and check["accuracy_drop_points"] <= 1.0
    assert check["labels"] == run.classes and check["input"] == INPUT_FORMAT and check["latency_ms_batch1"] > 0
    int8 = onnx.load(str(run.run / "model_int8.onnx"))
    assert any(node.op_type == "QuantizeLinear" for node in int8.graph.node)
    assert main(["export", str(run.run.path), "--format", "torchscript"]) == 0
    files = {"imgclf.json": ""}
    scripted = torch.jit.load(str(run.run / "model.torchscript.pt"), _extra_files=files)
    assert json.loads(files["imgclf.json"])["labels"] == json.dumps(["bar", "bright", "dark"])
    x = torch.zeros(2, 3, 16, 16)
    with torch.inference_mode():
        assert torch.allclose(scripted(x), run.model(x), atol=1e-5)


def test_a_failed_check_is_set_aside_with_its_numbers_and_exits_1(run, monkeypatch, capsys):
    monkeypatch.setattr(export_module, "MAX_ABS_DIFF", -1.0)
    with pytest.raises(UserError, match="parity check failed"):
        export_module.export(run, "onnx", output=run.run / "strict.onnx")
    check = json.loads((run.run / "strict.onnx.check.json").read_text())
    assert check["passed"] is False and check["file"].endswith("strict.check-failed.onnx")
    # kept under a name nothing takes for a good export
    assert not (run.run / "strict.onnx").exists() and (run.run / "strict.check-failed.onnx").stat().st_size > 0
    assert main(["export", str(run.run.path), "--output", str(run.run / "strict2.onnx")]) == 1
    err = capsys.readouterr().err
    assert "strict2.check-failed.onnx: parity check failed" in err and "Traceback" not in err


def test_bad_requests_and_bad_files(run, tmp_path, capsys):
    assert main(["export", str(run.run.path), "--format", "torchscript", "--int8"]) == 2
    assert "--int8 is for --format onnx" in capsys.readouterr().err
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"precious")
    assert main(["export", str(run.run.path), "--output", str(mine)]) == 2
    assert "the file exists" in capsys.readouterr().err
    assert hashlib.sha256(mine.read_bytes()).hexdigest() == hashlib.sha256(b"precious").hexdigest()
    image = next((run.run.path.parent.parent / "data").rglob("*.png"))
    assert main(["predict", str(mine), str(image)]) == 2
    assert "not a valid ONNX model" in capsys.readouterr().err
    bare = tmp_path / "bare.onnx"
    proto = onnx.load(str(run.run / "model.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(bare))
    assert main(["predict", str(bare), str(image)]) == 2
    assert "export the model with 'imgclf export RUN'" in capsys.readouterr().err
    assert isinstance(imgclf.load(run.run / "model.onnx"), OnnxClassifier)
    for command in (["explain", str(run.run / "model.onnx"), str(image)], ["evaluate", str(run.run / "model.onnx")],
                    ["info", str(run.run / "model.onnx")], ["report", str(run.run / "model.onnx")]):
        assert main(command) == 2
        assert "needs the PyTorch run directory" in capsys.readouterr().err


def test_the_opset_asked_for(run):
    result = export_module.export(run, "onnx", opset=17, output=run.run / "op17.onnx")
    assert [o.version for o in onnx.load(str(result.path)).opset_import if o.domain == ""] == [17]
    assert result.check["opset"] == 17 and result.passed
