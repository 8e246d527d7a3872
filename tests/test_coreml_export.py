"""imgclf export --format coreml (issue 27): an ML-program classifier package with the class names and the
normalisation inside, its spec checked against the run, the converted graph checked in PyTorch, and Core ML's own
answers honestly reported as unmeasured off Apple's systems."""
from __future__ import annotations

import json
import sys

import coremltools as ct
import pytest

from imgclf.cli.main import main
from imgclf.deploy import coreml
from imgclf.training.job import train

from .conftest import TINY, write_class_folders


@pytest.mark.parametrize("grey", [True, False], ids=["grey", "rgb"])
def test_a_core_ml_package_carries_the_labels_and_the_runs_input(tmp_path, capsys, monkeypatch, grey):
    data = "fashion-mnist-sample" if grey else str(write_class_folders(tmp_path / "shapes", 10))
    clf = train(data, epochs=1, img_size=16, limit=200 if grey else None, project=str(tmp_path / "runs"),
                name="run", **TINY)
    assert main(["export", str(clf.run.path), "--format", "coreml"]) == 0
    out = capsys.readouterr().out
    assert "not measured" in out and "Traceback" not in out
    folder = clf.run / "coreml"
    record = json.loads((folder / "export.json").read_text())
    check = record["check"]
    assert record["labels"] == clf.classes and check["passed"] and check["spec_ok"], check
    # the graph handed to the converter (pixels 0-255 in, probabilities out) answers as the run does
    assert check["converted_graph_max_prob_diff"] <= 1e-4 and check["converted_graph_top1_agreement"] == 1.0
    assert check["coreml_parity"].startswith("not measured") and "top1_agreement" not in check  # never claimed
    spec = ct.utils.load_spec(str(folder / "model.mlpackage"))
    image = spec.description.input[0].type.imageType
    assert (image.width, image.height) == (16, 16)
    assert (image.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.GRAYSCALE) == grey
    assert spec.description.predictedFeatureName == "classLabel"
    meta = spec.description.metadata.userDefined
    assert json.loads(meta["labels"]) == clf.classes and json.loads(meta["mean"]) == clf.config.mean
    # predicting on the package is Core ML's job: one line that says where it runs
    assert main(["predict", str(folder / "model.mlpackage"), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Core ML" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    if grey:  # a package whose spec is not the run's: set aside under a name that says so, exit 1
        monkeypatch.setattr(coreml, "_spec_check", lambda *a: {"spec_ok": False, "spec_input": "?",
                                                                 "spec_outputs": [], "spec_labels": 0})
        assert main(["export", str(clf.run.path), "--format", "coreml"]) == 1
        assert "check failed" in capsys.readouterr().err
        assert (folder / "model.check-failed.mlpackage").is_dir() and not (folder / "model.mlpackage").exists()
        assert json.loads((folder / "export.json").read_text())["check"]["passed"] is False


def test_without_coremltools_the_error_names_the_extra(tmp_path, capsys, monkeypatch):
    clf = train("fashion-mnist-sample", epochs=1, img_size=16, limit=100, project=str(tmp_path / "runs"), **TINY)
    monkeypatch.setitem(sys.modules, "coremltools", None)
    assert main(["export", str(clf.run.path), "--format", "coreml"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'imgclf[coreml]'" in err and "Traceback" not in err
    assert not (clf.run / "coreml").exists()
