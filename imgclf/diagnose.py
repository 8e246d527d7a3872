"""Over-fitting diagnosis from a run's per-epoch metrics, in words a learner can act on."""
from __future__ import annotations

from dataclasses import dataclass

# A validation loss this much above its minimum (relative) counts as rising, not noise.
RISE = 0.03
# Train/validation accuracy gaps, in points.
GAP_WARN, GAP_GROW = 5.0, 2.0
# Below this training accuracy (with a small gap) the model has not learnt the training data yet.
UNDERFIT_ACC = 0.8

REMEDIES = ("more augmentation (--augment standard)", "dropout (e.g. cnn:32-m-64-m-d0.25-fc256-d0.5)",
            "weight decay (--weight-decay)", "more training data", "early stopping (--patience 3)")


@dataclass
class Diagnosis:
    """``verdict`` is over-fitting, under-fitting, good fit or unknown; ``onset`` the epoch the gap began to grow."""

    verdict: str
    text: str
    gap: float | None = None  # train minus validation accuracy at the last epoch, in points
    onset: int | None = None
    best_epoch: int | None = None


def diagnose(rows: list[dict[str, float]]) -> Diagnosis:
    """Read the curves: did validation loss turn up while training loss kept falling, and when?"""
    if not rows:
        return Diagnosis("unknown", "no epochs recorded yet")
    if not all("val_loss" in r and "val_acc" in r for r in rows):
        return Diagnosis("unknown", "no validation split, so over-fitting cannot be measured; hold some images out "
                                    "with --val-split 0.1")
    epochs = [int(r["epoch"]) for r in rows]
    val_loss = [r["val_loss"] for r in rows]
    gaps = [100 * (r["train_acc"] - r["val_acc"]) for r in rows]
    best = min(range(len(rows)), key=val_loss.__getitem__)
    gap, best_epoch = gaps[-1], epochs[best]
    summary = (f"train/validation accuracy gap {gap:+.1f} points at epoch {epochs[-1]}; lowest validation loss "
               f"{val_loss[best]:.4f} at epoch {best_epoch}")
    rising = best < len(rows) - 1 and val_loss[-1] > val_loss[best] * (1 + RISE) and \
        rows[-1]["train_loss"] < rows[best]["train_loss"]
    growing = gap >= GAP_WARN and gap - min(gaps) >= GAP_GROW
    if rising or growing:
        if rising:
            onset = epochs[best + 1]
            how = (f"validation loss rose from {val_loss[best]:.4f} (epoch {best_epoch}) to {val_loss[-1]:.4f} while "
                   f"training loss kept falling; it started at epoch {onset}")
        else:
            start = min(range(len(gaps)), key=gaps.__getitem__)
            onset = next(epochs[i] for i in range(start, len(gaps)) if gaps[i] - gaps[start] >= GAP_GROW)
            how = f"the accuracy gap grew from {gaps[start]:+.1f} points (epoch {epochs[start]}) from epoch {onset} on"
        return Diagnosis("over-fitting", f"over-fitting: {how}. {summary}. The best checkpoint (epoch {best_epoch} "
                                         f"by validation loss) is what the run keeps. Remedies: "
                                         f"{', '.join(REMEDIES)}.", gap, onset, best_epoch)
    if rows[-1]["train_acc"] < UNDERFIT_ACC and gap < GAP_WARN:
        return Diagnosis("under-fitting", f"under-fitting: training accuracy is only {rows[-1]['train_acc']:.1%}. "
                                          f"{summary}. Remedies: train longer (--epochs), a larger model, a tuned "
                                          f"--lr, less regularisation (dropout, augmentation).", gap, None, best_epoch)
    return Diagnosis("good fit", f"no sign of over-fitting: {summary}.", gap, None, best_epoch)
