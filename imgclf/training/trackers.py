"""Logging a run to the experiment trackers people already watch: TensorBoard and MLflow.

Both are callbacks (``--log tensorboard,mlflow``, or ``imgclf.train(..., callbacks=[TensorBoardLogger()])``). A
tracker that fails (a server down, a full disk) warns once and stops logging; training goes on, since the run
directory holds everything anyway.
"""
from __future__ import annotations

import importlib.util
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import yaml

from ..errors import UserError
from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer

# what an MLflow run keeps of the run directory when it is there (an exported model too)
ARTIFACTS = ("report.html", "best.safetensors", "labels.json", "config.yaml", "metrics.csv", "eval.json",
             "threshold.json", "model.onnx", "curves.png", "confusion_matrix.png")
FIGURES = {"confusion_matrix": "confusion_matrix.png", "curves": "curves.png", "per_label": "per_label.png"}


def run_hparams(run: Path) -> dict[str, Any]:
    """The run's settings as flat scalars (what TensorBoard's HParams tab and MLflow parameters take)."""
    try:
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return {k: (", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in config.items()
            if v is not None and isinstance(v, (str, int, float, bool, list, tuple))}


class _Tracker(Callback):
    """What both trackers share: the run directory they describe, and failing softly."""

    rank_zero_only = True
    name = ""

    def __init__(self) -> None:
        self.failed = False
        self.run: Path | None = None
        self.log: Callable[[str], None] = print

    def _safely(self, what: str, action: Callable[[], Any]) -> Any:
        if self.failed:
            return None
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - a tracker's failure must never stop training
            self.failed = True
            self.log(f"warning: {self.name} logging stopped ({what}: {type(exc).__name__}: {str(exc)[:200]}); "
                     f"training goes on, and the run directory has everything")
            return None

    def on_train_begin(self, trainer: "Trainer") -> None:
        self.log = trainer.log
        if self.run is None and trainer.checkpoint_path is not None:
            self.run = Path(trainer.checkpoint_path).parent


class TensorBoardLogger(_Tracker):
    """TensorBoard event files in the run directory (``tensorboard --logdir runs`` shows every run): the running
    loss and accuracy and the learning rate(s) after the first step and every 10, every epoch's metrics, the figures
    at the end, and the settings with the final metrics for the HParams tab."""

    name = "TensorBoard"

    def __init__(self, log_dir: str | Path | None = None) -> None:
        super().__init__()
        self.run = Path(log_dir) if log_dir is not None else None
        self.writer = None
        self.epoch = 0

    def on_train_begin(self, trainer: "Trainer") -> None:
        super().on_train_begin(trainer)
        from torch.utils.tensorboard import SummaryWriter

        # drop the events logged after the step training starts from: those of an interrupted run's last steps on
        # --resume, or all of them when --exist-ok trains over a run. TensorBoard purges every tag from that step
        # on, so it must also stay above the epoch numbers the epoch scalars were logged at.
        purge = trainer.start_epoch * trainer.steps_per_epoch + trainer.done_steps
        if trainer.start_epoch:
            purge = max(purge, trainer.start_epoch + 1)
        self.writer = self._safely("opening the event file",
                                   lambda: SummaryWriter(str(self.run or "."), purge_step=purge))

    def on_epoch_begin(self, trainer: "Trainer", epoch: int) -> None:
        self.epoch = epoch

    def on_batch_end(self, trainer: "Trainer", step: int, logs: dict[str, float]) -> None:
        if self.writer is None:
            return
        global_step = self.epoch * trainer.steps_per_epoch + step

        def write() -> None:
            self.writer.add_scalar("step/loss", logs["loss"], global_step)
            self.writer.add_scalar("step/acc", logs["acc"], global_step)
            rates = [group["lr"] for group in trainer.optimizer.param_groups]
            if len(set(rates)) == 1:  # weight-decay and no-decay groups move together
                self.writer.add_scalar("step/lr", rates[0], global_step)
            else:  # a backbone and a head, or layer-wise decay
                for i, rate in enumerate(rates):
                    self.writer.add_scalar(f"step/lr_group{i}", rate, global_step)
        self._safely("writing step scalars", write)

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        if self.writer is None:
            return

        def write() -> None:
            for key, value in logs.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"epoch/{key}", value, epoch + 1)
            self.writer.flush()
        self._safely("writing epoch scalars", write)

    def on_run_end(self, trainer: "Trainer", run: Path, results: dict[str, float]) -> None:
        if self.writer is None:
            return
        self._safely("writing the figures and hparams", lambda: self._finish(run, results))
        self.close()

    def _finish(self, run: Path, results: dict[str, float]) -> None:
        import numpy as np
        from PIL import Image
        from torch.utils.tensorboard.summary import hparams

        for tag, file in FIGURES.items():
            if (run / file).is_file():
                with Image.open(run / file) as image:
                    self.writer.add_image(f"figures/{tag}", np.asarray(image.convert("RGB")), dataformats="HWC")
        metrics = {f"hparam/{k}": v for k, v in results.items()}
        # the summaries straight into this run's event file (SummaryWriter.add_hparams would start a sub-run)
        for summary in hparams(run_hparams(run), metrics):
            self.writer.file_writer.add_summary(summary)
        for key, value in metrics.items():
            self.writer.add_scalar(key, value)

    def on_train_end(self, trainer: "Trainer") -> None:
        if trainer.stop_signal is not None:  # interrupted: no run end will come
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self._safely("closing the event file", self.writer.close)
            self.writer = None


