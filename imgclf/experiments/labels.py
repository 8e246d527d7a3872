"""``imgclf check DATA --labels``: the wrong labels of a data set, found by confident learning on out-of-fold
probabilities.

Every training (and validation) image is scored by the one model of a k-fold cross-validation that never saw it
(:func:`~imgclf.experiments.cv.cross_validate`: the default cnn for a few epochs on small images, a pretrained
backbone's cached features with a new head on photos), and cleanlab does the rest: ``find_label_issues`` (the
images its confident joint says are mislabelled), ``get_label_quality_scores`` (how much each label is to be
trusted), ``estimate_joint`` (the share of wrong labels per class) and ``OutOfDistribution`` (images unlike any
class). The dataset doctor's hashes add copies of one picture under different labels. The results go to the
cross-validation's folder: ``label_issues.csv`` worst first, ``review.html`` to decide on them, ``labels.txt``;
``--apply fixes.csv`` turns the decisions into a clean CSV. Nothing touches a user's file.
"""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..data.check import check
from ..data.dataset import Source, Split
from ..data.sources import load_source
from ..data.split import pooled
from ..errors import UserError
from ..reports.label_review import write_review
from ..files import write_csv
from ..run import CV_FILE, OOF_PROBS, RunDir, fresh_path, slug
from ..training.setup import data_path
from .cv import cross_validate, summarise
from .folders import resumed

SMALL_SIDE = 64  # images up to this side train the default cnn per fold; larger ones use a pretrained backbone
# the cnn's epochs per fold: on Fashion-MNIST with 10% of its labels flipped, 15 against 8 took the folds' accuracy
# from 89.2% to 90.4% and the list applied unreviewed from 42% to 57% of what the noise cost (BENCHMARKS.md), for
# 1.6x the check's time; --epochs 8 is the quicker look
CNN_EPOCHS = 15
BACKBONE = "efficientnet_lite0"  # ImageNet weights built in (no download), features cached once for every fold
OUTLIER_SHARE = 0.01  # the least typical images (cleanlab's out-of-distribution score) flagged as outliers
SURE = 0.8  # label_issues.csv applied unreviewed: a suggestion the folds' models give at least this is taken
REVIEW_MOST = 1000  # suspects shown on the review page (all of them are in label_issues.csv)
ISSUES, REVIEW, SUMMARY = "label_issues.csv", "review.html", "labels.txt"
COLUMNS = ["path", "given_label", "suggested_label", "quality", "kind", "outlier_score", "runner_up"]


@dataclass
class LabelReport:
    """What the label check found: ``rows`` as in ``label_issues.csv`` (worst first), per-class counts and
    cleanlab's estimated share of wrong labels in each class, and the folder it was written to."""

    run: Path
    data: str
    classes: list[str]
    images: int
    rows: list[dict[str, Any]]
    per_class: list[dict[str, Any]]
    from_files: bool

    def summary(self) -> str:
        kinds = {k: sum(r["kind"] == k for r in self.rows) for k in ("label", "duplicate-conflict", "outlier")}
        lines = [f"{len(self.rows)} suspect(s) among {self.images} images: {kinds['label']} label issue(s), "
                 f"{kinds['duplicate-conflict']} duplicate(s) with another label, {kinds['outlier']} outlier(s)",
                 f"{'class':<20} {'images':>7} {'suspects':>9} {'wrong labels (estimated)':>25}"]
        lines += [f"{c['class'][:20]:<20} {c['images']:>7} {c['suspects']:>9} {100 * c['estimated_wrong']:>24.1f}%"
                  for c in self.per_class]
        lines.append(f"the list, worst first: {self.run / ISSUES}; decide on them in {self.run / REVIEW} (its "
                     f"'download fixes.csv' keeps the decisions)")
        if self.from_files:
            lines.append(f"then retrain on the cleaned labels: imgclf check {self.data} --apply fixes.csv --output "
                         f"clean.csv && imgclf train clean.csv (without a review, --apply {self.run / ISSUES} "
                         f"takes the suggestions the models are sure of and drops the other suspects)")
        else:
            lines.append("this data set's images are not files, so --apply cannot write a cleaned list of them; "
                         "the suspects' indices are in the list")
        return "\n".join(lines)


