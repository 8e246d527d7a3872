"""k-fold cross-validation: one ordinary run per fold, a summary of the folds, out-of-fold predictions, and the
fold models as an ensemble.

``runs/NAME/`` holds ``cv.json`` (what was asked), ``fold-K/`` (each a complete run directory: its validation split
is fold K, its training split the other folds), ``summary.json``/``summary.txt``, ``oof.csv`` (every training
image's prediction by the one model that never trained on it: its most confident mistakes are the usual first
suspects for wrong labels) and ``oof.npz`` (their whole probability vectors, what ``imgclf check --labels`` scores). ``imgclf predict`` and ``imgclf evaluate`` on ``runs/NAME`` average the folds'
probabilities (:class:`~imgclf.inference.ensemble.Ensemble`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..config import TrainConfig
from ..data.sources import load_source
from ..data.split import fold_indices, pooled
from ..data.tensors import ImageTensors
from ..errors import UserError
from ..files import write_csv
from ..inference.classifier import Classifier
from ..inference.ensemble import Ensemble
from ..metrics.classification import Evaluation
from ..run import CV_FILE, EVALUATION, LAST, OOF_PROBS, RunDir, check_run_name, fresh_path, slug
from ..training import job
from ..training.setup import data_path
from .folders import resumed


def _spec_run(data: str, folds: int, options: dict[str, Any]) -> RunDir:
    """Check the folds against the data before anything is written, then make the cross-validation's folder."""
    source = load_source(data, options.get("data_root"))
    if source.multilabel or options.get("task") == "multilabel":
        raise UserError("cross-validation of multi-label data is not supported yet (its folds, "
                        "out-of-fold table and ensemble are multi-class); train one multi-label run with imgclf "
                        "train instead")
    fold_indices(pooled(source).labels, folds, options.get("seed", 0))  # refuses too many folds for a class
    project, name = Path(options.get("project", "runs")), options.get("name")
    if name:
        path = project / check_run_name(name)
        if (path / CV_FILE).exists() and not options.get("exist_ok"):
            raise UserError(f"{path} already holds a cross-validation: pass --resume to continue it, or choose "
                            f"another --name")
    else:
        path = fresh_path(project / slug(f"{source.name}-cv"), folder=True)
    path.mkdir(parents=True, exist_ok=True)
    return RunDir(path)


def cross_validate(data: str | None = None, model: str = "cnn", epochs: int | None = None, *, folds: int = 5,
                   resume: bool = False, **options: Any) -> dict[str, Any]:
    """Train one run per fold (each with the ``train`` options), then summarise; returns the summary.

    ``resume`` continues the cross-validation ``name`` (default: the latest under ``project``): folds already
    done are kept, an interrupted fold resumes from its checkpoint, the rest are trained.
    """
    quiet = options.get("quiet", False)
    if resume:
        project = Path(options.get("project", "runs"))
        folder, spec = resumed(project, options.get("name"), CV_FILE,
                               f"--resume: no cross-validation to continue under {project}")
        run = RunDir(folder)
        data, model, epochs, folds, options = spec["data"], spec["model"], spec["epochs"], spec["folds"], \
            spec["options"] | {"quiet": quiet}
    else:
        data = data_path(data)
        TrainConfig(data=data, model=model, **{k: v for k, v in options.items() if k not in ("name", "project",
                                                                                          "exist_ok")})
        run = _spec_run(data, folds, options)
        options = {k: v for k, v in options.items() if k not in ("name", "project", "exist_ok")}
        (run / CV_FILE).write_text(json.dumps({"data": data, "model": model, "epochs": epochs, "folds": folds,
                                               "options": options}, indent=1), encoding="utf-8")
    for k in range(folds):
        fold = run / f"fold-{k}"
        if (fold / "eval.json").exists():
            continue  # done in an earlier session of this cross-validation
        if not quiet:
            print(f"\n== fold {k + 1} of {folds} ==", flush=True)
        if (fold / LAST).exists():
            job.train(resume=True, project=str(run.path), name=fold.name, quiet=quiet)
        else:
            job.train(data, model, epochs, project=str(run.path), name=fold.name, folds=folds, fold=k, exist_ok=True,
                  **options)
    summary = summarise(run, folds)
    if not quiet:
        print(summary_text(summary))
    return summary


