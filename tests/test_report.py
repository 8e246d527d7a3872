"""report.html: written at the end of training (unless turned off), self-contained, and it renders in a real
browser (Debian's headless Chromium, driven by Selenium) with every image loaded and no console error."""
from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

from imgclf.cli.main import main
from imgclf.reports.report import FIGURES as FIGURES_BY_SECTION
from imgclf.training.job import train

from .conftest import TINY, headless_chrome

# The figures every run with a test split and augmentation has (most_confused.png only when there are mistakes).
FIGURES = 9


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    from .conftest import write_class_folders

    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    write_class_folders(data / "train", 12, seed=1, classes=("운동화", "샌들", "가방"))
    write_class_folders(data / "test", 5, seed=3, classes=("운동화", "샌들", "가방"))
    options = {**TINY, "plots": True}
    return train(str(data), epochs=3, project=str(root / "runs"), name="r", **options)


def test_training_writes_the_report_and_its_figures(report_run):
    run = report_run.run.path
    page = (run / "report.html").read_text(encoding="utf-8")
    for name in ("samples.png", "class_counts.png", "augmentation.png", "curves.png", "confusion_matrix.png",
                 "confusion_matrix_normalized.png", "per_class.png", "top_losses.png", "gradcam.png", "data.json"):
        assert (run / name).exists(), name
    images = re.findall(r'<img src="([^"]+)"', page)
    present = [name for section in FIGURES_BY_SECTION.values() for name, _ in section if (run / name).exists()]
    assert len(images) == len(present) >= FIGURES
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(https?:|file:|/)', page)  # nothing outside the file
    for text in ("운동화", "Training", "Evaluation", "Explanations", "Config", "accuracy"):
        assert text in page


def test_no_report_and_no_plots(image_folder, run_cwd):
    clf = train(str(image_folder), epochs=1, **{**TINY, "plots": True}, report=False, name="nr")
    assert (clf.run.path / "confusion_matrix.png").exists() and not (clf.run.path / "report.html").exists()
    clf = train(str(image_folder), epochs=1, **TINY, name="np")
    files = {p.name for p in clf.run.path.iterdir()}
    assert "curves.png" in files and not files & {"report.html", "samples.png", "confusion_matrix.png"}
    # Drawing (the augmentation preview draws random versions) does not change what training learns.
    with_plots = load_file(str(run_cwd / "runs" / "nr" / "best.safetensors"))
    without = load_file(str(clf.run.path / "best.safetensors"))
    assert all(torch.equal(with_plots[k], without[k]) for k in without)


def test_report_command_rewrites_it_and_info_gives_the_diagnosis(report_run, capsys):
    run = report_run.run.path
    (run / "report.html").unlink()
    assert main(["report", str(run), "--no-gradcam"]) == 0
    assert "report written to" in capsys.readouterr().out
    assert "Grad-CAM examples were turned off" in (run / "report.html").read_text(encoding="utf-8")
    assert main(["info", str(run)]) == 0
    assert "diagnosis:" in capsys.readouterr().out
    assert main(["report", str(run.parent / "missing")]) == 2
    mine = run.parent / "mine.html"
    mine.write_text("mine")
    assert main(["report", str(run), "--no-gradcam", "--output", str(mine)]) == 2  # never over a user's file
    assert mine.read_text() == "mine" and "--overwrite" in capsys.readouterr().err
    assert main(["report", str(run), "--no-gradcam", "--output", str(mine), "--overwrite"]) == 0
    assert mine.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_the_report_renders_in_headless_chromium(report_run):
    driver = headless_chrome("report.html")
    try:
        main(["report", str(report_run.run.path)])
        driver.get((report_run.run.path / "report.html").as_uri())
        loaded = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 100 && i.naturalHeight > 100)")
        sections = driver.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        text = driver.execute_script("return document.body.innerText")
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    finally:
        driver.quit()
    assert len(loaded) >= FIGURES and all(loaded), loaded
    assert sections == ["Data", "Training", "Evaluation", "Explanations", "Config"]
    assert "운동화" in text and "accuracy" in text
    assert not errors, errors
