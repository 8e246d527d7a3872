"""The run directory: one folder per experiment holding its config, labels, weights, metrics and plots.

``runs/<name>/`` is enough on its own to predict: ``config.yaml`` rebuilds the model and its preprocessing,
``labels.json`` names the classes and ``best.safetensors`` holds the weights.
"""
from __future__ import annotations

import atexit
import csv
import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .config import TrainConfig
from .errors import UserError, warn
from .files import write_csv

CONFIG, LABELS, METRICS, BEST, LAST, SKIPPED, THRESHOLD, STATUS = (
    "config.yaml", "labels.json", "metrics.csv", "best.safetensors", "last.pt", "skipped.csv", "threshold.json",
    "status.json")
CV_FILE = "cv.json"  # at the top of a cross-validation folder (imgclf cv): the folds' shared options
OOF_PROBS = "oof.npz"  # beside it: every pooled image's out-of-fold class probabilities (imgclf check --labels)
LOCK = ".lock"  # the PID and host of the process writing the run, for its life (RunLock)
# The final evaluation's labels and probabilities, so that a loaded run has its evaluation back (clf.evaluation)
EVALUATION = "evaluation.npz"


def slug(text: str) -> str:
    """A safe folder name made of ``text``."""
    return re.sub(r"[^\w.-]+", "-", text, flags=re.UNICODE).strip("-.").lower() or "run"


MAX_NAME_BYTES = 240


def check_run_name(name: str) -> str:
    """A run name is one folder name inside the project folder: no path separators, not ``.`` or ``..``."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name != name.strip() or "\0" in name:
        raise UserError(f"--name {name!r}: a run name is a single folder name (letters, digits, '-', '_', '.'), "
                        f"not a path; put runs elsewhere with --project DIR")
    if len(name.encode()) > MAX_NAME_BYTES:  # a folder name has at most 255 bytes; room for fresh_path's "-2"
        raise UserError(f"--name is {len(name.encode())} bytes long; a run name may have at most {MAX_NAME_BYTES}")
    return name


def fresh_path(path: Path, folder: bool = False) -> Path:
    """``path`` if nothing is there, else the first free ``name-2.ext`` (``name-2`` for a ``folder``),
    ``name-3.ext``...: Ultralytics' rule for default output names, so a second run never overwrites the first's
    files."""
    stem, suffix = (path.name, "") if folder else (path.stem, path.suffix)
    n, candidate = 2, path
    while candidate.exists():
        candidate, n = path.with_name(f"{stem}-{n}{suffix}"), n + 1
    return candidate


def output_file(given: str | None, default: Path, overwrite: bool = False, option: str = "--output") -> Path:
    """Where a command writes one file: the user's ``option`` (an existing file only with ``overwrite``), else
    ``default``, numbered (``kernel-2.png``) when taken unless ``overwrite``."""
    if given:
        path = Path(given).expanduser()
        if path.exists() and not overwrite:
            raise UserError(f"{option} {path}: the file exists; pass --overwrite to replace it, or choose another "
                            f"name")
    else:
        path = default if overwrite else fresh_path(default)
    return path


def output_dir(given: str | None, default: Path, names: list[str], overwrite: bool = False,
               option: str = "--output-dir") -> Path:
    """Where a command writes the files ``names``: the user's ``option`` folder (refused when one of them is
    already there, unless ``overwrite``), else ``default``, numbered (``eval/food-2``) when it exists. Nothing is
    created yet, so a command that fails first leaves no empty folder."""
    if given:
        path = Path(given).expanduser()
        taken = [n for n in names if (path / n).exists()]
        if taken and not overwrite:
            raise UserError(f"{option} {path}: {', '.join(taken[:3])} exist(s) there; pass --overwrite to replace "
                            f"them, or choose another folder")
    else:
        path = default if overwrite else fresh_path(default, folder=True)
    return path


def kept_epoch(path: Path) -> int | None:
    """The epoch (from 1) whose weights a best checkpoint holds, from its safetensors metadata."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np") as f:
            epoch = (f.metadata() or {}).get("epoch")
    except (OSError, SafetensorError):
        return None
    return int(epoch) if epoch and epoch.isdigit() else None


