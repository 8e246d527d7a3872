"""``imgclf compare``: runs side by side — their validation curves overlaid, their metrics, the settings that
differ and their per-class accuracy — as a PNG and a self-contained HTML page like report.html."""
from __future__ import annotations

import html
import time
from pathlib import Path

from ..errors import UserError
from ..plots import plot_comparison
from ..run import RunDir
from .report import STYLE, _figure
from .runs import read_json, run_row

# the run_row figures shown in the metrics table, with their labels
METRICS = [("status", "status"), ("epochs", "epochs done"), ("best", "best validation value"),
           ("test_acc", "test accuracy"), ("test_map", "test mAP"), ("parameters", "parameters"),
           ("wall_s", "wall time (s)")]
# settings that say where a run is rather than how it trained
NOT_SETTINGS = ("name", "project", "quiet", "data_root")


class Comparison:
    """Two or more runs, read from their run directories."""

    def __init__(self, runs: list[str | Path]) -> None:
        if len(runs) < 2:
            raise UserError("compare needs two or more runs, e.g. imgclf compare runs/a runs/b")
        self.runs = [RunDir.open(r) for r in runs]
        names = [r.name for r in self.runs]
        # the folder names, or the paths where two runs share a name (runs/a and other/a)
        self.names = names if len(set(names)) == len(names) else [str(r.path) for r in self.runs]
        self.rows = [run_row(r.path, r.path.parent) for r in self.runs]
        self.metrics = [r.metrics() for r in self.runs]
        self.configs = [r.config().to_dict() for r in self.runs]  # read and checked: a damaged one is one line
        self.evaluations = [read_json(r / "eval.json") for r in self.runs]

    def differences(self) -> dict[str, list]:
        """The settings whose values are not the same in every run."""
        keys = [k for k in dict.fromkeys(k for c in self.configs for k in c) if k not in NOT_SETTINGS]
        return {k: [c.get(k) for c in self.configs] for k in keys if len({repr(c.get(k)) for c in self.configs}) > 1}

    def per_class(self) -> dict[str, list[float | None]]:
        """Each class's accuracy (its recall) in each run's evaluation; the union of the runs' classes."""
        tables = [e.get("per_class") or e.get("per_label") or {} for e in self.evaluations]
        classes = list(dict.fromkeys(c for t in tables for c in t))
        return {c: [t[c].get("recall") if c in t else None for t in tables] for c in classes}

    def plot(self, path: Path) -> Path:
        """Validation loss and accuracy per epoch, every run on the same axes, and per-class accuracy bars."""
        return plot_comparison(self.names, self.metrics, self.per_class(), path)

    def html(self, figure: Path) -> str:
        head = "".join(f"<th>{html.escape(n)}</th>" for n in self.names)

        def table(rows: dict[str, list], fmt=lambda v: v) -> str:
            body = "".join(f"<tr><td>{html.escape(str(k))}</td>" + "".join(
                f"<td>{html.escape(str(fmt(v)) if v is not None else '-')}</td>" for v in values) + "</tr>"
                for k, values in rows.items())
            return f"<table><tr><th></th>{head}</tr>{body}</table>"

        def number(v: object) -> object:
            return f"{v:.4f}" if isinstance(v, float) else v

        metrics = {label: [r.get(key) for r in self.rows] for key, label in METRICS
                   if any(r.get(key) is not None for r in self.rows)}
        differences = self.differences()
        per_class = self.per_class()
        return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>imgclf compare: "
                f"{html.escape(', '.join(self.names))}</title><style>{STYLE}</style></head><body>"
                f"<h1>{len(self.runs)} runs side by side</h1><p class='muted'>"
                + " · ".join(html.escape(str(r.path)) for r in self.runs) + f" · {time.strftime('%Y-%m-%d %H:%M')}"
                f"</p><h2>Metrics</h2>{table(metrics, number)}"
                f"<h2>Curves</h2>{_figure(figure, 'Validation loss and accuracy per epoch; accuracy per class')}"
                f"<h2>Settings that differ</h2>"
                + (table(differences) if differences else "<p>The runs have the same settings.</p>")
                + (f"<h2>Accuracy per class</h2>{table(per_class, number)}" if per_class else "")
                + "</body></html>")

    def save(self, output: Path) -> tuple[Path, Path]:
        """Write the HTML page at ``output`` and its figure beside it (same name, .png)."""
        output.parent.mkdir(parents=True, exist_ok=True)
        figure = self.plot(output.with_suffix(".png"))
        output.write_text(self.html(figure), encoding="utf-8")
        return output, figure

    def summary(self) -> str:
        """The comparison as text, for the terminal."""
        width = max(len(n) for n in self.names)
        lines = [f"{'':24} " + "  ".join(f"{n:>{width}}" for n in self.names)]
        for key, label in METRICS:
            values = [r.get(key) for r in self.rows]
            if any(v is not None for v in values):
                lines.append(f"{label:24} " + "  ".join(
                    f"{(f'{v:.4f}' if isinstance(v, float) else '-' if v is None else v):>{width}}" for v in values))
        for key, values in self.differences().items():
            lines.append(f"{key:24} " + "  ".join(f"{str(v):>{width}}" for v in values))
        return "\n".join(lines)
