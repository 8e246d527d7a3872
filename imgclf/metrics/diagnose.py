"""Over-fitting diagnosis from a run's per-epoch metrics, in words a learner can act on."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import TrainConfig
from .monitor import best_epoch

# A validation loss this much above its minimum (relative) counts as rising, not noise; on a small validation split
# the noise is larger: the relative standard error of a mean loss falls as 1/sqrt(images), so the bar is at least
# NOISE/sqrt(images).
RISE, NOISE = 0.03, 2.0
# Train/validation accuracy gaps, in points.
GAP_WARN, GAP_GROW = 5.0, 2.0
# Below this training accuracy (with a small gap) the model has not learnt the training data yet.
UNDERFIT_ACC = 0.8
# Over-fitting shows over epochs, and on enough validation images to tell it from noise.
MIN_EPOCHS, MIN_VAL = 3, 30


@dataclass
class Diagnosis:
    """``verdict`` is over-fitting, under-fitting, good fit or unknown; ``onset`` the epoch the gap began to grow."""

    verdict: str
    text: str
    gap: float | None = None  # train minus validation accuracy at the last epoch, in points
    onset: int | None = None
    best_epoch: int | None = None  # the epoch the run's best checkpoint keeps


def remedies(cfg: TrainConfig | None) -> list[str]:
    """What helps against over-fitting, for the run's own model and options (all of them without a config)."""
    if cfg is None:
        return ["more augmentation (--augment standard)", "dropout (e.g. cnn:32-m-64-m-d0.25-fc256-d0.5)",
                "weight decay (--weight-decay)", "more training data", "early stopping (--patience 3)"]
    stronger = {None: "standard", "none": "light", "light": "standard", "standard": "strong"}.get(cfg.augment)
    cnn = cfg.model == "cnn" or cfg.model.startswith("cnn:")
    out = [f"more augmentation (--augment {stronger})"] if stronger else []
    if not cfg.mixup and not cfg.cutmix:
        out.append("mixup (--mixup 0.2)")
    if cnn:
        out.append("dropout (e.g. cnn:32-m-64-m-d0.25-fc256-d0.5)")
    elif cfg.mode == "fine-tune":
        out.append("fewer trainable blocks (--unfreeze 2, or --mode feature-extract)")
    elif not (cfg.pretrained or cfg.weights):
        out.append("ImageNet weights (--pretrained) or a smaller model")
    out += ["more weight decay (--weight-decay)", "more training data"]
    if not cfg.patience:
        out.append("early stopping (--patience 3)")
    return out


def _too_little(epochs: int, n_val: int | None) -> str | None:
    """Why over-fitting cannot be judged yet (too few validation images or epochs), or None."""
    if n_val is not None and n_val < MIN_VAL:
        return (f"over-fitting cannot be judged on {n_val} validation images (one image moves accuracy by "
                f"{100 / max(n_val, 1):.0f} points); hold out more (--val-split 0.2) or cross-validate (imgclf cv)")
    return f"too early to judge over-fitting after {epochs} epoch(s)" if epochs < MIN_EPOCHS else None