@dataclass
class RunDir:
    """Paths inside one run directory."""

    path: Path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, project: str, name: str | None, default_name: str, exist_ok: bool = False) -> "RunDir":
        """A new run folder: ``name`` if given (refused if it holds a run, unless ``exist_ok``), else a fresh one."""
        root = Path(project)
        if name:
            path = root / check_run_name(name)
            if (path / CONFIG).exists() and not exist_ok:
                raise UserError(f"run {path} already exists: pass --resume to continue it, --exist-ok to train "
                                f"over it, or choose another --name")
        else:
            path = fresh_path(root / slug(default_name), folder=True)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def open(cls, run: str | Path) -> "RunDir":
        """An existing run, by path or by name under ``runs/``."""
        path = Path(run)
        candidates = [path, Path("runs") / path] if not path.is_absolute() else [path]
        for candidate in candidates:
            if (candidate / CONFIG).is_file():
                return cls(candidate)
        if path.is_dir():
            raise UserError(f"{path} is not a run directory (no {CONFIG}); give a folder made by 'imgclf train'")
        if path.is_file():
            raise UserError(f"{path} is a file, not a run directory or an exported .onnx model; give runs/<name> "
                            f"(made by 'imgclf train') or a model.onnx (made by 'imgclf export')")
        raise UserError(f"{run}: no such run; give a run directory such as runs/<name> (see 'ls runs')")

    @classmethod
    def latest(cls, project: str) -> "RunDir":
        runs = sorted((p for p in Path(project).glob(f"*/{LAST}")), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise UserError(f"--resume: no run with a checkpoint under {project}/; pass --name RUN")
        return cls(runs[-1].parent)

    def config(self) -> TrainConfig:
        return TrainConfig.load(self / CONFIG)

    def save_labels(self, classes: list[str]) -> None:
        (self / LABELS).write_text(json.dumps(classes, ensure_ascii=False, indent=1), encoding="utf-8")

    def save_threshold(self, threshold: float | list[float], positive: str | list[str], **facts: object) -> None:
        """The run's decision threshold(s): a two-class run answers ``positive`` from p(``positive``) >=
        ``threshold`` on; a multi-label run answers each label of ``positive`` (all of them) from its own threshold
        on. ``facts`` (how it was chosen, how well it does) are kept beside them."""
        if isinstance(threshold, list):
            saved = {"thresholds": dict(zip(positive, threshold))}
        else:
            saved = {"positive": positive, "threshold": threshold}
        (self / THRESHOLD).write_text(json.dumps(saved | facts, ensure_ascii=False, indent=1), encoding="utf-8")

    def _saved_threshold(self) -> dict:
        try:
            saved = json.loads((self / THRESHOLD).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def positive(self) -> int:
        """A two-class run's positive class (its id): the one its threshold and binary scores are about."""
        name = self._saved_threshold().get("positive")
        classes = self.labels()
        return classes.index(name) if len(classes) == 2 and name in classes else 1

    def threshold(self) -> float | list[float] | None:
        """The saved decision threshold (per label for multi-label, in label order; for two classes as class 1's
        probability, whichever class is positive), or None (more than two classes, a run from before thresholds)."""
        saved = self._saved_threshold()
        try:
            if "thresholds" in saved:
                return [float(t) for t in saved["thresholds"].values()]
            threshold = float(saved["threshold"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return threshold if self.positive() == 1 else 1.0 - threshold

    def labels(self) -> list[str]:
        try:
            classes = json.loads((self / LABELS).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{self / LABELS}: cannot read the class names ({exc})") from None
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise UserError(f"{self / LABELS}: expected a JSON list of class names")
        return classes

    def remove_if_unused(self, *kept: str) -> None:
        """A new run refused before it wrote anything (but its lock and ``kept``, a log saying why) leaves no
        folder behind."""
        if not any(p.name not in (LOCK, *kept) for p in self.path.iterdir()):
            for name in (LOCK, *kept):
                (self / name).unlink(missing_ok=True)
            self.path.rmdir()

    def save_skipped(self, skipped: list[tuple[str, str]]) -> None:
        """List the files training could not use, with the reason for each."""
        path = self / SKIPPED
        if not skipped:
            path.unlink(missing_ok=True)
            return
        write_csv(path, skipped, ["path", "reason"])

    def metrics(self) -> list[dict[str, float]]:
        if not (self / METRICS).exists():
            return []
        try:
            with (self / METRICS).open(newline="", encoding="utf-8") as f:
                return [{k: float(v) for k, v in row.items() if v != "" and k is not None} for row in csv.DictReader(f)]
        except (OSError, UnicodeDecodeError, ValueError, TypeError, csv.Error) as exc:
            raise UserError(f"{self / METRICS}: damaged ({str(exc).splitlines()[0]}); the run's weights are "
                            f"unaffected, but its history is lost unless you restore the file") from None


class RunStatus:
    """Where a run stands, in its ``status.json`` (what ``imgclf runs`` lists): ``running`` from the start, then
    ``finished``, ``interrupted`` (resumable) or ``failed`` with the error; the wall time adds up over resumes. A
    run still marked running whose process is gone (killed) reads as interrupted."""

    def __init__(self) -> None:
        self.run: RunDir | None = None
        self.began = time.time()

    def start(self, run: RunDir, **info: object) -> None:
        self.run = run
        saved = self.read(run)
        self._write(saved | info | {"status": "running", "started": saved.get("started", _now()), "pid": os.getpid(),
                                    "host": socket.gethostname(), "wall_s": saved.get("wall_s", 0.0),
                                    "error": ""})

    def end(self, status: str, error: str = "") -> None:
        if self.run is None:  # failed before the run directory existed
            return
        saved = self.read(self.run)
        wall = float(saved.get("wall_s", 0.0)) + time.time() - self.began
        self._write(saved | {"status": status, "ended": _now(), "wall_s": round(wall, 1), "error": error[:500]})

    def _write(self, values: dict) -> None:
        path = self.run / STATUS
        path.with_suffix(".tmp").write_text(json.dumps(values, indent=1, ensure_ascii=False), encoding="utf-8")
        path.with_suffix(".tmp").replace(path)

    @staticmethod
    def read(run: RunDir) -> dict:
        """The saved status ({} for a run from before status files), a dead process's "running" read as
        "interrupted"."""
        try:
            saved = json.loads((run / STATUS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        if not isinstance(saved, dict):
            return {}
        if saved.get("status") == "running" and saved.get("host") == socket.gethostname() and \
                not _alive(int(saved.get("pid", 0))):
            saved["status"] = "interrupted"
        return saved


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunLock:
    """One writer per run: ``runs/NAME/.lock`` holds the PID and host of the process training it, created
    atomically (two trainings started at once with one ``--name`` cannot both get it) and removed when that process
    ends, however it ends (a ``with`` block, and ``atexit``). A lock whose process is gone (SIGKILL, a crash) is taken
    over with a warning; a live one is a one-line error."""

    def __init__(self, run: RunDir) -> None:
        self.run, self.path, self.held = run, run / LOCK, False

    def __enter__(self) -> "RunLock":
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}, f)
            self.held = True
            atexit.register(self.release)
            return self
        raise UserError(f"{self.path}: could not lock the run; another process keeps taking it")

    def _take_over(self) -> None:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
            pid, host = int(holder["pid"]), str(holder["host"])
        except (OSError, ValueError, KeyError, TypeError):
            pid, host = 0, socket.gethostname()  # half-written by a process killed while locking: stale
        if host != socket.gethostname():
            raise UserError(f"run {self.run.name} is being trained by process {pid} on {host}; if that process is "
                            f"gone, delete {self.path}")
        if _alive(pid) and pid != os.getpid():
            raise UserError(f"run {self.run.name} is being trained by process {pid}; wait for it to end (or stop "
                            f"it), then resume with --resume")
        warn(f"{self.path}: process {pid}, which held the run, is gone; taking the run over")
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.held = False
            self.path.unlink(missing_ok=True)
            atexit.unregister(self.release)

    def __exit__(self, *exc: object) -> None:
        self.release()
