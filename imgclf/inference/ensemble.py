"""The fold models of a cross-validation (``imgclf cv``) predicting as one model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.sources import load_source
from ..errors import UserError
from ..metrics.classification import Evaluation
from ..run import BEST, CV_FILE, RunDir
from .classifier import Classifier
from .predictor import Predictor


class Ensemble(Predictor):
    """The fold models of a cross-validation predicting together: the mean of their class probabilities."""

    def __init__(self, folder: Path, device: str = "auto") -> None:
        spec = json.loads((folder / CV_FILE).read_text(encoding="utf-8"))
        self.members = [Classifier.load(folder / f"fold-{k}", device=device) for k in range(spec["folds"])
                        if (folder / f"fold-{k}" / BEST).exists()]
        if len(self.members) < spec["folds"]:
            raise UserError(f"{folder}: {len(self.members)} of {spec['folds']} folds are trained; finish the "
                            f"cross-validation with: imgclf cv --resume --name {folder.name}")
        self.run, self.classes, self.config = RunDir(folder), self.members[0].classes, self.members[0].config

    def proba(self, x: np.ndarray) -> np.ndarray:
        return np.mean([m.proba(x) for m in self.members], axis=0)

    def evaluate(self, data: str | None = None, split: str | None = None, top_k: int = 5,
                 save_to: Path | None = None, tta: bool = False) -> Evaluation:
        """The ensemble scored on held-out images: the data's test split (or ``data``); a fold's validation split
        would not do, every other fold trained on it."""
        if data is None and split in (None, "test") and "test" not in load_source(self.config.data,
                                                                                    self.config.data_root).splits:
            raise UserError(f"{self.config.data} has no test split, and every image of the others was trained on by "
                            f"some fold; evaluate the ensemble on other labelled data: imgclf evaluate RUN DATA")
        images, _ = self.members[0].eval_images(data, split or ("test" if data is None else None))
        if len(images) == 0:
            raise UserError("no readable labelled images to evaluate on")
        self.tta = tta
        batch = 256
        probs = np.concatenate([self.scores(images.x[i:i + batch].numpy()) for i in range(0, len(images), batch)])
        result = Evaluation(self.classes, images.y.numpy(), probs, top_k)
        if save_to is not None:
            result.save(Path(save_to), images.x)
        return result
