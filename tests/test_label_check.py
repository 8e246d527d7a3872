"""imgclf check DATA --labels (issue 26): out-of-fold probabilities scored by cleanlab find the labels flipped on
purpose, copies under another label are named, the review page works in a browser and its decisions become a
cleaned file list, and bad input gets one line."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclf.cli.main import main
from imgclf.errors import UserError
from imgclf.experiments.labels import CNN_EPOCHS, default_training, find_label_issues, fold_count

from .conftest import headless_chrome, write_class_folders

FLIPPED = {"dark/flip-bright-0.png": "bright", "dark/flip-bright-1.png": "bright", "bright/flip-bar-0.png": "bar",
           "bar/flip-dark-0.png": "dark"}  # file under a wrong class -> its true class
OPTIONS = dict(model="cnn:8-m-16-m-fc16", epochs=4, folds=3, batch_size=8, workers=0, lr=0.01, quiet=True)


def _digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file()}


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    data = write_class_folders(root / "data", 24, seed=5)
    spare = write_class_folders(root / "spare", 3, seed=6)  # pictures of the true classes, filed under wrong ones
    for target, true in FLIPPED.items():
        source = sorted((spare / true).glob("*.png"))[int(target[-5])]
        shutil.copy(source, data / target)
    shutil.copy(data / "bright" / "003.png", data / "dark" / "copy-of-bright-003.png")  # a copy, another label
    before = _digest(data)
    report = find_label_issues(str(data), project=str(root / "runs"), name="l", **OPTIONS)
    return data, report, before


def _rows(run):
    with open(run / "label_issues.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_flipped_labels_are_found_with_the_right_suggestion_worst_first(checked):
    data, report, before = checked
    rows = _rows(report.run)
    found = {r["path"]: r for r in rows if r["kind"] == "label"}
    hits = [t for t in FLIPPED if str(data / t) in found and found[str(data / t)]["suggested_label"] == FLIPPED[t]]
    assert len(hits) >= 3, rows  # out-of-fold, each flip is judged by a model that never saw it
    quality = [float(r["quality"]) for r in rows]
    assert quality == sorted(quality) and set(r["kind"] for r in rows) <= {"label", "duplicate-conflict", "outlier"}
    assert len([r for r in rows if r["kind"] == "label"]) <= 2 * len(FLIPPED)  # not every image is a suspect
    assert _digest(data) == before  # nothing written into the user's folder, nothing changed


def test_a_copy_under_another_label_is_named_and_the_model_says_which(checked):
    data, report, _ = checked
    rows = {r["path"]: r for r in _rows(report.run)}
    original, copy = rows.get(str(data / "bright" / "003.png")), rows.get(str(data / "dark" / "copy-of-bright-003.png"))
    assert original is not None and original["kind"] == "duplicate-conflict"
    assert original["suggested_label"] == "bright" and copy is not None and copy["suggested_label"] == "bright"
    # the dark squares are all one picture (no noise), one of them filed under bar: that one is the suspect, not
    # the 24 copies that agree
    assert sum(r["kind"] == "duplicate-conflict" for r in rows.values()) == 1


def test_the_summary_gives_counts_noise_estimates_and_the_next_command(checked, capsys):
    data, report, _ = checked
    text = report.summary()
    assert "suspect(s) among" in text and f"imgclf check {data} --apply fixes.csv --output clean.csv" in text
    per_class = {c["class"]: c for c in json.loads((report.run / "labels.json").read_text())["per_class"]}
    assert per_class["dark"]["estimated_wrong"] > 0.03  # 3 of its 27 images belong elsewhere
    assert sum(c["images"] for c in per_class.values()) == 24 * 3 + len(FLIPPED) + 1
    assert (report.run / "labels.txt").read_text().strip() == text


def test_the_review_page_loads_its_images_and_its_decisions_become_the_downloaded_file(checked, tmp_path):
    data, report, before = checked
    page = (report.run / "review.html").read_text(encoding="utf-8")
    assert "http" not in page.split("<script>")[0]  # self-contained
    driver = headless_chrome("review.html")
    try:
        driver.get((report.run / "review.html").as_uri())
        loaded = driver.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        cards = driver.execute_script("return document.querySelectorAll('.card').length")
        driver.execute_script("const f = document.getElementById('filter'); f.value = 'dark'; f.onchange()")
        dark = driver.execute_script("return document.querySelectorAll('.card').length")
        driver.execute_script("const f = document.getElementById('filter'); f.value = ''; f.onchange()")
        body = driver.find_element("tag name", "body")
        body.send_keys("a")  # accept the first suspect's suggestion, then drop the second
        body.send_keys("d")
        driver.execute_script("URL.createObjectURL = blob => { window.saved = blob; return '#'; }")
        driver.find_element("id", "download").click()
        fixes = driver.execute_async_script("window.saved.text().then(arguments[arguments.length - 1])")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    rows = _rows(report.run)
    assert cards == len(rows) and len(loaded) == cards and all(loaded)
    assert 0 < dark < cards
    lines = fixes.strip().splitlines()
    assert lines[0] == "path,action,label" and len(lines) == 3, fixes
    assert lines[1] == f"{rows[0]['path']},relabel,{rows[0]['suggested_label']}"
    assert lines[2] == f"{rows[1]['path']},drop,{rows[1]['given_label']}"
    assert not errors, errors

    # the decisions applied: a cleaned list beside the data, the data itself untouched
    (tmp_path / "fixes.csv").write_text(fixes, encoding="utf-8")
    clean = tmp_path / "clean.csv"
    assert main(["check", str(data), "--apply", str(tmp_path / "fixes.csv"), "--output", str(clean)]) == 0
    with open(clean, newline="", encoding="utf-8") as f:
        cleaned = {r["path"]: r["label"] for r in csv.DictReader(f)}
    assert len(cleaned) == len(list(data.rglob("*.png"))) - 1
    assert cleaned[rows[0]["path"]] == rows[0]["suggested_label"] and rows[1]["path"] not in cleaned
    assert _digest(data) == before


def test_the_unreviewed_list_takes_the_sure_suggestions_drops_the_other_suspects_and_keeps_outliers(checked, tmp_path,
                                                                                                    capsys):
    data, report, before = checked
    rows = _rows(report.run)
    dropped = 0
    for threshold in (0.6, 0.95):
        sure = {r["path"]: r["suggested_label"] for r in rows
                if r["kind"] != "outlier" and float(r["runner_up"].split(";")[0].split(":")[1]) >= threshold}
        unsure = {r["path"] for r in rows if r["kind"] != "outlier"} - set(sure)
        clean = tmp_path / f"auto-{threshold}.csv"
        assert main(["check", str(data), "--apply", str(report.run / "label_issues.csv"), "--min-confidence",
                     str(threshold), "--output", str(clean)]) == 0
        changed = sum(r["path"] in sure and r["suggested_label"] != r["given_label"] for r in rows)
        assert f"({changed} relabelled, {len(unsure)} dropped)" in capsys.readouterr().out
        with open(clean, newline="", encoding="utf-8") as f:
            cleaned = {r["path"]: r["label"] for r in csv.DictReader(f)}
        assert len(cleaned) == len(list(data.rglob("*.png"))) - len(unsure) and not unsure & set(cleaned)
        assert all(cleaned[p] == label for p, label in sure.items())
        assert all(cleaned[r["path"]] == r["given_label"] for r in rows if r["kind"] == "outlier")
        assert sure and any(cleaned[p] != Path(p).parent.name for p in sure)  # the flips found are turned back
        dropped += len(unsure)
    assert dropped  # the stricter threshold left some suspects unsure (probabilities of 0.88-0.97 here)
    assert main(["check", str(data), "--apply", str(report.run / "label_issues.csv"), "--min-confidence", "1.5",
                 "--output", str(tmp_path / "x.csv")]) == 2
    assert "not a probability" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
    assert _digest(data) == before


def test_the_list_applies_to_the_data_named_relative_to_the_working_folder(checked, tmp_path, monkeypatch):
    # label_issues.csv holds absolute paths; a user who checked "data" from its parent folder applies it the same way
    data, report, before = checked
    monkeypatch.chdir(data.parent)
    clean = tmp_path / "clean.csv"
    assert main(["check", data.name, "--apply", str(report.run / "label_issues.csv"), "--min-confidence", "0.5",
                 "--output", str(clean)]) == 0
    with open(clean, newline="", encoding="utf-8") as f:
        cleaned = {r["path"]: r["label"] for r in csv.DictReader(f)}
    assert any(cleaned.get(r["path"], r["given_label"]) != r["given_label"] for r in _rows(report.run))
    assert _digest(data) == before


def test_an_existing_cross_validation_is_scored_without_training(checked, capsys):
    data, report, _ = checked
    first = _rows(report.run)
    (report.run / "oof.npz").unlink()  # as an imgclf cv run from before oof.npz: the folds predict again
    folds = {p: p.stat().st_mtime for p in report.run.glob("fold-*/best.safetensors")}
    again = find_label_issues(str(data), from_cv="l", project=str(report.run.parent), quiet=True)
    assert [r["path"] for r in _rows(again.run)] == [r["path"] for r in first]
    assert {p: p.stat().st_mtime for p in report.run.glob("fold-*/best.safetensors")} == folds


def test_a_killed_check_resumes_from_the_folds_done(checked):
    data, report, _ = checked
    kept = (report.run / "fold-0" / "best.safetensors").stat().st_mtime
    shutil.rmtree(report.run / "fold-2")  # killed before the last fold
    (report.run / "oof.npz").unlink()
    again = find_label_issues(resume=True, name="l", project=str(report.run.parent), quiet=True)
    assert (report.run / "fold-2" / "eval.json").exists() and len(_rows(again.run)) > 0
    assert (report.run / "fold-0" / "best.safetensors").stat().st_mtime == kept


def test_fewer_images_than_folds_means_fewer_folds_and_one_image_is_refused():
    said = []
    assert fold_count(np.array([0] * 10 + [1] * 3), ["a", "b"], 5, said.append) == 3 and "fewer than" in said[0]
    with pytest.raises(UserError, match="class 'b' has a single image"):
        fold_count(np.array([0] * 10 + [1]), ["a", "b"], 5, said.append)


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    data = write_class_folders(tmp_path / "data", 4)
    (data / "odd").mkdir()
    shutil.copy(data / "bar" / "000.png", data / "odd" / "only.png")
    assert main(["check", str(data), "--labels", "--project", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "class 'odd' has a single image" in err and len(err.strip().splitlines()) == 1
    assert main(["check", str(data), "--apply", str(tmp_path / "fixes.csv")]) == 2
    assert "--output clean.csv" in capsys.readouterr().err
    (tmp_path / "fixes.csv").write_text("path,action,label\nelsewhere.png,drop,bar\n")
    assert main(["check", str(data), "--apply", str(tmp_path / "fixes.csv"), "--output", str(tmp_path / "c.csv")]) == 2
    assert "not images of" in capsys.readouterr().err and not (tmp_path / "c.csv").exists()
    assert main(["check", "fashion-mnist-sample", "--apply", str(tmp_path / "fixes.csv"), "--output",
                 str(tmp_path / "c.csv")]) == 2  # a built-in set's images are not files to list
    assert "cannot be relabelled this way" in capsys.readouterr().err
    labels = tmp_path / "multi.csv"
    labels.write_text("path,labels\n" + "".join(f"{p},bar|dark\n" for p in sorted(data.rglob("*.png"))))
    assert main(["check", str(labels), "--labels", "--project", str(tmp_path / "runs"), "--quiet"]) == 2
    assert "multi-label data is not supported" in capsys.readouterr().err


def test_the_default_model_is_a_cnn_for_small_images_and_cached_backbone_features_for_photos(tmp_path):
    from imgclf.data.sources import load_source

    small = load_source(str(write_class_folders(tmp_path / "small", 3)))
    assert default_training(small, None, None, {}) == ("cnn", CNN_EPOCHS, {}) and CNN_EPOCHS >= 10  # a judge
    photos = tmp_path / "photos"
    for k, name in enumerate(("cat", "dog")):
        (photos / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (320, 240), (40 * i, 100 * k, 90)).save(photos / name / f"{i}.jpg")
    model, epochs, options = default_training(load_source(str(photos)), None, None, {"seed": 1})
    assert (model, epochs) == ("efficientnet_lite0", None)
    assert options == {"pretrained": True, "mode": "feature-extract", "seed": 1}
    assert default_training(load_source(str(photos)), "resnet18", 3, {}) == ("resnet18", 3, {})  # the user's wins


def test_the_folds_leave_a_test_split_alone_and_their_out_of_fold_probabilities_are_the_models(tmp_path):
    from imgclf.inference.classifier import Classifier

    data = tmp_path / "data"
    write_class_folders(data / "train", 12, seed=1)
    write_class_folders(data / "test", 4, seed=2)
    report = find_label_issues(str(data), project=str(tmp_path / "runs"), name="t", **OPTIONS)
    oof = np.load(report.run / "oof.npz")
    for k in range(3):  # each fold scored its own held-out images (no pass over the test images: a check needs none)
        fold = report.run / f"fold-{k}"
        assert json.loads((fold / "eval.json").read_text())["split"] == "val"
        clf = Classifier.load(fold)
        images, _ = clf.eval_images(split="val")
        rows = np.flatnonzero(np.isin(oof["image"], images.paths))
        order = np.argsort(oof["image"][rows])
        mine = np.argsort(np.array(images.paths))
        assert len(rows) == len(images) == 12
        np.testing.assert_allclose(oof["probs"][rows][order], clf.predict_proba(images.x).numpy()[mine], atol=1e-5)