class MLflowLogger(_Tracker):
    """An MLflow run per imgclf run: the settings as parameters, every epoch's metrics, tags (data, model, mode),
    and the run directory's report, weights, labels and exported model as artifacts. The tracking server is
    ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else a local SQLite store in ``runs/mlruns`` (the project
    folder's: ``mlflow ui --backend-store-uri sqlite:///runs/mlruns/mlflow.db`` shows it);
    the experiment is the project folder's name. A resumed run goes on logging into the same MLflow run."""

    name = "MLflow"

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None) -> None:
        super().__init__()
        if importlib.util.find_spec("mlflow") is None:
            raise UserError("MLflowLogger needs MLflow: pip install 'imgclf[mlflow]'")
        # a server that is down answers at once instead of after minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.client = None
        self.run_id: str | None = None

    def on_train_begin(self, trainer: "Trainer") -> None:
        super().on_train_begin(trainer)
        self._safely("starting the MLflow run", self._start)

    def _start(self) -> None:
        from mlflow import MlflowClient

        project = self.run.parent if self.run is not None else Path("runs")
        uri, artifacts = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"), None  # a server keeps its own
        if not uri:  # a local SQLite store and its artifacts (MLflow's file store is retired)
            local = (project / "mlruns").resolve()
            local.mkdir(parents=True, exist_ok=True)
            uri, artifacts = f"sqlite:///{local / 'mlflow.db'}", (local / "artifacts").as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        if self.run_id is not None:  # resumed
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = self.experiment or project.resolve().name
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(name, artifacts)
        settings = run_hparams(self.run) if self.run is not None else {}
        tags = {k: str(settings[k]) for k in ("data", "model", "mode", "task") if k in settings}
        run = self.client.create_run(experiment, run_name=self.run.name if self.run else None,
                                     tags=tags | {"imgclf.run_dir": str(self.run.resolve()) if self.run else ""})
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in settings.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.log(f"MLflow: run {self.run_id} in experiment {name!r} at {uri}")

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, epoch + 1) for k, v in logs.items()
                   if isinstance(v, (int, float)) and math.isfinite(v)]
        self._safely("logging metrics", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def on_run_end(self, trainer: "Trainer", run: Path, results: dict[str, float]) -> None:
        if self.run_id is None:
            return

        def finish() -> None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in results.items()])
            for file in ARTIFACTS:
                if (run / file).is_file():
                    self.client.log_artifact(self.run_id, str(run / file))
            self.client.set_terminated(self.run_id, "FINISHED")
        self._safely("logging the results", finish)

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.run_id is not None and trainer.stop_signal is not None:
            self._safely("ending the run", lambda: self.client.set_terminated(self.run_id, "KILLED"))

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")


def loggers(names: list[str]) -> list[Callback]:
    """The tracker callbacks ``--log`` names."""
    made: dict[str, Callable[[], Callback]] = {"tensorboard": TensorBoardLogger, "mlflow": MLflowLogger}
    return [made[name]() for name in names]
