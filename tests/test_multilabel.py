"""Multi-label images (issue 14, part 1): labels from a CSV, a stratified split, sigmoid outputs trained with binary
cross-entropy, per-label thresholds tuned on validation and used by predict, ONNX and serve, the multi-label scores,
and the bad input around them."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, f1_score, hamming_loss

import imgclf
from imgclf.cli.main import main
from imgclf.data.sources import load_source
from imgclf.data.split import split_indices
from imgclf.errors import UserError
from imgclf.metrics.multilabel import MultiLabelEvaluation, tune_thresholds
from imgclf.task import MultiLabel, get_task
from imgclf.training.loss import create_criterion
from imgclf.training.mix import mixing

from .conftest import BARS, TINY, TINY_ARGS, make_bars, write_class_folders, write_multilabel_csv


@pytest.fixture(scope="module")
def bars_run(tmp_path_factory: pytest.TempPathFactory):
    """One multi-label run on coloured bars, shared by the tests that use a trained model."""
    root = tmp_path_factory.mktemp("bars")
    csv = write_multilabel_csv(root / "data", 240, seed=0, test=60)
    clf = imgclf.train(str(csv), epochs=8, project=str(root / "runs"), name="bars",
                       **(TINY | {"batch_size": 16, "plots": True}))
    return clf, root


def _png(present: list[str], seed: int = 0) -> Path | bytes:
    buffer = io.BytesIO()
    Image.fromarray(make_bars(present, np.random.default_rng(seed))).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- data -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout,separator", [("labels", "|"), ("labels", ";"), ("columns", "|")])
def test_a_csv_with_several_labels_a_row_is_multi_label(tmp_path, layout, separator):
    csv = write_multilabel_csv(tmp_path, 30, layout=layout, separator=separator)
    source = load_source(str(csv))
    assert source.multilabel and source.classes == list(BARS)
    rows = (l.split(",") for l in csv.read_text().splitlines()[1:])
    expected = [[int(v) for v in r[1:4]] if layout == "columns" else [int(b in r[1].split(separator)) for b in BARS]
                for r in rows]
    assert source.splits["train"].labels.tolist() == expected


def test_one_label_a_row_stays_multi_class_unless_asked(tmp_path):
    (tmp_path / "a.png").write_bytes(_png(["red"]))
    (tmp_path / "b.png").write_bytes(_png(["blue"]))
    (tmp_path / "data.csv").write_text("path,labels\na.png,red\nb.png,blue\n")
    source = load_source(str(tmp_path / "data.csv"))
    assert not source.multilabel and source.splits["train"].labels.tolist() == [1, 0]
    assert source.for_task("multilabel").splits["train"].labels.tolist() == [[0, 1], [1, 0]]


def test_iterative_stratification_keeps_every_labels_share(tmp_path):
    rng = np.random.default_rng(0)
    labels = (rng.random((1000, 6)) < [0.5, 0.3, 0.1, 0.05, 0.2, 0.02]).astype(np.uint8)
    labels[labels.sum(1) == 0, 0] = 1
    train, val = split_indices(labels, 0.2, seed=0)
    assert abs(len(val) - 200) <= 3 and not set(train) & set(val) and len(train) + len(val) == 1000
    np.testing.assert_allclose(labels[val].mean(0), labels[train].mean(0), atol=0.012)


def test_bad_multi_label_data_is_a_one_line_error_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    csv = write_multilabel_csv(tmp_path / "d", 40, test=10)
    lines = csv.read_text().splitlines()
    (tmp_path / "d" / "empty.csv").write_text("\n".join([lines[0], lines[1].split(",")[0] + ",,train", *lines[2:]]))
    name, labels, split = lines[-1].split(",")
    assert split == "test"
    only_test = [*lines[:-1], f"{name},{labels}|purple,test"]
    (tmp_path / "d" / "only_test.csv").write_text("\n".join(only_test))
    cases = [(["d/empty.csv"], "have no label"), (["d/only_test.csv"], "appear only in validation/test"),
             (["d/labels.csv", "--task", "multiclass"], "train with --task multilabel"),
             (["d/labels.csv", "--sampler", "balanced"], "--class-weights balanced"),
             (["d/labels.csv", "--monitor", "val_balanced_acc"], "does not apply to multi-label"),
             (["d/labels.csv", "--loss", "asymmetric", "--task", "multiclass"], "uses cross-entropy")]
    for argv, message in cases:
        assert main(["train", *argv, *TINY_ARGS, "--epochs", "1"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert main(["cv", "d/labels.csv", "--folds", "3", *TINY_ARGS]) == 2
    assert "not supported yet" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(UserError, match="multi-class training uses cross-entropy"):
        imgclf.train(str(tmp_path / "d" / "labels.csv"), task="multiclass", loss="asymmetric",
                     **(TINY | {"epochs": 1}))


# ---- metrics, thresholds, loss ----------------------------------------------------------------------------------
def test_the_scores_are_scikit_learns_and_thresholds_maximise_each_labels_f1():
    rng = np.random.default_rng(1)
    y = (rng.random((300, 4)) < 0.4).astype(np.uint8)
    probs = np.clip(0.35 * y + rng.normal(0.35, 0.2, y.shape), 0, 1)
    thresholds = tune_thresholds(y, probs)
    for j in range(4):
        best = max(f1_score(y[:, j], probs[:, j] >= c) for c in np.unique(probs[:, j]))
        assert f1_score(y[:, j], probs[:, j] >= thresholds[j]) == pytest.approx(best)
    ev = MultiLabelEvaluation(["a", "b", "c", "d"], y, probs, thresholds)
    assert ev.mean_average_precision == pytest.approx(average_precision_score(y, probs, average="macro"))
    decided = probs >= thresholds
    assert ev.micro_f1 == pytest.approx(f1_score(y, decided, average="micro"))
    assert ev.hamming == pytest.approx(hamming_loss(y, decided))
    assert ev.exact_match == pytest.approx((decided == y).all(1).mean())
    assert [r["support"] for r in ev.per_label()] == y.sum(0).tolist()
    assert "mAP (mean average precision)" in ev.report() and json.dumps(ev.as_dict())


def test_the_task_decides_by_each_labels_threshold():
    task = get_task("multilabel")
    probs = np.array([0.9, 0.2, 0.6])
    assert task.answer(probs, 5, [0.5, 0.5, 0.5]) == [0, 2]
    assert task.answer(probs, 5, [0.95, 0.1, 0.7]) == [1]
    assert task.answer(probs, 5, 0.99) == []
    logits = torch.tensor([[3.0, -3.0, 0.5]])
    torch.testing.assert_close(task.probabilities(logits), logits.sigmoid())


def test_class_weights_weigh_each_labels_positives_and_mixup_mixes_the_label_rows():
    y = torch.tensor([[1, 0], [1, 0], [1, 1], [1, 0]], dtype=torch.float32)
    cfg = imgclf.TrainConfig(class_weights="balanced", label_smoothing=0.0)
    loss = create_criterion(MultiLabel(), y, ["a", "b"], cfg, lambda m: None)
    # a: on every image; b: 3 negatives a positive (the loss is wrapped for auxiliary classifiers: .loss)
    torch.testing.assert_close(loss.loss.pos_weight, torch.tensor([1.0, 3.0]))
    mix, mix_loss = mixing(1.0, 0.0, 2, 0.0, multilabel=True)
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    mixed, target = mix(x.clone(), y)  # timm mixes in place
    # timm blends each image with its mirror in the batch, lam * x + (1 - lam) * x.flip(0); the label rows likewise
    d = x - x.flip(0)
    lam = float(((mixed - x.flip(0)) * d).sum() / (d * d).sum())
    torch.testing.assert_close(target, lam * y + (1 - lam) * y.flip(0), atol=1e-4, rtol=0)
    assert 0 < lam < 1 and torch.isfinite(mix_loss(torch.randn(4, 2), target))


# ---- a trained model --------------------------------------------------------------------------------------------
def test_a_multi_label_run_learns_the_bars_and_saves_its_thresholds(bars_run):
    clf, root = bars_run
    run = root / "runs" / "bars"
    assert clf.config.task == "multilabel" and clf.config.monitor == "val_map"
    assert clf.evaluation.mean_average_precision >= 0.95 and clf.evaluation.macro_f1 >= 0.85
    saved = json.loads((run / "threshold.json").read_text())["thresholds"]
    assert list(saved) == list(BARS) and all(0 < t < 1 for t in saved.values())
    shown = clf.show_results(4, save_to=root / "results.png")  # predicted labels / true labels, per image
    assert shown.exists() and shown.stat().st_size > 1000
    assert "val_map" in (run / "metrics.csv").read_text().splitlines()[0]
    assert {"per_label.csv", "per_label.png", "pr_curves.png", "top_losses.png"} <= {p.name for p in run.iterdir()}
    assert "Per label" in (run / "report.html").read_text()
    assert json.loads((run / "eval.json").read_text())["map"] == pytest.approx(clf.evaluation.mean_average_precision)
    two, one = clf.predict([make_bars(["red", "blue"], np.random.default_rng(5)),
                            make_bars(["green"], np.random.default_rng(6))])
    assert sorted(two.labels) == ["blue", "red"] and one.labels == ["green"]
    assert set(two.scores) == set(BARS)


def test_predict_uses_the_saved_thresholds_and_threshold_overrides_them(bars_run, tmp_path, capsys):
    clf, root = bars_run
    run = root / "runs" / "bars"
    image = tmp_path / "rb.png"
    image.write_bytes(_png(["red", "blue"], 7))
    assert main(["predict", str(run), str(image), "--output", str(tmp_path / "p.csv")]) == 0
    header, row = (tmp_path / "p.csv").read_text().splitlines()
    assert header == "path,labels,blue,green,red,error"
    assert sorted(row.split(",")[1].split("|")) == ["blue", "red"]
    assert main(["predict", str(run), str(image), "--threshold", "0.999999"]) == 0
    assert "none (highest:" in capsys.readouterr().out
    copy = imgclf.load(run)
    copy.threshold = [0.0, 0.0, 0.0]  # every label answered from 0 on
    assert sorted(copy.predict(str(image))[0].labels) == list(BARS)
    assert main(["predict", str(run), str(image), "--positive", "red"]) == 2
    assert "multi-label model answers each label" in capsys.readouterr().err


def test_onnx_and_serve_answer_as_the_run_does(bars_run, tmp_path):
    from fastapi.testclient import TestClient

    from imgclf.deploy.export import export
    from imgclf.deploy.serve import create_app
    from imgclf.inference.onnx import OnnxClassifier

    clf, root = bars_run
    run = root / "runs" / "bars"
    result = export(clf, fmt="onnx")
    onnx = OnnxClassifier(result.path)
    assert onnx.metadata["task"] == "multilabel" and onnx.threshold == pytest.approx(clf.threshold)
    images = [make_bars(p, np.random.default_rng(i)) for i, p in enumerate([["red"], ["green", "blue"], BARS])]
    assert [p.labels for p in onnx.predict(images)] == [p.labels for p in clf.predict(images)]
    np.testing.assert_allclose(onnx.proba(np.stack([clf.pixels(i) for i in images])),
                               clf.predict_proba(torch.tensor(np.stack([clf.pixels(i) for i in images]))).numpy(),
                               atol=1e-5)
    with TestClient(create_app(imgclf.load(run)), base_url="http://localhost") as client:
        answer = client.post("/predict", files=[("files", ("gb.png", _png(["green", "blue"], 3), "image/png"))])
        assert client.get("/metadata").json()["task"] == "multilabel"
    labels = answer.json()["predictions"][0]["labels"]
    assert sorted(item["label"] for item in labels) == ["blue", "green"]


def test_evaluate_and_grad_cam_per_label(bars_run, tmp_path, capsys):
    clf, root = bars_run
    run = root / "runs" / "bars"
    assert main(["evaluate", str(run), "--tta", "--output-dir", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "mAP (mean average precision)" in out and "test-time augmentation: mAP" in out
    image = tmp_path / "all.png"
    image.write_bytes(_png(list(BARS), 9))
    assert main(["explain", str(run), str(image), "--output-dir", str(tmp_path / "cam")]) == 0
    said = capsys.readouterr().out
    assert all(f"label {b}" in said for b in BARS)  # a map for each label it answers
    assert Image.open(tmp_path / "cam" / "all_gradcam.png").size[0] > 0


def test_a_folder_trains_multi_label_when_asked_and_multi_class_models_refuse_multi_label_data(tmp_path):
    clf = imgclf.train(str(write_class_folders(tmp_path / "shapes")), task="multilabel", epochs=2,
                       project=str(tmp_path / "runs"), **TINY)
    assert clf.task.multilabel and clf.predict_proba(torch.zeros(2, 3, 16, 16, dtype=torch.uint8)).shape == (2, 3)
    probs = clf.predict_proba(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))[0]
    assert not torch.isclose(probs.sum(), torch.tensor(1.0))  # sigmoids, not a softmax
    clf = imgclf.train(str(tmp_path / "shapes"), epochs=1, project=str(tmp_path / "runs"), **TINY)
    with pytest.raises(UserError, match="multi-label data"):
        clf.evaluate(str(write_multilabel_csv(tmp_path / "bars", 20)))


def test_two_processes_validate_the_whole_split(tmp_path):
    """With 2 gloo processes each validates half the images; mAP needs every probability, so they are gathered:
    the epoch's val_map is the one-process mAP of the saved weights on the whole validation split."""
    import os
    import subprocess
    import sys

    from imgclf.metrics.multilabel import label_scores

    csv = write_multilabel_csv(tmp_path / "bars", 120)
    env = os.environ | {"IMGCLF_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "imgclf", "train", str(csv), "--devices", "2", "--epochs", "1",
                          "--name", "ml2", "--val-split", "0.3", "--scheduler", "none", *TINY_ARGS], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    header, row = (tmp_path / "runs" / "ml2" / "metrics.csv").read_text().splitlines()
    logged = dict(zip(header.split(","), map(float, row.split(","))))
    clf = imgclf.load(tmp_path / "runs" / "ml2", device="cpu")
    val, _ = clf.eval_images(split="val")
    assert 30 <= len(val) <= 42  # 0.3 of 120, as near as iterative stratification comes
    expected = label_scores(val.y.numpy(), clf.predict_proba(val.x).numpy())
    assert logged["val_map"] == pytest.approx(expected["map"], abs=2e-3)
    assert logged["val_macro_f1"] == pytest.approx(expected["macro_f1"], abs=0.02)
