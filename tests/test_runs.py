"""``imgclf runs`` lists finished, interrupted and failed runs as they are; ``imgclf compare`` puts runs side by side
in a PNG and an HTML page that renders in headless Chromium with its image loaded."""
from __future__ import annotations

import json
import shutil
import signal

import pytest

from imgclf.cli.main import main
from imgclf.errors import Interrupted
from imgclf.reports.runs import list_runs
from imgclf.training.callbacks import Callback
from imgclf.training.job import train

from .conftest import TINY, headless_chrome


class StopAfter(Callback):
    """Ctrl-C after the first epoch (what the trainer's signal handler would record)."""

    def on_epoch_end(self, trainer, epoch, logs):
        trainer.stop_signal = signal.SIGINT


class Crash(Callback):
    def on_epoch_end(self, trainer, epoch, logs):
        raise RuntimeError("disk on fire")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from .conftest import write_class_folders

    root = tmp_path_factory.mktemp("runs")
    data = root / "data"
    write_class_folders(data / "train", 12, seed=1)
    write_class_folders(data / "test", 5, seed=3)
    runs = root / "runs"
    common = {**TINY, "project": str(runs)}
    train(str(data), epochs=3, name="done", **common)
    train(str(data), epochs=2, name="other", **{**common, "lr": 0.003, "model": "cnn:8-m-fc16"})
    with pytest.raises(Interrupted):
        train(str(data), epochs=4, name="stopped", callbacks=[StopAfter()], **common)
    with pytest.raises(RuntimeError):
        train(str(data), epochs=4, name="crashed", callbacks=[Crash()], **common)
    return runs


def test_runs_lists_each_state_with_its_figures(project, tmp_path, capsys):
    table = list_runs(project).set_index("name")
    assert table.loc["done", "status"] == "finished" and table.loc["done", "epochs"] == 3
    assert table.loc["done", "test_acc"] == json.loads((project / "done" / "eval.json").read_text())["accuracy"]
    assert table.loc["done", "parameters"] > 0 and table.loc["done", "wall_s"] > 0
    assert table.loc["stopped", "status"] == "interrupted" and table.loc["stopped", "epochs"] == 1
    assert table.loc["stopped", "planned"] == 4
    assert table.loc["crashed", "status"] == "failed"
    assert "disk on fire" in json.loads((project / "crashed" / "status.json").read_text())["error"]

    out = tmp_path / "runs.json"
    assert main(["runs", str(project), "--sort", "test_acc", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "finished" in printed and "interrupted" in printed and "failed" in printed and "3/3" in printed
    rows = json.loads(out.read_text())
    scores = [r["test_acc"] for r in rows if r["test_acc"] is not None]
    assert scores == sorted(scores, reverse=True) and rows[0]["name"] in ("done", "other")
    assert main(["runs", str(project), "--sort", "bogus"]) == 2
    assert "is not a column" in capsys.readouterr().err


def test_a_killed_run_reads_as_interrupted(project, tmp_path):
    killed = tmp_path / "proj" / "killed"
    shutil.copytree(project / "done", killed)
    status = json.loads((killed / "status.json").read_text())
    # what a SIGKILL leaves: still "running", its process gone
    (killed / "status.json").write_text(json.dumps(status | {"status": "running", "pid": 2 ** 22 + 12345}))
    assert list_runs(tmp_path / "proj").loc[0, "status"] == "interrupted"


def test_compare_writes_png_and_html_with_the_differences(project, tmp_path, capsys):
    page = tmp_path / "cmp.html"
    assert main(["compare", str(project / "done"), str(project / "other"), "--output", str(page)]) == 0
    printed = capsys.readouterr().out
    assert "lr" in printed and "model" in printed  # the settings that differ
    html = page.read_text()
    assert (tmp_path / "cmp.png").stat().st_size > 10_000
    assert "Settings that differ" in html and "cnn:8-m-fc16" in html and "Accuracy per class" in html
    assert "data:image/png;base64," in html
    assert main(["compare", str(project / "done"), str(project / "other"), "--output", str(page)]) == 2
    assert "--overwrite" in capsys.readouterr().err  # never overwrites a file unasked


def test_compare_refuses_one_run_or_a_folder_that_is_not_a_run(project, tmp_path, capsys):
    assert main(["compare", str(project / "done")]) == 2
    assert "two or more runs" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(project / "done"), str(tmp_path / "empty")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_compare_renders_in_headless_chromium(project, tmp_path):
    driver = headless_chrome("compare.html")
    page = tmp_path / "compare.html"
    try:
        main(["compare", str(project / "done"), str(project / "other"), "--output", str(page)])
        driver.get(page.as_uri())
        loaded = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 500 && i.naturalHeight > 100)")
        sections = driver.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    finally:
        driver.quit()
    assert loaded == [True]
    assert sections == ["Metrics", "Curves", "Settings that differ", "Accuracy per class"]
    assert not errors, errors
