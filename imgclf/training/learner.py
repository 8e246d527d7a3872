"""The classifier of a run, as ``imgclf.train`` and ``imgclf.load`` give it: it predicts, evaluates and exports as any
:class:`Classifier`, and it can also train further (:meth:`Learner.fit`) and show its results
(:meth:`Learner.show_results`), as fastai's Learner and a Keras model do.

The training job is imported when it is asked for, not here, so loading a run to predict stays as light as a plain
Classifier (no timm for a cnn run).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..inference.classifier import Classifier
from ..inference.load import load_predictor
from ..inference.predictor import Predictor
from ..metrics.by_task import evaluation_for
from ..models import is_custom
from ..plots import plot_top_losses
from ..run import BEST, RunDir

# What a further fit keeps of the run's configuration: everything but where it is, what it starts from and for how
# long (fastai's second fit_one_cycle: the same recipe, a fresh schedule, these weights).
NOT_KEPT = ("data", "model", "epochs", "name", "project", "weights", "pretrained", "processes", "folds", "fold")


class Learner(Classifier):
    """A run's classifier that trains further and shows its results."""

    def fit(self, epochs: int, **options: object) -> "Learner":
        """Train ``epochs`` more epochs: a new run (``NAME-more``, ``NAME-more2``...) that starts from these best
        weights with the run's own options and a fresh schedule (``options`` change any of them); this object
        then holds the new run's weights, configuration and evaluation. The run it came from is left as it was."""
        run = self._own_run()
        cfg = self.config
        if is_custom(cfg.model):
            raise UserError(f"{run.path} was trained with your own model; continue it with imgclf.train(DATA, "
                            f"model=YourModel(), weights={str(run / BEST)!r}, epochs={epochs})")
        kept = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_KEPT}
        if cfg.mode == "scratch":  # from its own weights now: the whole network on, at the rate it trained at
            kept |= {"mode": "fine-tune", "head_epochs": 0, "unfreeze": "all", "backbone_lr_scale": 1.0}
        name = next(n for n in (f"{run.name}-more{i if i > 1 else ''}" for i in range(1, 1000))
                    if not (run.path.parent / n).exists())
        trained = train(cfg.data, cfg.model, epochs, **(kept | {"weights": str(run / BEST), "name": name,
                                                               "project": str(run.path.parent)} | options))
        self.__dict__.update(trained.__dict__)
        return self

    @classmethod
    def adopt(cls, clf: Classifier) -> "Learner":
        """The Learner of a loaded or just-trained ``clf``, sharing its model and state."""
        learner = cls.__new__(cls)
        learner.__dict__.update(clf.__dict__)
        return learner

    def show_results(self, n: int = 9, worst: bool = False, save_to: str | Path | None = None) -> Path:
        """A gallery of ``n`` images of the run's test (else validation) split, each titled predicted / actual /
        probability (the ``worst``: those with the highest loss), saved as ``results.png`` in the run (or
        ``save_to``) and shown inline in Jupyter."""
        run = self._own_run()
        images, where = self.eval_images(limit=None if worst else max(n, 1))
        probs = self.predict_proba(images.x).numpy()
        evaluation = evaluation_for(self.task, self.classes, images.y.numpy(), probs, self.threshold,
                                    positive=self.positive)
        chosen = evaluation.top_losses(n) if worst else np.arange(min(n, len(images)))
        if self.task.multilabel:
            titles = [f"{'|'.join(self.classes[j] for j in self.task.answer(probs[i], 0, self.threshold)) or 'none'} / "
                      f"{'|'.join(self.classes[j] for j in np.flatnonzero(evaluation.y_true[i])) or 'none'}"
                      for i in chosen]
        else:
            answers = [self.task.answer(probs[i], 1, self.threshold)[0] for i in chosen]
            titles = [f"{self.classes[a]} / {self.classes[int(evaluation.y_true[i])]} / {probs[i, a]:.0%}"
                      for i, a in zip(chosen, answers)]
        path = plot_top_losses(images.x[chosen], titles, Path(save_to) if save_to else run / "results.png",
                               f"{'worst ' if worst else ''}results on the {where}: predicted / actual / probability")
        _show_inline(path)
        return path

    def _own_run(self) -> RunDir:
        if self.run is None:
            raise UserError("this classifier has no run directory (a pretrained ImageNet model); train one with "
                            "imgclf.train")
        return self.run


def _show_inline(path: Path) -> None:
    """Display the picture when running in Jupyter (IPython with a kernel); elsewhere its path is the answer."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    if shell is not None and "IPKernelApp" in getattr(shell, "config", {}):
        from IPython.display import Image, display

        display(Image(filename=str(path)))


def train(data: str | None = None, model: object = "cnn", epochs: int | None = None, **options: object) -> Learner:
    """``imgclf.train``: :func:`~imgclf.training.job.train` (every option documented there), its classifier as a
    :class:`Learner`."""
    from .job import train as run_job  # imported when training: imgclf.load of a run imports none of it

    return Learner.adopt(run_job(data, model, epochs, **options))


def load(run: str | Path, weights: str = "best", device: str = "auto", model: object | None = None) -> Predictor:
    """``imgclf.load`` (see :func:`~imgclf.inference.load.load_predictor`): a run's classifier as a :class:`Learner`,
    an exported file or a cross-validation as their own predictors."""
    return load_predictor(run, weights, device, model, Learner)
