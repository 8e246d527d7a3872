"""Every plot renders to a valid, non-blank PNG of sensible size; Korean names draw without missing glyphs; labels
of 100 classes do not overlap."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from imgclf import plots
from imgclf.data.transforms import augmentation
from imgclf.metrics.classification import Evaluation
from imgclf.metrics.diagnose import diagnose
from imgclf.plots import style

from .conftest import assert_picture

KOREAN = ["운동화", "샌들", "가방", "티셔츠", "바지"]


@pytest.fixture
def no_missing_glyphs():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    missing = [str(w.message) for w in caught if "missing from" in str(w.message)]
    assert not missing, missing


def rows(val_losses, train_acc=0.95, val_acc=0.9):
    return [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "train_acc": train_acc, "val_loss": v, "val_acc": val_acc,
             "lr": 0.01 * (len(val_losses) - i)} for i, v in enumerate(val_losses)]


def test_curves(tmp_path, no_missing_glyphs):
    path = plots.plot_curves(rows([0.9, 0.6, 0.5, 0.55, 0.7]), tmp_path / "curves.png")
    assert_picture(path, 1000, 300)


def test_the_diagnosis_finds_where_over_fitting_started():
    found = diagnose(rows([0.9, 0.6, 0.5, 0.55, 0.7]))
    assert found.verdict == "over-fitting" and found.onset == 4 and found.best_epoch == 3
    assert "started at epoch 4" in found.text and "augmentation" in found.text and "dropout" in found.text
    assert diagnose(rows([0.9, 0.6, 0.5, 0.45, 0.44])).verdict == "good fit"
    assert diagnose(rows([2.0, 1.9, 1.8], train_acc=0.4, val_acc=0.38)).verdict == "under-fitting"
    gap = rows([0.9, 0.8, 0.7, 0.71, 0.715])  # validation loss stalled (not 3% above its minimum)
    for r, acc in zip(gap, [0.80, 0.85, 0.90, 0.95, 0.99]):
        r["train_acc"], r["val_acc"] = acc, 0.8
    grown = diagnose(gap)
    assert grown.verdict == "over-fitting" and grown.onset == 2 and grown.gap == pytest.approx(19.0)
    assert "(an early sign)" in grown.text and "widened from +0.0 points at epoch 1 to +19.0 at epoch 5" in grown.text
    assert diagnose([{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5}]).verdict == "unknown"


def images(n, channels=3, size=24, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 255, (n, channels, size, size), dtype=np.uint8))


@pytest.mark.parametrize("n_classes", [5, 40])
def test_sample_grid_one_row_per_class_or_one_tile_per_class(tmp_path, n_classes, no_missing_glyphs):
    names = (KOREAN * 8)[:n_classes]
    names = [f"{n}{i}" for i, n in enumerate(names)]
    y = torch.arange(n_classes).repeat(3)
    path = plots.plot_samples(images(len(y)), y, names, tmp_path / "samples.png")
    assert_picture(path, 400, 300)


def test_class_counts_and_augmentation_preview(tmp_path, no_missing_glyphs):
    assert_picture(plots.plot_class_counts({"train": [50, 20, 5, 9, 1], "val": [5, 2, 1, 1, 0]}, KOREAN,
                                           tmp_path / "counts.png"))
    image = images(1, 1, 28)[0]
    preview = plots.plot_augmentation(image, augmentation("standard", 28, 1), tmp_path / "aug.png", "standard")
    assert_picture(preview, 600, 200)


def evaluation(n_classes=5, n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return Evaluation([f"{KOREAN[i % 5]}{i}" for i in range(n_classes)], y, probs)


def test_evaluation_figures(tmp_path, no_missing_glyphs):
    result = evaluation()
    written = result.save(tmp_path, images(200))
    names = {p.name for p in written}
    assert {"confusion_matrix.png", "confusion_matrix_normalized.png", "per_class.png", "most_confused.png",
            "top_losses.png"} <= names
    for path in written:
        if path.suffix == ".png":
            assert_picture(path)
    assert "most-confused pairs" in (tmp_path / "report.txt").read_text(encoding="utf-8")


def test_most_confused_and_top_losses_are_right():
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.7, 0.3, 0.0], [0.6, 0.4, 0.0], [0.0, 0.01, 0.99]])
    result = Evaluation(["a", "b", "c"], np.array([0, 1, 1, 1, 0]), probs)
    assert result.most_confused() == [("b", "a", 2, pytest.approx(2 / 3)), ("a", "c", 1, 0.5)]
    assert result.top_losses(2).tolist() == [4, 2]  # p(true) 0.0 then 0.3
    assert result.losses()[0] == pytest.approx(-np.log(0.9))


def _overlaps(labels):
    """Neighbouring labels whose drawn boxes overlap (labels come in axis order)."""
    boxes = [t.get_window_extent() for t in labels]
    return [(a, b) for a, b in zip(boxes, boxes[1:]) if a.overlaps(b)]


@pytest.mark.parametrize("plot", ["confusion", "counts", "per_class"])
def test_a_hundred_korean_class_names_do_not_overlap(tmp_path, monkeypatch, plot, no_missing_glyphs):
    n = 100
    names = [f"{KOREAN[i % 5]} {i}" for i in range(n)]
    saved = []
    monkeypatch.setattr(style.plt, "close", saved.append)  # keep the figure as it was written, to measure it
    rng = np.random.default_rng(0)
    if plot == "confusion":
        plots.plot_confusion_matrix(rng.integers(0, 5, (n, n)), names, tmp_path / "plot.png")
    elif plot == "counts":
        plots.plot_class_counts({"train": rng.integers(1, 50, n).tolist()}, names, tmp_path / "plot.png")
    else:
        plots.plot_per_class(rng.random(n), rng.random(n), names, tmp_path / "plot.png")
    ax = saved[0].axes[0]
    labels = [t for t in ax.get_yticklabels() if t.get_text()]
    assert len(labels) == n
    assert not _overlaps(labels)
    if plot == "confusion":
        assert not _overlaps([t for t in ax.get_xticklabels() if t.get_text()])
    assert_picture(tmp_path / "plot.png", 800, 1500)


def test_viz_data_draws_a_data_set_before_training(tmp_path, capsys, no_missing_glyphs):
    from imgclf.cli.main import main

    from .conftest import write_class_folders

    data = write_class_folders(tmp_path / "data", 6, classes=("운동화", "샌들", "가방"))
    out = tmp_path / "out"
    assert main(["viz", "data", str(data), "--augment", "standard", "--output-dir", str(out)]) == 0
    assert "augmentation.png" in capsys.readouterr().out
    for name in ("samples.png", "class_counts.png", "augmentation.png"):
        assert_picture(out / name, 300, 150)
    assert main(["viz", "data", str(tmp_path / "nowhere")]) == 2


def test_the_diagnosis_judges_only_what_it_can_and_says_how_sure():
    from imgclf.config import TrainConfig

    # Two epochs, validation loss still falling, training accuracy ahead: too early to call it over-fitting.
    early = rows([0.5, 0.4], train_acc=0.9, val_acc=0.8)
    early[0]["train_acc"] = 0.7
    assert diagnose(early).verdict == "unknown" and "too early" in diagnose(early).text
    # The gap widens but validation loss keeps falling: no over-fitting yet (fastai's rule).
    falling = rows([0.9, 0.8, 0.7, 0.6, 0.5])
    for r, acc in zip(falling, [0.80, 0.85, 0.90, 0.95, 0.99]):
        r["train_acc"], r["val_acc"] = acc, 0.8
    assert diagnose(falling).verdict == "good fit" and "still falling" in diagnose(falling).text
    # 0.0146 -> 0.0243 on 8 validation images is noise, not a verdict.
    tiny = rows([0.03, 0.0146, 0.02, 0.0243])
    assert diagnose(tiny, n_val=8).verdict == "unknown" and "8 validation images" in diagnose(tiny, n_val=8).text
    # A 10% rise is clear on 10,000 images, within the noise on 100.
    rise = rows([0.9, 0.5, 0.52, 0.55])
    assert diagnose(rise, n_val=10_000).text.startswith("over-fitting (clear)")
    assert diagnose(rise, n_val=100).verdict != "over-fitting"
    # The remedies fit the run: no cnn dropout spec for a fine-tuned efficientnet, no --patience when it is on.
    tuned = TrainConfig(model="efficientnet_lite0", pretrained=True, mode="fine-tune", patience=3, augment="light")
    text = diagnose(rise, cfg=tuned, n_val=10_000).text
    assert "cnn:" not in text and "--patience" not in text and "--unfreeze 2" in text and "--augment standard" in text
    cnn = diagnose(rise, cfg=TrainConfig(model="cnn", augment="strong"), n_val=10_000).text
    assert "cnn:32-m-64-m-d0.25" in cnn and "--augment" not in cnn and "--patience 3" in cnn