def diagnose(rows: list[dict[str, float]], monitor: str = "val_acc", kept: int | None = None,
             cfg: TrainConfig | None = None, n_val: int | None = None) -> Diagnosis:
    """Read the curves: did validation loss turn up while training loss kept falling, and when? How sure that is
    depends on the number of epochs and of validation images (``n_val``, when known); the remedies on the run's
    own configuration ``cfg``.

    ``monitor`` is the metric the run's best checkpoint follows and ``kept`` the epoch it holds (read from the
    checkpoint; without it, replayed from the rows by the checkpoint's own rule), so the text names what the run
    actually keeps."""
    if not rows:
        return Diagnosis("unknown", "no epochs recorded yet")
    kept = kept if kept is not None else best_epoch(rows, monitor)
    if not all("val_loss" in r and "val_acc" in r for r in rows):
        return Diagnosis("unknown", "no validation split, so over-fitting cannot be measured; hold some images out "
                                    "with --val-split 0.1", best_epoch=kept)
    epochs = [int(r["epoch"]) for r in rows]
    val_loss = [r["val_loss"] for r in rows]
    gaps = [100 * (r["train_acc"] - r["val_acc"]) for r in rows]
    best = min(range(len(rows)), key=val_loss.__getitem__)
    gap, lowest = gaps[-1], epochs[best]
    summary = (f"train/validation accuracy gap {gap:+.1f} points at epoch {epochs[-1]}; lowest validation loss "
               f"{val_loss[best]:.4f} at epoch {lowest}")
    if (why := _too_little(len(rows), n_val)) is not None:
        return Diagnosis("unknown", f"{why}. {summary}.", gap, None, kept)
    bar = max(RISE, NOISE / n_val ** 0.5) if n_val else RISE
    rise = val_loss[-1] / val_loss[best] - 1 if val_loss[best] > 0 else 0.0
    rising = best < len(rows) - 1 and rise > bar and rows[-1]["train_loss"] < rows[best]["train_loss"]
    stalled = best < len(rows) - 1  # validation loss no longer improving, though not clearly rising
    start = min(range(len(gaps)), key=gaps.__getitem__)
    widening = gap >= GAP_WARN and gap - gaps[start] >= GAP_GROW
    keeps = f"The run keeps the best checkpoint by {monitor}, epoch {kept}. " if kept is not None else ""
    if rising:
        onset = epochs[best + 1]
        after = len(rows) - 1 - best
        sure = "clear" if after >= 2 and rise > 2 * bar else "likely"
        size = f" on {n_val:,} validation images" if n_val else ""
        how = (f"validation loss rose {100 * rise:.0f}% from {val_loss[best]:.4f} (epoch {lowest}) to "
               f"{val_loss[-1]:.4f} over {after} epoch(s){size} while training loss kept falling; it started at "
               f"epoch {onset}")
        return Diagnosis("over-fitting", f"over-fitting ({sure}): {how}. {summary}. {keeps}Remedies: "
                                         f"{', '.join(remedies(cfg))}.", gap, onset, kept)
    if widening and stalled:
        onset = next(epochs[i] for i in range(start, len(gaps)) if gaps[i] - gaps[start] >= GAP_GROW)
        how = (f"validation loss has not improved since epoch {lowest} while the train/validation accuracy gap "
               f"widened from {gaps[start]:+.1f} points at epoch {epochs[start]} to {gap:+.1f} at epoch {epochs[-1]}")
        return Diagnosis("over-fitting", f"over-fitting (an early sign): {how}. {summary}. {keeps}Remedies: "
                                         f"{', '.join(remedies(cfg))}.", gap, onset, kept)
    if rows[-1]["train_acc"] < UNDERFIT_ACC and gap < GAP_WARN:
        return Diagnosis("under-fitting", f"under-fitting: training accuracy is only {rows[-1]['train_acc']:.1%}. "
                                          f"{summary}. Remedies: train longer (--epochs), a larger model, a tuned "
                                          f"--lr, less regularisation (dropout, augmentation).", gap, None, kept)
    minority = minority_note(rows[-1])
    if minority:
        return Diagnosis("minority missed", f"{minority} {summary}.", gap, None, kept)
    still = " (validation loss is still falling: training longer may help)" if widening and not stalled else ""
    return Diagnosis("good fit", f"no sign of over-fitting{still}: {summary}.", gap, None, kept)


# Validation accuracy this far above balanced accuracy (in points) means the minority classes are mostly missed.
MINORITY_GAP = 15.0
IMBALANCE_REMEDIES = "--class-weights balanced or --sampler balanced, judged by --monitor val_macro_f1"


def minority_note(row: dict[str, float]) -> str | None:
    """A sentence when the epoch's validation accuracy hides the minority classes (balanced accuracy far below)."""
    if "val_balanced_acc" not in row or 100 * (row["val_acc"] - row["val_balanced_acc"]) < MINORITY_GAP:
        return None
    return (f"the minority classes are mostly missed: validation accuracy {row['val_acc']:.4f} but balanced accuracy "
            f"{row['val_balanced_acc']:.4f} (the mean of the classes' recalls) at epoch {int(row['epoch'])}; try "
            f"{IMBALANCE_REMEDIES}.")


def collapse_note(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], where: str) -> str | None:
    """A warning when a model answers (almost) one class, or scores no better than always answering the most
    common one, on the evaluated images."""
    if not len(y_true):
        return None
    predicted = np.bincount(y_pred, minlength=len(classes))
    true = np.bincount(y_true, minlength=len(classes))
    top, share = int(predicted.argmax()), predicted.max() / len(y_pred)
    majority, rate = int(true.argmax()), true.max() / len(y_true)
    accuracy = float((y_true == y_pred).mean())
    if share >= 0.95 and true[top] / len(y_true) < 0.95:
        return (f"warning: the model answers {classes[top]!r} for {share:.0%} of the {where} images: it has "
                f"(almost) collapsed to one class; try {IMBALANCE_REMEDIES}")
    if accuracy <= rate + 0.005 and rate < 1.0:
        return (f"warning: accuracy {accuracy:.4f} on the {where} is no better than always answering the most common "
                f"class {classes[majority]!r} ({rate:.4f}); try {IMBALANCE_REMEDIES}")
    return None
