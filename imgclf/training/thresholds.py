"""The decision thresholds a finished run saves (``threshold.json``) for ``predict`` to answer by: class 1's for
two classes, each label's for multi-label, tuned for the best F1 on the validation split."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..data.tensors import ImageTensors
from ..inference.classifier import Classifier
from ..metrics.classification import tune_threshold
from ..metrics.multilabel import tune_thresholds as tune_label_thresholds
from ..run import THRESHOLD, RunDir

# Two-class thresholds: below MIN_TO_TUNE validation images of either class the tuned cut is noise and 0.5 stays;
# above, it moves from 0.5 toward the best-F1 cut by least / (least + SHRINK_IMAGES): half way at 50 images of the
# smaller class, 95% of the way at 1,000.
MIN_TO_TUNE, SHRINK_IMAGES = 20, 50


def tune_thresholds(clf: Classifier, run: RunDir, val: ImageTensors, log: Callable[[str], None]) -> None:
    """The decision thresholds predict uses, tuned for the best F1 on the validation split and saved in the run:
    class 1's for two classes, each label's for multi-label; none for more classes."""
    classes = clf.classes
    if not clf.task.multilabel and len(classes) != 2:
        return
    probs = clf.predict_proba(val.x).numpy()
    if clf.task.multilabel:
        clf.threshold = run.save_threshold(tune_label_thresholds(val.y.numpy(), probs).tolist(), classes)
        shown = ", ".join(f"{c} {t:.2f}" for c, t in zip(classes[:8], clf.threshold))
        log(f"multi-label: each label is answered from its own threshold, the one with its best F1 on the "
            f"validation split ({THRESHOLD}): {shown}{', ...' if len(classes) > 8 else ''}")
    elif len(classes) == 2:
        y = val.y.numpy()
        least = int(np.bincount(y, minlength=2).min())
        if least < MIN_TO_TUNE:  # 7 images once gave 0.9997: a threshold fitted to noise
            clf.threshold = run.save_threshold(0.5, classes[1])
            log(f"two classes: the validation split has {least} image(s) of its smaller class, too few to tune a "
                f"decision threshold (at least {MIN_TO_TUNE} of each); predict answers {classes[1]!r} from p >= 0.5")
            return
        tuned = tune_threshold(y, probs[:, 1])
        weight = least / (least + SHRINK_IMAGES)  # a small split's best-F1 cut is drawn toward 0.5
        clf.threshold = run.save_threshold(0.5 + (tuned - 0.5) * weight, classes[1])
        log(f"two classes: predict answers {classes[1]!r} from p >= {clf.threshold:.3f}: the best-F1 threshold on "
            f"the validation split, {tuned:.3f}, drawn {1 - weight:.0%} of the way back to 0.5 for {least} images "
            f"of its smaller class ({THRESHOLD})")