def summarise(run: RunDir, folds: int) -> dict[str, Any]:
    """Each fold's validation scores from its out-of-fold predictions, their mean and standard deviation, the
    ensemble's test accuracy beside the folds' own; writes oof.csv, summary.json and summary.txt."""
    rows, per_fold, test, oof = [], [], [], {"image": [], "label": [], "probs": []}
    members = [Classifier.load(run / f"fold-{k}") for k in range(folds)]
    cfg = members[0].config
    source = load_source(cfg.data, cfg.data_root)
    pool = pooled(source)
    folds_of = fold_indices(pool.labels, folds, cfg.seed)
    for k, clf in enumerate(members):
        images, _ = clf.eval_images(split="val")
        report = json.loads((run / f"fold-{k}" / "eval.json").read_text(encoding="utf-8"))
        probs = _fold_probs(run / f"fold-{k}", report, clf, images)
        ev = Evaluation(clf.classes, images.y.numpy(), probs)
        per_fold.append({"fold": k, "images": len(images), "accuracy": ev.accuracy,
                         "balanced_accuracy": ev.balanced_accuracy, "macro_f1": ev.macro_f1})
        names = images.paths or [f"{source.name}[{i}]" for i in folds_of[k]]
        oof["image"] += [str(name) for name in names]
        oof["label"].append(ev.y_true)
        oof["probs"].append(probs.astype(np.float32))
        for name, label, p in zip(names, ev.y_true, probs):
            rows.append((name, clf.classes[label], clf.classes[int(p.argmax())], float(p.max()), float(p[label]), k))
        if cfg.test_split and "test" in source.splits:
            test.append(report["accuracy"])
    summary: dict[str, Any] = {"folds": per_fold}
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        values = np.array([f[key] for f in per_fold])
        summary[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    if test:
        ensemble = Ensemble(run.path).evaluate()
        summary["test"] = {"fold_accuracies": test, "mean_fold": float(np.mean(test)), "ensemble": ensemble.accuracy,
                           "images": len(ensemble.y_true)}
    write_csv(run / "oof.csv", sorted(rows, key=lambda r: r[0]),
              ["image", "label", "predicted", "confidence", "p_label", "fold"])
    np.savez_compressed(run / OOF_PROBS, image=np.array(oof["image"]), label=np.concatenate(oof["label"]),
                        probs=np.concatenate(oof["probs"]), classes=np.array(members[0].classes))
    mistakes = sorted((r for r in rows if r[1] != r[2]), key=lambda r: -r[3])[:10]
    summary["confident_mistakes"] = [{"image": r[0], "label": r[1], "predicted": r[2], "confidence": r[3]}
                                     for r in mistakes]
    (run / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    (run / "summary.txt").write_text(summary_text(summary) + "\n", encoding="utf-8")
    return summary


def _fold_probs(fold: Path, report: dict[str, Any], clf: Classifier, images: ImageTensors) -> np.ndarray:
    """A fold's probabilities on its validation images: those its final evaluation saved where it scored them (a
    fold without a test split), else predicted now."""
    if report.get("split") == "val" and (fold / EVALUATION).is_file():
        saved = np.load(fold / EVALUATION)
        if np.array_equal(saved["y_true"], images.y.numpy()):
            return saved["probs"]
    return clf.predict_proba(images.x).numpy()


def summary_text(summary: dict[str, Any]) -> str:
    lines = ["fold  images  accuracy  balanced  macro F1"]
    lines += [f"{f['fold']:>4}  {f['images']:>6}  {f['accuracy']:.4f}    {f['balanced_accuracy']:.4f}    "
              f"{f['macro_f1']:.4f}" for f in summary["folds"]]
    lines.append("mean +- std: " + ", ".join(f"{k} {summary[k]['mean']:.4f} +- {summary[k]['std']:.4f}"
                                             for k in ("accuracy", "balanced_accuracy", "macro_f1")))
    if "test" in summary:
        t = summary["test"]
        lines.append(f"test split ({t['images']} images): the ensemble of the folds {t['ensemble']:.4f}, a single "
                     f"fold {t['mean_fold']:.4f} on average")
    if summary["confident_mistakes"]:
        lines.append("most confident out-of-fold mistakes (wrong labels?):")
        lines += [f"  {m['image']}: labelled {m['label']}, predicted {m['predicted']} ({m['confidence']:.2f})"
                  for m in summary["confident_mistakes"]]
    return "\n".join(lines)
