"""``report.html``: one self-contained page per run (every image embedded) with the config, the data, the curves
and their diagnosis, the evaluation figures, the top losses and Grad-CAM examples."""
from __future__ import annotations

import base64
import html
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..config import TrainConfig
from ..data.batch_augment import BatchAugment
from ..data.prepare import Prepared
from ..data.tensors import ImageTensors
from ..data.transforms import augmentation
from ..errors import UserError
from ..inference.classifier import Classifier
from ..metrics.by_task import evaluation_for
from ..metrics.classification import Evaluation, label_counts
from ..metrics.diagnose import diagnose
from ..metrics.multilabel import MultiLabelEvaluation
from ..plots import plot_curves, plot_data_overview
from ..plots.data import augmented_versions
from ..plots.style import to_hwc
from ..run import BEST, CONFIG, RunDir, kept_epoch
from .explain import grad_cam, plot_explanations

PREVIEWS = 15  # augmented versions of one image in augmentation.png

REPORT, DATA_SUMMARY = "report.html", "data.json"
# (file, caption) per section, in page order; a figure the run does not have is left out.
FIGURES = {
    "data": [("samples.png", "Sample training images per class"), ("class_counts.png", "Images per class"),
             ("augmentation.png", "One training image and augmented versions of it")],
    "training": [("curves.png", "Loss, accuracy and learning rate per epoch")],
    "evaluation": [("confusion_matrix.png", "Confusion matrix (counts)"),
                   ("confusion_matrix_normalized.png", "Confusion matrix, normalised by true class"),
                   ("per_class.png", "Precision and recall per class"),
                   ("per_label.png", "Multi-label: precision and recall per label at its threshold"),
                   ("pr_curves.png", "Multi-label: precision-recall curves of the labels with the lowest average "
                                     "precision, each threshold marked"),
                   ("most_confused.png", "Most-confused class pairs"),
                   ("roc_pr.png", "Two classes: ROC and precision-recall curves, the tuned threshold marked"),
                   ("top_losses.png", "Top losses: the images the model gets most wrong")],
    "explanations": [("gradcam.png", "Grad-CAM: where the model looked (worst mistakes, then confident hits)")],
}
STYLE = """body{font-family:system-ui,-apple-system,'Segoe UI','Noto Sans','Noto Sans CJK KR','Malgun Gothic',
sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}h1{margin-bottom:.2em}h2{border-bottom:1px
solid #ddd;padding-bottom:.2em;margin-top:2em}table{border-collapse:collapse;font-size:.9em;margin:.5em 0}td,th{
border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{
text-align:left}figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
.verdict{padding:.6em 1em;border-radius:4px;background:#eef6ee}.over-fitting,.under-fitting{background:#fdf0e6}
.muted{color:#777}nav a{margin-right:1em}"""


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        return html.escape(f"{v:.4f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figures(run: RunDir, section: str) -> str:
    return "".join(_figure(run / name, caption) for name, caption in FIGURES[section] if (run / name).exists())


def gradcam_examples(clf: Classifier, evaluation: Evaluation, images: ImageTensors, path: Path, n: int = 4) -> Path:
    """Grad-CAM of the ``n`` worst mistakes and the ``n`` most confident correct predictions (multi-label: the
    ``2n`` images with the highest loss, each explaining its most likely label)."""
    if evaluation.multilabel:
        chosen = torch.as_tensor(evaluation.top_losses(2 * n).astype(np.int64))
        found = grad_cam(clf, images.x[chosen])
        titles = [f"actual {evaluation.names(evaluation.y_true[i])}\npredicted {evaluation.names(evaluation.y_pred[i])}"
                  for i in chosen.tolist()]
        return plot_explanations(to_hwc(images.x[chosen]), found, clf.classes, path, titles)
    correct = np.flatnonzero(evaluation.y_pred == evaluation.y_true)
    confident = correct[np.argsort(-evaluation.probs[correct].max(1), kind="stable")[:n]]
    wrong = [i for i in evaluation.top_losses(n) if evaluation.y_pred[i] != evaluation.y_true[i]]
    chosen = torch.as_tensor(np.concatenate([wrong, confident]).astype(np.int64))
    pixels = images.x[chosen]
    found = grad_cam(clf, pixels)
    titles = [f"actual {clf.classes[images.y[i]]}\npredicted {clf.classes[found.predicted[k]]} "
              f"({found.probs[k, found.predicted[k]]:.2f})" for k, i in enumerate(chosen.tolist())]
    return plot_explanations(to_hwc(pixels), found, clf.classes, path, titles)


def _data_section(run: RunDir) -> str:
    if not (run / DATA_SUMMARY).exists():
        return "<p class=muted>No data summary in this run.</p>" + _figures(run, "data")
    data = json.loads((run / DATA_SUMMARY).read_text(encoding="utf-8"))
    splits = list(data["counts"])
    rows = [[name, *(data["counts"][s][i] for s in splits)] for i, name in enumerate(data["classes"])]
    rows.append(["all", *(sum(data["counts"][s]) for s in splits)])
    notes = f"<p>{len(data['classes'])} classes, input {html.escape(data['input'])}; {data['skipped']} unreadable " \
            f"file(s) skipped; {data['leaked']} validation/test image(s) identical to a training image.</p>"
    return notes + _table(["class", *splits], rows) + _figures(run, "data")


def _training_section(run: RunDir, monitor: str) -> str:
    rows = run.metrics()
    if not rows:
        return "<p class=muted>No epochs recorded.</p>"
    found = diagnose(rows, monitor, kept_epoch(run / BEST))
    columns = [c for c in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_map", "lr", "time")
               if c in rows[0]]
    table = _table(columns, [[int(r[c]) if c == "epoch" else r[c] for c in columns] for r in rows])
    return (f'<p class="verdict {found.verdict.replace(" ", "-")}">{html.escape(found.text)}</p>'
            f"{_figures(run, 'training')}<details><summary>metrics per epoch ({len(rows)})</summary>{table}"
            f"</details><p class=muted>best checkpoint chosen by {html.escape(monitor)}</p>")


def _multilabel_section(run: RunDir, evaluation: MultiLabelEvaluation, where: str) -> str:
    rows = [[r["label"], r["precision"], r["recall"], r["f1"],
             "-" if r["average_precision"] is None else r["average_precision"], r["support"], r["threshold"]]
            for r in evaluation.per_label()]
    per_label = _table(["label", "precision", "recall", "F1", "average precision", "images", "threshold"], rows)
    return (f"<p>{html.escape(where)}, multi-label: mAP <b>{evaluation.mean_average_precision:.4f}</b>, micro F1 "
            f"<b>{evaluation.micro_f1:.4f}</b>, macro F1 <b>{evaluation.macro_f1:.4f}</b>, exact match "
            f"{evaluation.exact_match:.4f}, hamming loss {evaluation.hamming:.4f}; each label answered from its own "
            f"threshold, tuned on validation.</p>{_figures(run, 'evaluation')}<h3>Per label</h3>{per_label}")


def _evaluation_section(run: RunDir, evaluation: Evaluation, where: str) -> str:
    if evaluation.multilabel:
        return _multilabel_section(run, evaluation, where)
    precision, recall = evaluation.precision_recall()
    support = np.bincount(evaluation.y_true, minlength=len(evaluation.classes))
    per_class = _table(["class", "precision", "recall", "images"],
                       [[c, float(p), float(r), int(s)] for c, p, r, s in
                        zip(evaluation.classes, precision, recall, support)])
    pairs = evaluation.most_confused()
    confused = _table(["true", "predicted", "images", "share of true class"],
                      [[t, p, n, f"{s:.1%}"] for t, p, n, s in pairs]) if pairs else "<p>No mistakes.</p>"
    return (f"<p>{html.escape(where)}: accuracy <b>{evaluation.accuracy:.4f}</b>"
            f"{html.escape(evaluation.top_k_text)}, balanced accuracy <b>{evaluation.balanced_accuracy:.4f}</b>, "
            f"macro F1 <b>{evaluation.macro_f1:.4f}</b>{_binary_text(evaluation)}.</p>{_figures(run, 'evaluation')}"
            f"<h3>Per class</h3>{per_class}"
            f"<h3>Most-confused pairs</h3>{confused}")


def _binary_text(evaluation: Evaluation) -> str:
    if not evaluation.binary:
        return ""
    b = evaluation.binary_scores()
    text = f", ROC AUC <b>{b['roc_auc']:.4f}</b> ({html.escape(evaluation.classes[evaluation.positive])} positive)"
    if "threshold" in b:
        text += (f"; at the threshold tuned on validation ({b['threshold']:.3f}): precision "
                 f"{b['precision_at_threshold']:.4f}, recall {b['recall_at_threshold']:.4f}")
    return text


def write_report(clf: Classifier, evaluation: Evaluation | None = None, images: ImageTensors | None = None,
                 where: str | None = None, gradcam: bool = True, output: Path | None = None) -> Path:
    """Write ``report.html`` (and any evaluation figure it needs) into the classifier's run directory, or the page
    to ``output``.

    Without ``evaluation``, the run's test split (else validation split) is decoded and scored again.
    """
    if clf.run is None:
        raise UserError("a report needs a run directory made by 'imgclf train'")
    run = clf.run
    if evaluation is None or images is None:
        images, where = clf.eval_images()
        if len(images) == 0:
            raise UserError("no readable labelled images to evaluate on")
        evaluation = evaluation_for(clf.task, clf.classes, images.y.numpy(), clf.predict_proba(images.x).numpy(),
                                    clf.threshold, positive=clf.positive)
        evaluation.save(run.path, images.x)
    if run.metrics() and not (run / "curves.png").exists():
        plot_curves(run.metrics(), run / "curves.png", clf.config.monitor, kept_epoch(run / BEST))
    if gradcam:
        gradcam_examples(clf, evaluation, images, run / "gradcam.png")
    config = yaml.safe_dump(yaml.safe_load((run / CONFIG).read_text(encoding="utf-8")), allow_unicode=True,
                            sort_keys=False)
    title = f"imgclf run {run.name}"
    sections = [("data", "Data", _data_section(run)),
                ("training", "Training", _training_section(run, clf.config.monitor)),
                ("evaluation", "Evaluation", _evaluation_section(run, evaluation, where or "evaluation set")),
                ("explanations", "Explanations", _figures(run, "explanations") if gradcam else
                 "<p class=muted>Grad-CAM examples were turned off.</p>"),
                ("config", "Config", f"<pre>{html.escape(config)}</pre>")]
    nav = "".join(f'<a href="#{key}">{name}</a>' for key, name, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{name}</h2>{content}</section>' for key, name, content in sections)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width,initial-scale=1"><title>{html.escape(title)}</title><style>{STYLE}'
            f"</style></head><body><h1>{html.escape(title)}</h1><p class=muted>{html.escape(clf.config.model)} on "
            f"{html.escape(str(clf.config.data))}, {len(clf.classes)} classes; written "
            f"{time.strftime('%Y-%m-%d %H:%M')}</p><nav>{nav}</nav>{body}</body></html>")
    path = output or run / REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def start_data_overview(run: RunDir, prepared: Prepared, cfg: TrainConfig) -> "Overview":
    """data.json (class counts per split, what was dropped) now, and the data figures (samples per class, class
    counts, and an augmentation preview when training augments) drawn in a thread while training starts: matplotlib
    takes seconds over them. The preview's random versions are made here, before training draws anything: the
    batched light augmentation from its own generator, the per-image presets from the global one, put back."""
    classes, splits = prepared.classes, prepared.splits
    counts = {name: label_counts(splits[name].y, len(classes)) for name in ("train", "val", "test") if name in splits}
    summary = {"classes": classes, "counts": counts, "input": f"{cfg.channels}x{cfg.img_size}x{cfg.img_size}",
               "skipped": len(prepared.skipped), "leaked": len(prepared.leaked)}
    (run / DATA_SUMMARY).write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    train = splits["train"]
    versions = None
    if len(train) and cfg.augment != "none":
        first = torch.as_tensor(train.x[0])
        if cfg.batch_augment:  # what training does: shifts and flips of whole batches, no torchvision import
            versions = torch.cat([first[None], BatchAugment(cfg.img_size, cfg.flip, seed=cfg.seed)(
                first[None].repeat(PREVIEWS, 1, 1, 1))])
        else:
            versions = augmented_versions(first, augmentation(cfg.augment, cfg.img_size, cfg.channels, cfg.flip),
                                          PREVIEWS, cfg.seed)
    label = f"{cfg.augment}{'' if cfg.flip else ' --no-flip'}"
    overview = Overview(target=plot_data_overview, name="imgclf-data-overview",
                        args=(train.x, train.y, classes, counts, versions, label, run.path, cfg.seed))
    overview.start()
    return overview


class Overview(threading.Thread):
    """The thread drawing the data figures once :meth:`begin` is called (when training has taken its first step:
    on one core, matplotlib's import and drawing would otherwise delay it by seconds); :meth:`finish` waits for it
    and gives its error, if any, as a line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.go, self.error = threading.Event(), None

    def begin(self) -> None:
        self.go.set()

    def run(self) -> None:
        self.go.wait()
        try:  # on Linux a thread has its own nice value: on a busy core the training steps go first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):  # not Linux, or not allowed
            pass
        try:
            super().run()
        except Exception as exc:  # a figure that cannot be drawn must not stop training
            self.error = f"the data overview could not be drawn ({type(exc).__name__}: {exc})"

    def finish(self) -> str | None:
        self.go.set()  # training ended before its first step
        self.join()
        return self.error
