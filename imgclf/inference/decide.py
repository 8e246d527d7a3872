"""Yes/no decisions from any classifier ("hot dog / not hot dog"): is the image one of the positive classes?

An image is a *yes* when its most likely class is a positive one, or, with a threshold, when the positive classes
together have at least that probability. Ground truth comes from folder names: images under ``positive/``,
``yes/`` or a folder named like a positive class count as positives; under ``negative/``, ``no/`` or
``not_<name>/`` as negatives. Then accuracy, precision and recall are reported (scikit-learn).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

POSITIVE_NAMES = {"positive", "positives", "pos", "yes", "true", "1"}
NEGATIVE_NAMES = {"negative", "negatives", "neg", "no", "false", "0", "other", "others"}


def _key(name: str) -> str:
    return re.sub(r"[\W_]+", "", name.lower())  # letters of every script and digits


def positive_ids(spec: str, classes: list[str], option: str = "--positive") -> list[int]:
    """Class ids for ``--positive``: comma-separated ids or names. A name matches a class or, for ImageNet's
    "hotdog, hot dog, red hot" style descriptions, any one of its synonyms (case and spaces ignored)."""
    by_name: dict[str, int] = {}
    for i, cls in enumerate(classes):
        for synonym in [cls, *cls.split(",")]:
            by_name.setdefault(_key(synonym), i)
    ids: list[int] = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        if token.isdigit() and int(token) < len(classes):
            ids.append(int(token))
        elif _key(token) in by_name:
            ids.append(by_name[_key(token)])
        else:
            # Close spellings of any synonym ("hotdgo" -> "hotdog, hot dog, red hot"), not of the whole description.
            near = difflib.get_close_matches(_key(token), list(by_name), n=6, cutoff=0.6)
            close = list(dict.fromkeys(classes[by_name[k]] for k in near))[:3]
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else \
                f"; use a class name or an id from 0 to {len(classes) - 1}"
            raise UserError(f"{option} {token!r} is not a class of this model{hint}")
    if not ids:
        raise UserError(f"{option} needs at least one class name or id")
    return sorted(set(ids))


def folder_truth(path: str, positives: list[str]) -> bool | None:
    """Ground truth from the image's folder name: True (positive), False (negative) or None (unknown)."""
    folder = _key(Path(path).parent.name)
    names = {_key(s) for cls in positives for s in [cls, *cls.split(",")]}
    if folder in POSITIVE_NAMES or folder in names:
        return True
    if folder in NEGATIVE_NAMES or any(folder in (f"not{n}", f"non{n}", f"no{n}") for n in names):
        return False
    return None


@dataclass
class Decision:
    """One image's yes/no answer, the probability of the positive classes, and the truth when known."""

    path: str
    yes: bool | None
    p_positive: float | None
    top_label: str | None
    truth: bool | None = None
    error: str | None = None


def decide(name: str, probs: np.ndarray | None, ids: list[int], classes: list[str],
           threshold: float | None = None, error: str | None = None) -> Decision:
    """The decision for one image from its class probabilities (None when the file could not be read)."""
    truth = folder_truth(name, [classes[i] for i in ids])
    if probs is None:
        return Decision(name, None, None, None, truth, error)
    p = float(probs[ids].sum())
    top = int(probs.argmax())
    yes = p >= threshold if threshold is not None else top in ids
    return Decision(name, yes, p, classes[top], truth)


def format_decisions(decisions: list[Decision], positive: str) -> str:
    """A line per image (yes/no, P(positive), top class, and right/wrong when the truth is known), then the
    scores over the images whose truth is known."""
    width = min(60, max((len(d.path) for d in decisions), default=4))
    lines = [f"{'image':<{width}}  answer  P({positive})  top class"]
    for d in decisions:
        shown = d.path if len(d.path) <= width else "..." + d.path[-width + 3:]
        if d.error:
            lines.append(f"{shown:<{width}}  error: {d.error}")
            continue
        mark = "" if d.truth is None else ("  right" if d.yes == d.truth else "  WRONG")
        lines.append(f"{shown:<{width}}  {'yes' if d.yes else 'no':<6}  {d.p_positive:>7.1%}  {d.top_label}{mark}")
    known = [d for d in decisions if d.truth is not None and d.yes is not None]
    if known:
        from sklearn.metrics import accuracy_score, confusion_matrix, precision_score, recall_score

        truth, answer = [d.truth for d in known], [d.yes for d in known]
        tn, fp, fn, tp = confusion_matrix(truth, answer, labels=[False, True]).ravel()
        lines.append(f"\n{len(known)} image(s) with ground truth from their folders: accuracy "
                     f"{accuracy_score(truth, answer):.4f}, "
                     f"precision {precision_score(truth, answer, zero_division=0):.4f}, "
                     f"recall {recall_score(truth, answer, zero_division=0):.4f} "
                     f"(yes: {tp} right, {fp} wrong; no: {tn} right, {fn} wrong)")
    return "\n".join(lines)