def default_training(source: Source, model: str | None, epochs: int | None, options: dict[str, Any]
                     ) -> tuple[str, int | None, dict[str, Any]]:
    """The fastest honest model for the data unless one is given: the default cnn for a few epochs on small
    decoded images (Fashion-MNIST-like), else a pretrained backbone in feature-extract mode (its features are
    computed once and cached, so each fold's head costs seconds)."""
    if model is not None:
        return model, epochs, options
    if _largest_side(source.splits["train"]) <= SMALL_SIDE:
        return "cnn", epochs or CNN_EPOCHS, options
    return BACKBONE, epochs, {"pretrained": True, "mode": "feature-extract"} | options


def _largest_side(split: Split, sample: int = 50) -> int:
    """The longest side among the decoded images, or among the headers of an even sample of the files."""
    if split.pixels is not None:
        return max(split.pixels.shape[1:3])
    sides = [0]
    for path in split.paths[::max(1, len(split.paths) // sample)]:
        try:
            with Image.open(path) as image:
                sides.append(max(image.size))
        except OSError:  # unreadable: the doctor and the folds' training say so
            continue
    return max(sides)


def fold_count(labels: np.ndarray, classes: list[str], folds: int, log: Callable[[str], None]) -> int:
    """``folds``, or fewer where the smallest class cannot fill them (said in the log); a class with a single
    image cannot be judged by a model that never saw it, and is refused."""
    counts = np.bincount(labels, minlength=len(classes))
    present = np.flatnonzero(counts)
    smallest = int(present[counts[present].argmin()])
    if counts[smallest] < 2:
        raise UserError(f"class {classes[smallest]!r} has a single image, which no fold can judge without having "
                        f"seen it; add images of it or leave the class out")
    if counts[smallest] < folds:
        log(f"warning: class {classes[smallest]!r} has {counts[smallest]} images, fewer than --folds {folds}; "
            f"using {counts[smallest]} folds")
        return int(counts[smallest])
    return folds


def find_label_issues(data: str | None = None, model: str | None = None, epochs: int | None = None, *,
                      folds: int = 5, from_cv: str | None = None, resume: bool = False, **options: Any
                      ) -> LabelReport:
    """Score every label of ``data`` (see the module's docstring); ``from_cv`` reuses an ``imgclf cv`` run's
    folds instead of training new ones, ``resume`` continues a killed check from the folds already done.
    ``options`` are ``imgclf.train``'s (name, project, img_size, batch_size, seed, ...)."""
    quiet = options.get("quiet", False)
    log: Callable[[str], None] = (lambda _: None) if quiet else print
    if from_cv or resume:
        project = Path(options.get("project", "runs"))
        folder, spec = resumed(project, from_cv or options.get("name"), CV_FILE,
                               f"--from-cv {from_cv}: no imgclf cv run of that name under {project}" if from_cv
                               else f"--resume: no label check to continue under {project}")
        if data and data_path(data) != spec["data"]:
            raise UserError(f"{folder} cross-validated {spec['data']}, not {data}; name the same data, or leave "
                            f"--from-cv/--resume out to check {data} afresh")
        data, folds = spec["data"], spec["folds"]
        options["data_root"] = options.get("data_root") or spec["options"].get("data_root")
        if resume and not (folder / OOF_PROBS).exists():
            cross_validate(resume=True, project=str(folder.parent), name=folder.name, quiet=quiet)
        run, source = RunDir(folder), _checked_source(data, options)
    else:
        source = _checked_source(data, options)
        folds = fold_count(pooled(source).labels, source.classes, folds, log)
        model, epochs, options = default_training(source, model, epochs, options)
        project = Path(options.get("project", "runs"))
        name = options.pop("name", None) or fresh_path(project / slug(f"{source.name}-labels"), folder=True).name
        # the folds are a means here, not results to read; their out-of-fold predictions are all the check needs
        options = {"plots": False, "report": False, "test_split": False} | options
        log(f"label check: {folds}-fold out-of-fold probabilities of {model} ({epochs or 'default'} epochs a fold)")
        cross_validate(data, model, epochs, folds=folds, name=name, **options)
        run = RunDir(project / name)
    if not (run / OOF_PROBS).exists():  # a cross-validation from before oof.npz was written
        summarise(run, folds)
    report = score(run, str(data), source, options.get("data_root"), quiet)
    log(report.summary())
    return report


def _checked_source(data: str | None, options: dict[str, Any]) -> Source:
    source = load_source(data, options.get("data_root"))
    if source.multilabel or options.get("task") == "multilabel":
        raise UserError("--labels checks one label per image; multi-label data is not supported yet (cleanlab's "
                        "multi-label scores need multi-label out-of-fold probabilities, which imgclf cv does not "
                        "give yet)")
    return source


def score(run: RunDir, data: str, source: Source, data_root: str | None = None, quiet: bool = True) -> LabelReport:
    """cleanlab's verdicts on the out-of-fold probabilities saved in ``run``, the doctor's duplicates with
    another label beside them; writes label_issues.csv, review.html and labels.txt into ``run``."""
    from cleanlab.count import estimate_joint
    from cleanlab.filter import find_label_issues as cleanlab_issues
    from cleanlab.outlier import OutOfDistribution
    from cleanlab.rank import get_label_quality_scores

    saved = np.load(run / OOF_PROBS)
    names, labels, probs = list(saved["image"]), saved["label"], saved["probs"]
    classes = [str(c) for c in saved["classes"]]
    quality = get_label_quality_scores(labels, probs)
    # as many as confident learning counts wrong, those with the least trusted labels: on Fashion-MNIST with 10% of
    # its labels flipped, precision 0.87 and recall 0.93, where the default pruning gives 0.67 and 0.91 (the data's
    # own ambiguous shirts and tops pass its per-class thresholds)
    flagged = set(cleanlab_issues(labels, probs, filter_by="low_self_confidence").nonzero()[0].tolist())
    ood = OutOfDistribution().fit_score(pred_probs=probs, labels=labels, verbose=False)
    outliers = set(np.argsort(ood)[:int(len(ood) * OUTLIER_SHARE)].tolist()) - flagged
    conflicts = _duplicate_conflicts(data, data_root, source, names, quiet)
    rows = []
    for i in sorted(flagged | outliers | conflicts, key=lambda i: quality[i]):
        top = np.argsort(-probs[i])[:3]
        kind = "label" if i in flagged else "duplicate-conflict" if i in conflicts else "outlier"
        rows.append({"path": names[i], "given_label": classes[labels[i]],
                     "suggested_label": classes[top[0]],
                     "quality": round(float(quality[i]), 5), "kind": kind, "outlier_score": round(float(ood[i]), 5),
                     "runner_up": ";".join(f"{classes[c]}:{probs[i, c]:.2f}" for c in top)})
    joint = estimate_joint(labels, probs)
    given = np.bincount(labels, minlength=len(classes))
    per_class = [{"class": c, "images": int(given[k]), "suspects": sum(r["given_label"] == c for r in rows),
                  "estimated_wrong": float(1 - joint[k, k] / joint[k].sum()) if joint[k].sum() > 0 else 0.0}
                 for k, c in enumerate(classes)]
    from_files = all(split.paths is not None for split in source.splits.values())
    report = LabelReport(run.path, data, classes, len(labels), rows, per_class, from_files)
    write_csv(run / ISSUES, rows, COLUMNS)
    write_review(run / REVIEW, rows[:REVIEW_MOST], classes, _thumbnails(source, names), len(rows))
    (run / SUMMARY).write_text(report.summary() + "\n", encoding="utf-8")
    (run / "labels.json").write_text(json.dumps({"images": len(labels), "suspects": len(rows),
                                                 "per_class": per_class}, indent=1), encoding="utf-8")
    return report


def _duplicate_conflicts(data: str, data_root: str | None, source: Source, names: list[str],
                         quiet: bool) -> set[int]:
    """The pooled indices of images whose exact or near copies (the doctor's SHA-256 and perceptual hashes) carry
    another label: in each group of copies, those outvoted by the others' label, or all of them on a tie (one of
    two is wrong, and the model's suggestion says which)."""
    report = check(data, data_root, quiet=quiet)
    n_train = len(source.splits["train"])
    index = {name: i for i, name in enumerate(names)}

    def pooled_index(f: Any) -> int | None:
        if f.path in index:
            return index[f.path]
        if f.path.startswith(f"{f.split}[") and f.split in ("train", "val"):  # decoded images: train[i], val[i]
            i = int(f.path[len(f.split) + 1:-1]) + (n_train if f.split == "val" else 0)
            return i if i < len(names) else None
        return None

    out: set[int] = set()
    for group in [*report.duplicates, *([i, j] for i, j, _ in report.near_duplicates)]:
        votes = Counter(report.files[i].label for i in group)
        if len(votes) < 2:
            continue
        most = max(votes.values())
        tie = list(votes.values()).count(most) > 1
        out |= {k for i in group if (k := pooled_index(report.files[i])) is not None
                and (tie or votes[report.files[i].label] < most)}
    return out


def _thumbnails(source: Source, names: list[str]) -> Callable[[str], bytes | None]:
    """A PNG of at most 128 px a side for a suspect's name (a file, or a decoded image's index)."""
    images = pooled(source)
    index = {name: i for i, name in enumerate(names)}

    def png(name: str) -> bytes | None:
        try:
            if images.pixels is not None:
                image = Image.fromarray(images.pixels[index[name]])
            else:
                image = Image.open(name)
                image.draft("RGB", (256, 256))  # JPEG: decode at a fraction of the size
            image.thumbnail((128, 128))
            buffer = io.BytesIO()
            image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(buffer, "PNG")
            return buffer.getvalue()
        except (OSError, KeyError, ValueError):
            return None

    return png


def apply_fixes(data: str, fixes: Path, output: Path, data_root: str | None = None,
                min_confidence: float = SURE) -> dict[str, int]:
    """A cleaned copy of ``data``'s file list (``path,label,split``, what ``imgclf train`` reads) with the review
    page's decisions of ``fixes`` (``path,action,label``: relabel, keep or drop) applied; the user's files and
    folders are left as they are. ``fixes`` may also be a check's own ``label_issues.csv``, for the suspects
    nobody reviewed (see :func:`automatic_decisions`). Returns the counts of rows written, relabelled and dropped."""
    source = load_source(data, data_root)
    if not all(split.paths is not None for split in source.splits.values()):
        raise UserError(f"--apply writes a list of image files, and {data}'s images are not files; a built-in or "
                        f"pixel data set cannot be relabelled this way")
    try:
        with open(fixes, newline="", encoding="utf-8-sig") as f:
            given = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read --apply {fixes}: {exc}") from None
    if given and "action" not in given[0] and {"path", "kind", "runner_up"} <= set(given[0]):
        given = automatic_decisions(given, min_confidence)
    decisions: dict[str, tuple[str, str]] = {}
    for row in given:
        if not {"path", "action"} <= set(row):
            raise UserError(f"{fixes}: expected the columns path,action,label of the review page's fixes.csv")
        action, label = row["action"].strip().lower(), (row.get("label") or "").strip()
        if action not in ("relabel", "keep", "drop"):
            raise UserError(f"{fixes}: action {row['action']!r} for {row['path']} is not relabel, keep or drop")
        if action == "relabel" and label not in source.classes:
            raise UserError(f"{fixes}: {row['path']} is relabelled {label!r}, which is not one of the classes: "
                            f"{', '.join(source.classes)}")
        decisions[_key(row["path"])] = (action, label)
    known = {_key(p) for split in source.splits.values() for p in split.paths}
    if unknown := [p for p in decisions if p not in known]:
        raise UserError(f"{fixes}: {len(unknown)} path(s) are not images of {data}, e.g. {unknown[0]}; was the "
                        f"file made for another data set?")
    rows, counts = [], {"rows": 0, "relabelled": 0, "dropped": 0}
    for split_name, split in source.splits.items():
        for path, label in zip(split.paths, split.labels):
            action, new = decisions.get(_key(path), ("keep", ""))
            if action == "drop":
                counts["dropped"] += 1
                continue
            counts["relabelled"] += action == "relabel" and new != source.classes[label]
            rows.append({"path": str(Path(path).resolve()), "label": new if action == "relabel"
                         else source.classes[label], "split": split_name})
    write_csv(output, rows, ["path", "label", "split"])
    counts["rows"] = len(rows)
    return counts


def _key(path: str | Path) -> str:
    """A path as its absolute form, so that a list written with absolute paths (the check's own) matches a data set
    named relative to the working folder, and the other way round."""
    return str(Path(path).resolve())


def automatic_decisions(issues: list[dict[str, str]], min_confidence: float = SURE) -> list[dict[str, str]]:
    """Decisions for the rows of a check's ``label_issues.csv`` without a review: a label issue or a copy with
    another label is relabelled where the out-of-fold models give the suggestion at least ``min_confidence``, and
    dropped where they are less sure (an image that may belong to none of the classes, or to two, teaches the model
    less than its absence costs); an outlier is kept, since being unusual does not make its label wrong.

    On Fashion-MNIST with 10% of its labels flipped at random, the flips that are found get the true label back
    from the suggestion 91% of the time, while the right labels flagged with them (the data set's own ambiguous
    shirts and tops) get suggestions the models are unsure of."""
    out = []
    for row in issues:
        if row["kind"] == "outlier":
            continue
        label, _, p = row["runner_up"].split(";")[0].rpartition(":")
        sure = float(p) >= min_confidence if p.replace(".", "", 1).isdigit() else False
        out.append({"path": row["path"], "action": "relabel" if sure else "drop", "label": label})
    return out
