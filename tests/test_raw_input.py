"""imgclf export --raw-input (issue 27): the ONNX graph takes whole decoded photos and does the run's resize, crop
and normalisation itself, as Pillow does them in imgclf; the exported file predicts from photos of any size like
the run; what ONNX cannot represent is one line."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skimage.data
from fastapi.testclient import TestClient
from onnx import helper
from PIL import Image

from imgclf.cli.main import main
from imgclf.config import TrainConfig
from imgclf.data.decode import Preprocess
from imgclf.deploy.export import export
from imgclf.deploy.raw_input import preprocessing_graph
from imgclf.deploy.serve import create_app
from imgclf.inference import onnx as onnx_module
from imgclf.inference.load import load_predictor
from imgclf.inference.onnx import RAW_INPUT_FORMAT, OnnxClassifier
from imgclf.training.job import train

from .conftest import TINY, write_photos_of_two_sizes


def _graph(cfg: TrainConfig) -> ort.InferenceSession:
    model = preprocessing_graph(cfg, "out", [helper.make_opsetid("", 18)], 9)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("channels, size, resize, crop_pct, interpolation", [
    (3, 96, "crop", 0.875, "bicubic"), (3, 96, "crop", 1.0, "bilinear"), (1, 96, "crop", 0.875, "bilinear"),
    (3, 96, "squash", 1.0, "bicubic"),  # 600 -> 96 wide: Pillow box-averages by 2 first
    (3, 28, "crop", 1.0, "bicubic")])  # 300 -> 28: by 3
def test_the_graph_preprocesses_a_photo_as_pillow_does_in_imgclf(channels, size, resize, crop_pct, interpolation):
    cfg = TrainConfig(model="cnn", channels=channels, img_size=size, resize=resize, crop_pct=crop_pct,
                      interpolation=interpolation, mean=[0.0] * channels, std=[1 / 255] * channels)
    session = _graph(cfg)
    for photo in (skimage.data.coffee(), skimage.data.chelsea()):  # 400x600 and 300x451
        ours = Preprocess.of(cfg)(Image.fromarray(photo)).astype(np.float32)
        theirs = session.run(None, {"pixels": photo[None]})[0][0]
        assert theirs.shape == ours.shape == (channels, size, size)
        gap = np.abs(ours - theirs)
        assert gap.mean() < 0.2 and gap.max() <= 1.0001, (gap.mean(), gap.max())  # grey levels (0-255)


def test_grey_conversion_is_pillows_to_the_level_and_an_image_at_the_size_is_kept_as_it_is():
    cfg = TrainConfig(model="cnn", channels=1, img_size=28, mean=[0.5], std=[0.25])
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (3, 28, 28, 3), dtype=np.uint8)  # three photos in one batch
    ours = np.stack([Preprocess.of(cfg)(Image.fromarray(p)) for p in photo]).astype(np.float32) / 255
    theirs = _graph(cfg).run(None, {"pixels": photo})[0]
    assert np.abs((ours - 0.5) / 0.25 - theirs).max() < 1e-5


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    """A run on photos larger than its input, of two sizes, resized with a crop of 87.5%."""
    root = tmp_path_factory.mktemp("raw")
    data = write_photos_of_two_sizes(root)
    clf = train(str(data), epochs=3, img_size=16, crop_pct=0.875, interpolation="bicubic",
                project=str(root / "runs"), name="r", **TINY)
    return data, clf


def test_a_raw_input_export_predicts_whole_photos_like_the_run(photo_run, capsys):
    data, clf = photo_run
    assert main(["export", str(clf.run.path), "--raw-input"]) == 0
    out = capsys.readouterr().out
    assert "whole photos in: top-1 agreement" in out
    path = clf.run / "model_raw.onnx"
    check = json.loads((clf.run / "model_raw.onnx.check.json").read_text())
    assert check["passed"] and check["top1_agreement"] >= 0.99 and check["max_prob_diff"] < 0.05, check
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["input_format"] == RAW_INPUT_FORMAT and json.loads(meta["labels"]) == clf.classes
    raw = model.graph.input[0].type.tensor_type
    assert raw.elem_type == onnx.TensorProto.UINT8 and raw.shape.dim[3].dim_value == 3  # N x H x W x RGB
    photos = sorted(data.rglob("*.png"))[::5]
    onnx_clf = OnnxClassifier.load(path)
    ours, theirs = onnx_clf.predict(photos, top_k=3), clf.predict(photos, top_k=3)
    assert [p.labels[0] for p in ours] == [p.labels[0] for p in theirs]
    assert np.abs(np.array([p.probs for p in ours]) - [p.probs for p in theirs]).max() < 0.05
    # the file by itself, as an app holds it: one decoded photo in, the class scores out
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"pixels": np.asarray(Image.open(photos[0]).convert("RGB"))[None]})[0]
    assert clf.classes[int(logits.argmax())] == theirs[0].labels[0]
    assert main(["predict", str(path), *map(str, photos[:2]), "--tta"]) == 2
    assert "--raw-input" in capsys.readouterr().err


def test_what_onnx_cannot_represent_is_one_line(photo_run, capsys):
    _, clf = photo_run
    assert main(["export", str(clf.run.path), "--raw-input", "--format", "torchscript"]) == 2
    assert "--raw-input is for --format onnx" in capsys.readouterr().err
    assert main(["export", str(clf.run.path), "--raw-input", "--opset", "17", "--output",
                 str(clf.run / "old.onnx")]) == 2
    assert "opset 18" in capsys.readouterr().err
    cfg = TrainConfig(model="cnn", channels=3, img_size=16, interpolation="lanczos")
    with pytest.raises(Exception, match="lanczos"):
        _graph(cfg)


def test_the_server_answers_photos_of_two_sizes_in_one_batch_from_a_raw_input_file(photo_run):
    data, clf = photo_run
    path = export(clf, "onnx", output=clf.run / "served_raw.onnx", raw_input=True).path
    app = create_app(OnnxClassifier.load(path), batch_wait_ms=200)  # long enough for both requests to meet
    photos = sorted(data.rglob("*.png"))[:2]  # 27x45 and 40x30
    assert {Image.open(p).size for p in photos} == {(27, 45), (40, 30)}
    with TestClient(app, base_url="http://localhost") as client:
        r = client.post("/predict", files=[("files", (p.name, p.read_bytes())) for p in photos])
    assert r.status_code == 200, r.text
    assert [p["top"][0]["label"] for p in r.json()["predictions"]] == [p.labels[0] for p in clf.predict(photos)]


def test_an_openvino_export_takes_whole_photos_and_predicts_like_the_run(photo_run, capsys):
    data, clf = photo_run
    assert main(["export", str(clf.run.path), "--format", "openvino"]) == 0
    assert "parity check passed" in capsys.readouterr().out
    folder = clf.run / "openvino"
    record = json.loads((folder / "export.json").read_text())
    check = record["check"]
    assert check["passed"] and check["top1_agreement"] >= 0.99 and check["max_prob_diff"] < 0.05, check
    assert record["input"] == RAW_INPUT_FORMAT and record["labels"] == clf.classes and check["latency_ms_batch1"] > 0
    assert {"model.xml", "model.bin"} <= {p.name for p in folder.iterdir()}
    photos = sorted(data.rglob("*.png"))[::5]
    assert main(["predict", str(folder / "model.xml"), *map(str, photos[:3])]) == 0
    table = capsys.readouterr().out
    assert all(p.labels[0] in table for p in clf.predict(photos[:3]))
    ours = load_predictor(folder / "model.xml").predict(photos, top_k=1)
    assert [p.labels for p in ours] == [p.labels for p in clf.predict(photos, top_k=1)]


def test_a_data_set_held_as_pixels_is_checked_on_its_own_pixels_before_the_resize(tmp_path):
    # Fashion-MNIST's 28 px images for a 32 px model with a crop of 87.5%: an app hands the model the 28 px image
    clf = train("fashion-mnist-sample", epochs=1, img_size=32, crop_pct=0.875, limit=200,
                project=str(tmp_path / "runs"), name="px", **TINY)
    result = export(clf, "onnx", raw_input=True)
    assert result.check["top1_agreement"] >= 0.99 and result.check["max_prob_diff"] < 0.02, result.check


def test_whole_photos_run_in_passes_that_bound_their_pixels(photo_run, monkeypatch):
    data, clf = photo_run
    runtime = OnnxClassifier.load(export(clf, "onnx", output=clf.run / "passes.onnx", raw_input=True).path)
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(data.rglob("*.png"))[:8]]
    whole = runtime.logits(photos)
    monkeypatch.setattr(onnx_module, "RAW_PIXELS_PER_RUN", 2 * 40 * 30)  # two photos of either size a run
    sizes = []
    run = runtime._run
    monkeypatch.setattr(runtime, "_run", lambda batch: sizes.append(len(batch)) or run(batch))
    assert np.allclose(runtime.logits(photos), whole, atol=1e-5)
    assert max(sizes) <= 2 and sum(sizes) == 8
