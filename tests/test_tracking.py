"""Experiment trackers: TensorBoard event files read back with TensorBoard's own reader, and MLflow against a real
tracking server (SQLite backend) started on a loopback port, read back through its client; a server that is down
warns once and never stops training."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from imgclf.cli.main import main
from imgclf.errors import Interrupted, UserError
from imgclf.training.callbacks import Callback
from imgclf.training.job import train

from .conftest import TINY


def _events(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_logs_steps_epochs_figures_and_hparams(split_folder, run_cwd):
    clf = train(str(split_folder), epochs=3, name="tb", log=["tensorboard"], **{**TINY, "plots": True,
                                                                               "report": False})
    acc = _events(clf.run.path)
    scalars = acc.Tags()["scalars"]
    for tag in ("step/loss", "step/acc", "step/lr", "epoch/train_loss", "epoch/val_loss", "epoch/val_acc",
                "epoch/lr", "hparam/test_accuracy", "hparam/best_val_acc"):
        assert tag in scalars, (tag, scalars)
    assert [e.step for e in acc.Scalars("epoch/val_acc")] == [1, 2, 3]
    metrics = clf.run.metrics()
    assert [round(e.value, 4) for e in acc.Scalars("epoch/val_acc")] == [round(r["val_acc"], 4) for r in metrics]
    steps = [e.step for e in acc.Scalars("step/loss")]
    assert steps == sorted(steps) and len(steps) >= 3 and steps[-1] % 3 == 0  # the last step of epoch 3
    assert acc.Scalars("hparam/test_accuracy")[0].value == pytest.approx(clf.evaluation.accuracy)
    assert {"figures/confusion_matrix", "figures/curves"} <= set(acc.Tags()["images"])
    hparams = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    assert b"cnn:8-m-16-m-fc16" in hparams["_hparams_/session_start_info"]  # the settings are there


class StopAfterTwo(Callback):
    """Ctrl-C after the second epoch (what the trainer's signal handler records)."""

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == 1:
            trainer.stop_signal = signal.SIGINT


def test_tensorboard_resume_goes_on_in_the_same_run(split_folder, run_cwd):
    with pytest.raises(Interrupted):
        train(str(split_folder), epochs=3, name="tbr", log=["tensorboard"], callbacks=[StopAfterTwo()], **TINY)
    train(resume=True, name="tbr")
    acc = _events(run_cwd / "runs" / "tbr")
    assert [e.step for e in acc.Scalars("epoch/val_acc")] == [1, 2, 3]  # once each, none twice


def test_unknown_tracker_is_a_one_line_error(split_folder, run_cwd, capsys):
    with pytest.raises(SystemExit) as exit:  # argparse's own usage error
        main(["train", str(split_folder), "--log", "wandb", "--epochs", "1"])
    assert exit.value.code == 2
    assert "'wandb' is not one of: tensorboard, mlflow" in capsys.readouterr().err
    with pytest.raises(UserError, match="not one of"):  # the Python API checks it too
        train(str(split_folder), log=["wandb"], **TINY)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    pytest.importorskip("mlflow", reason="MLflow is the optional extra imgclf[mlflow]; make setup installs it")
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    server = subprocess.Popen([mlflow, "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                               "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], cwd=root, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            if urllib.request.urlopen(f"{uri}/health", timeout=2).read() == b"OK":
                break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("the MLflow tracking server did not start")
            time.sleep(0.5)
    yield uri
    os.killpg(server.pid, 15)
    server.wait(timeout=30)


def test_mlflow_logs_params_metrics_tags_and_artifacts_to_a_server(split_folder, run_cwd, mlflow_server,
                                                                    monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    clf = train(str(split_folder), epochs=3, name="ml", log=["mlflow"], **{**TINY, "plots": True})
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("runs")  # the project folder's name
    (run,) = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'ml'")
    assert run.info.status == "FINISHED"
    assert run.data.params["model"] == "cnn:8-m-16-m-fc16" and run.data.params["epochs"] == "3"
    assert run.data.tags["mode"] == "scratch" and run.data.tags["data"] == str(split_folder)
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [m.step for m in history] == [1, 2, 3]
    assert [round(m.value, 4) for m in history] == [round(r["val_acc"], 4) for r in clf.run.metrics()]
    assert run.data.metrics["test_accuracy"] == pytest.approx(clf.evaluation.accuracy)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "best.safetensors", "labels.json"} <= artifacts


def test_mlflow_server_down_warns_once_and_training_goes_on(split_folder, run_cwd, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    started = time.perf_counter()
    clf = train(str(split_folder), epochs=2, name="down", log=["mlflow"], **{**TINY, "quiet": False})
    assert time.perf_counter() - started < 60  # no minutes of retries
    out = capsys.readouterr().out
    assert out.count("MLflow logging stopped") == 1
    assert (clf.run / "best.safetensors").exists() and len(clf.run.metrics()) == 2


def test_mlflow_not_installed_names_the_extra(split_folder, run_cwd, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    assert main(["train", str(split_folder), "--log", "mlflow", "--epochs", "1"]) == 2
    assert "pip install 'imgclf[mlflow]'" in capsys.readouterr().err
    assert not (run_cwd / "runs").exists()
