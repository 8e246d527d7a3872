"""The decision thresholds a finished run saves (``threshold.json``) for ``predict`` to answer by: the positive
class's for two classes (chosen by --positive or by name), each label's for multi-label, tuned for the best F1 on
the validation split, with the two-class threshold's accuracy on images it was not tuned on."""
from __future__ import annotations

import difflib
import re
from typing import Callable

import numpy as np

from ..data.tensors import ImageTensors
from ..errors import UserError
from ..inference.classifier import Classifier
from ..metrics.classification import tune_threshold
from ..metrics.multilabel import tune_thresholds as tune_label_thresholds
from ..run import THRESHOLD, RunDir

# Two-class thresholds: below MIN_TO_TUNE validation images of either class the tuned cut is noise and 0.5 stays;
# above, it moves from 0.5 toward the best-F1 cut by least / (least + SHRINK_IMAGES): half way at 50 images of the
# smaller class, 95% of the way at 1,000.
MIN_TO_TUNE, SHRINK_IMAGES = 20, 50


# A class named like one of these is the "no" of a two-class run (not_hot_dog, no_mask, other...).
NEGATIVE = re.compile(r"^(not|no|non)([-_ ]|$)|^(other|others|negative|background|none|normal|rest)$", re.I)


def choose_positive(classes: list[str], given: str | None) -> tuple[int, str]:
    """A two-class run's positive class (its id) and why: ``given`` (--positive), else the one whose partner is
    named like a "no" (not_hot_dog, other), else the second in alphabetical order."""
    if given is not None:
        if given not in classes:
            near = difflib.get_close_matches(given, classes, 1)
            raise UserError(f"--positive {given!r} is not a class of the data ({', '.join(classes)})"
                            f"{f'; did you mean {near[0]}?' if near else ''}")
        return classes.index(given), "--positive"
    negative = [i for i, c in enumerate(classes) if NEGATIVE.search(c)]
    if len(negative) == 1:
        return 1 - negative[0], f"{classes[negative[0]]!r} reads as its negative"
    return 1, f"the second in alphabetical order; --positive {classes[0]} to choose the other"


def check_positive(positive: str | None, classes: list[str], task: str) -> None:
    """--positive names a class of two-class data: checked before the run folder is made."""
    if positive is None:
        return
    if len(classes) != 2 or task == "multilabel":
        raise UserError(f"--positive {positive}: it names the class a two-class run detects, and this run has "
                        f"{len(classes)} {'labels' if task == 'multilabel' else 'classes'}")
    choose_positive(classes, positive)


def _tuned(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The best-F1 threshold on (y, scores), drawn toward 0.5 on a small split, and the weight it got."""
    least = int(np.bincount(y, minlength=2).min())
    weight = least / (least + SHRINK_IMAGES)
    return 0.5 + (tune_threshold(y, scores) - 0.5) * weight, weight


def cross_fitted_accuracy(y: np.ndarray, scores: np.ndarray, seed: int = 0) -> float:
    """The accuracy of the tuned threshold on images it was not tuned on: tuned on one half of the split, scored on
    the other, and the other way round (the split's own accuracy at its own best cut flatters it)."""
    halves = np.array_split(np.random.default_rng(seed).permutation(len(y)), 2)
    right = 0
    for tune, score in (halves, halves[::-1]):
        threshold, _ = _tuned(y[tune], scores[tune])
        right += int(((scores[score] >= threshold) == y[score]).sum())
    return right / len(y)


def tune_thresholds(clf: Classifier, run: RunDir, val: ImageTensors, positive: str | None,
                    log: Callable[[str], None]) -> None:
    """The decision thresholds predict uses, tuned for the best F1 on the validation split and saved in the run:
    the positive class's for two classes, each label's for multi-label; none for more classes."""
    classes = clf.classes
    if not clf.task.multilabel and len(classes) != 2:
        return
    probs = clf.predict_proba(val.x).numpy()
    if clf.task.multilabel:
        clf.threshold = tune_label_thresholds(val.y.numpy(), probs).tolist()
        run.save_threshold(clf.threshold, classes)
        shown = ", ".join(f"{c} {t:.2f}" for c, t in zip(classes[:8], clf.threshold))
        log(f"multi-label: each label is answered from its own threshold, the one with its best F1 on the "
            f"validation split ({THRESHOLD}): {shown}{', ...' if len(classes) > 8 else ''}")
        return
    pos, why = choose_positive(classes, positive)
    clf.positive, name = pos, classes[pos]
    y, scores = (val.y.numpy() == pos).astype(int), probs[:, pos]
    least = int(np.bincount(y, minlength=2).min())
    if least < MIN_TO_TUNE:  # 7 images once gave 0.9997: a threshold fitted to noise
        threshold, said = 0.5, (f"the validation split has {least} image(s) of its smaller class, too few to tune a "
                                f"decision threshold (at least {MIN_TO_TUNE} of each)")
        facts: dict = {}
    else:
        threshold, weight = _tuned(y, scores)
        fitted = cross_fitted_accuracy(y, scores)
        facts = {"cross_fitted_accuracy": fitted}
        said = (f"the best-F1 threshold on the validation split drawn {1 - weight:.0%} of the way back to 0.5 for "
                f"{least} images of its smaller class; its accuracy on images it was not tuned on (cross-fitted "
                f"halves of the split): {fitted:.4f}")
    run.save_threshold(threshold, name, why=why, **facts)
    clf.threshold = threshold if pos == 1 else 1.0 - threshold  # predictors hold it as class 1's probability
    log(f"two classes: {name!r} is the positive class ({why}); predict answers it from p({name}) >= "
        f"{threshold:.3f}: {said} ({THRESHOLD})")
