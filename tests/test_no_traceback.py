"""Every command with garbage arguments and hostile files: one line naming the problem, the right exit code, never
a Python traceback, and no file left half-written."""
from __future__ import annotations

import errno
import json
import pickle
import shutil
import traceback

import onnx
import pytest
import yaml

from imgclf.cli.main import main
from imgclf.deploy.export import export
from imgclf.training.job import train

from .conftest import TINY, write_class_folders


class Evil:
    """A pickle that would run a command when unpickled."""

    def __reduce__(self):
        return (print, ("pwned",))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A good run, copies of it broken in each way a user meets, an exported model and its broken copies."""
    root = tmp_path_factory.mktemp("sweep")
    data = write_class_folders(root / "data", 6)
    good = train(str(data), epochs=1, project=str(root / "runs"), name="good", **TINY).run.path
    broken = {}

    def copy(name: str):
        broken[name] = root / "runs" / name
        shutil.copytree(good, broken[name])
        return broken[name]

    (copy("config-list") / "config.yaml").write_text("- 1\n- 2\n")
    cfg = yaml.safe_load((good / "config.yaml").read_text())
    (copy("config-abc") / "config.yaml").write_text(yaml.safe_dump({**cfg, "img_size": "abc"}))
    (copy("metrics-abc") / "metrics.csv").write_text("epoch,loss\nabc,def\n")
    (copy("labels-dict") / "labels.json").write_text('{"a": 1}')
    pickle.dump(Evil(), (copy("evil-pickle") / "last.pt").open("wb"))
    (broken["evil-pickle"] / "status.json").write_text('{"status": "interrupted"}')  # so --resume reads last.pt
    exported = export(train_classifier(good), "onnx", output=root / "model.onnx").path
    for name, value in (("bad-json", "[not json"), ("dict-labels", json.dumps({"a": 1}))):
        model = onnx.load(str(exported))
        for prop in model.metadata_props:
            prop.value = value if prop.key == "labels" else prop.value
        onnx.save(model, str(root / f"{name}.onnx"))
    image = next((data / "bar").iterdir())
    return {"root": root, "data": data, "good": good, "image": image, **broken}


def train_classifier(path):
    from imgclf.inference.classifier import Classifier
    return Classifier.load(path, device="cpu")


def sweep(world) -> list[tuple[list[str], int]]:
    """(argv, expected exit code): 2 for a user mistake, 1 for an I/O failure."""
    r, image, data = world["root"], str(world["image"]), str(world["data"])
    runs = ["--project", str(r / "runs")]
    table = [
        (["train", str(r / "nope")], 2), (["train", data, "--epochs", "0"], 2),
        (["train", data, "--name", "x" * 300, *runs, "--epochs", "1"], 2),
        (["train", "--resume", "--name", "evil-pickle", *runs], 2), (["cv", str(r / "nope")], 2),
        (["lr-find", str(r / "nope")], 2), (["tune", str(r / "nope")], 2), (["check", str(r / "nope")], 2),
        (["evaluate", str(r / "nope")], 2), (["predict", str(r / "nope"), image], 2),
        (["predict", str(world["good"]), str(r / "nope.png")], 2),
        (["predict", str(world["good"]), image, "--output", "/missing_dir/x.csv"], 2),
        (["predict", str(world["good"]), image, "--output", str(r / "x.txt")], 2),
        (["info", str(r / "nope")], 2), (["summary", "no_such_model"], 2), (["explain", str(r / "nope"), image], 2),
        (["report", str(r / "nope")], 2), (["export", str(r / "nope")], 2), (["benchmark", str(r / "nope")], 2),
        (["serve", str(r / "nope")], 2), (["serve", str(world["good"]), "--api-key", ""], 2),
        (["compare", str(r / "nope"), str(world["good"])], 2), (["runs", str(r / "nope")], 2),
        (["viz", "kernel", "--image", str(r / "nope.png")], 2),
    ]
    for name in ("config-list", "config-abc", "labels-dict"):
        table += [(["predict", str(world[name]), image], 2), (["info", str(world[name])], 2),
                  (["compare", str(world[name]), str(world["good"])], 0 if name == "labels-dict" else 2),
                  (["runs", str(r / "runs")], 0)]
    table += [(["info", str(world["metrics-abc"])], 2), (["runs", str(r / "runs")], 0)]
    for name in ("bad-json", "dict-labels"):
        table += [(["predict", str(r / f"{name}.onnx"), image], 2), (["serve", str(r / f"{name}.onnx")], 2)]
    return table


def test_no_command_prints_a_traceback(world, capsys, monkeypatch, tmp_path):
    import uvicorn

    monkeypatch.chdir(tmp_path)  # what a command writes by default (compare.html, runs/) lands here

    def started(*args, **kwargs):
        raise AssertionError("the server started on bad input")

    monkeypatch.setattr(uvicorn.Server, "run", started)
    failures = []
    for argv, expected in sweep(world):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own errors: exit 2, a usage line
            code = exc.code
        except BaseException:  # noqa: BLE001 - what a user would see as a traceback
            failures.append(f"{argv}: {traceback.format_exc().splitlines()[-1]}")
            continue
        out = capsys.readouterr()
        if code != expected or "Traceback" in out.err + out.out:
            failures.append(f"{argv}: exit {code}, expected {expected}: {out.err.strip()[-300:]}")
        elif expected and len([line for line in out.err.splitlines() if "error" in line]) != 1:
            failures.append(f"{argv}: not one error line: {out.err.strip()[-300:]}")
    assert not failures, f"{len(failures)} command(s) failed:\n" + "\n".join(failures)
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert all(p.startswith("compare") for p in made), f"a failed command left {made}"
    assert "pwned" not in capsys.readouterr().out


def test_a_full_disk_is_one_line_and_leaves_no_empty_csv(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.csv"
    out.symlink_to("/dev/full")  # every write fails with ENOSPC
    assert main(["predict", str(world["good"]), str(world["data"]), "--output", str(out), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "disk is full" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

    import matplotlib.figure

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    code = main(["train", str(world["data"]), "--epochs", "1", "--project", str(tmp_path / "runs"), "--model",
                 "cnn:8-m-16-m-fc16", "--batch-size", "8", "--quiet", "--workers", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "disk is full" in err and str(tmp_path / "runs") in err and "Traceback" not in err


class FullDisk:
    """A file on a full disk: writes are buffered, and every flush fails."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    close = flush


def test_a_prediction_file_that_never_reached_the_disk_is_removed_and_a_partial_one_resumes(tmp_path, monkeypatch):
    from pathlib import Path

    from imgclf.inference.inputs import Prediction, PredictionWriter

    path, real_open = tmp_path / "out.csv", Path.open

    def on_a_full_disk(self, mode="r", *args, **kwargs):
        if self == path and "w" in mode:
            real_open(self, mode, *args, **kwargs).close()  # created, 0 bytes: what a full disk leaves
            return FullDisk()
        return real_open(self, mode, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "open", on_a_full_disk)
        writer = PredictionWriter(path, 1)
        writer.write(Prediction("a.png", ["cat"], [0.9]))
        with pytest.raises(OSError):
            writer.flush()
        assert not path.exists()
    writer = PredictionWriter(path, 1)
    writer.write(Prediction("a.png", ["cat"], [0.9]))
    writer.flush()
    writer.file.write("b.png,ca")  # the disk filled in the middle of a row
    writer.file.close()
    assert PredictionWriter(path, 1, resume=True).done == ["a.png"]
