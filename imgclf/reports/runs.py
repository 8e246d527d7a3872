"""``imgclf runs``: every run directory under a folder, one row each, from the files the run wrote."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from ..errors import UserError, warn
from ..metrics.monitor import monitor_mode
from ..run import BEST, CONFIG, LAST, RunDir, RunStatus, kept_epoch

COLUMNS = ["name", "date", "data", "model", "mode", "epochs", "planned", "monitor", "best", "test_acc", "test_map",
           "parameters", "wall_s", "status", "path"]


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _number(value: object) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def run_row(path: Path, root: Path) -> dict:
    """One run's row: what it trained, how far it got, its best validation value and its test score."""
    run = RunDir(path)
    try:
        config = yaml.safe_load((path / CONFIG).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        config = {}
    if not isinstance(config, dict):  # a damaged run is listed, with a line; not a reason to list none
        warn(f"{path / CONFIG}: not a mapping of training options; the run is listed without its settings")
        config = {}
    try:
        rows = run.metrics()
    except UserError as exc:
        warn(str(exc))
        rows = []
    status = RunStatus.read(run)
    evaluation = read_json(path / "eval.json")
    test = evaluation if evaluation.get("split", "test") == "test" else {}  # a run without test data: its val
    monitor = config.get("monitor") if isinstance(config.get("monitor"), str) else None
    monitor = monitor or ("val_map" if config.get("task") == "multilabel" else "val_acc")
    kept = kept_epoch(path / BEST) if (path / BEST).exists() else None
    values = [r[monitor] for r in rows if monitor in r]
    row = next((r for r in rows if r.get("epoch") == kept), None)
    best = row.get(monitor) if row else (min if monitor_mode(monitor) == "min" else max)(values) if values else None
    state = status.get("status") or (  # a run from before status.json: what its files say
        "finished" if evaluation or (rows and len(rows) >= _number(config.get("epochs")))
        else "interrupted" if (path / LAST).exists() else "failed")
    wall = status.get("wall_s")
    if wall is None and rows:
        wall = sum(r.get("time", 0) + r.get("val_time", 0) for r in rows)
    date = status.get("started") or pd.Timestamp((path / CONFIG).stat().st_mtime, unit="s").strftime(
        "%Y-%m-%d %H:%M:%S")
    return {"name": path.relative_to(root).as_posix() if path != root else path.name, "date": date,
            "data": config.get("data"), "model": config.get("model"), "mode": config.get("mode"),
            "epochs": len(rows), "planned": config.get("epochs"), "monitor": monitor, "best": best,
            "test_acc": test.get("accuracy"), "test_map": test.get("map"),
            "parameters": status.get("parameters"), "wall_s": round(wall, 1) if wall is not None else None,
            "status": state, "path": str(path)}


def list_runs(folder: str | Path = "runs", sort: str | None = None) -> pd.DataFrame:
    """A table (pandas DataFrame, shown as HTML in Jupyter) of the run directories under ``folder`` (the runs of a
    project, a ``tune`` search's trials, a ``cv`` run's folds), newest first or by ``sort`` (a column; numbers best
    first: highest, or lowest for a loss)."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; give the folder that holds the run directories (default: runs)")
    configs = sorted(set(root.glob(f"*/{CONFIG}")) | set(root.glob(f"*/*/{CONFIG}")) | set(root.glob(CONFIG)))
    table = pd.DataFrame([run_row(c.parent, root) for c in configs], columns=COLUMNS)
    if sort is None:
        return table.sort_values("date", ascending=False, kind="stable").reset_index(drop=True)
    if sort not in COLUMNS:
        raise UserError(f"--sort {sort!r} is not a column; use one of: {', '.join(COLUMNS)}")
    numeric = pd.api.types.is_numeric_dtype(table[sort]) and sort not in ("epochs", "planned")
    ascending = not numeric or sort in ("wall_s", "parameters") or sort == "best" and all(
        monitor_mode(m) == "min" for m in table["monitor"])
    return table.sort_values(sort, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)


def format_table(table: pd.DataFrame) -> str:
    """The table for a terminal: the columns a person reads, numbers rounded."""
    if table.empty:
        return "no runs"
    shown = table.drop(columns=["path", "monitor"]).copy()
    shown["epochs"] = [f"{done}/{planned}" if planned else str(done) for done, planned in
                       zip(table["epochs"], table["planned"])]
    shown["best"] = [f"{m} {v:.4f}" if pd.notna(v) else "-" for m, v in zip(table["monitor"], table["best"])]
    for column in ("test_acc", "test_map"):
        shown[column] = [f"{v:.4f}" if pd.notna(v) else "-" for v in table[column]]
    shown["parameters"] = [f"{int(v):,}" if pd.notna(v) else "-" for v in table["parameters"]]
    shown["wall_s"] = [f"{v:.0f}" if pd.notna(v) else "-" for v in table["wall_s"]]
    if table["test_map"].isna().all():
        shown = shown.drop(columns=["test_map"])
    return shown.drop(columns=["planned"]).fillna("-").to_string(index=False)
