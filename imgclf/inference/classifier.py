"""A trained classifier: the model, its class names and its preprocessing, loaded from a run directory."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data.decode import Preprocess
from ..data.sources import Source, load_source
from ..data.split import holdout
from ..data.tensors import ImageTensors, decode_split
from ..data.transforms import normalize
from ..device import resolve_device
from ..errors import UserError, warn
from ..metrics.by_task import evaluation_for
from ..metrics.classification import Evaluation
from ..metrics.diagnose import diagnose
from ..metrics.multilabel import MultiLabelEvaluation
from ..models import (CUSTOM, count_parameters, create_model, is_custom, known_name, pretrained_preprocess,
                      without_auxiliary)
from ..models.pretrained import read_weights
from ..resources import inference_batch
from ..run import BEST, EVALUATION, LAST, RunDir, RunStatus, kept_epoch
from .batching import in_passes
from .predictor import Predictor
from .tta import averaged


class Classifier(Predictor):
    """Predict and evaluate with a trained model. Get one from :func:`imgclf.train` or :func:`imgclf.load`."""

    def __init__(self, model: nn.Module, classes: list[str], config: TrainConfig, run: RunDir | None = None,
                 device: str | torch.device = "auto") -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device).eval()
        self.classes, self.config, self.run = classes, config, run
        self.evaluation: Evaluation | MultiLabelEvaluation | None = None  # set by imgclf.train: the score on the test/validation split
        self.mean = torch.tensor(config.mean, device=self.device)
        self.std = torch.tensor(config.std, device=self.device)

    def __repr__(self) -> str:
        cfg = self.config
        run = f", run={str(self.run.path)!r}" if self.run else ""
        return (f"{type(self).__name__}(model={cfg.model!r}, task={self.task.name!r}, classes={len(self.classes)}, "
                f"input={cfg.channels}x{cfg.img_size}x{cfg.img_size}{run})")

    @property
    def history(self) -> dict[str, list[float]]:
        """Keras' ``History.history``: each logged metric (``train_loss``, ``val_acc``, ``lr``...), epoch by epoch,
        from the run's metrics.csv."""
        rows = self.run.metrics() if self.run is not None else []
        return {key: [r[key] for r in rows if key in r] for key in dict.fromkeys(k for r in rows for k in r)}

    def _repr_html_(self) -> str:
        """Jupyter's view: the model, its input, its classes, where it lives and its score."""
        import html

        total, trainable = count_parameters(self.model)
        shown = ", ".join(self.classes[:12]) + (f", ... ({len(self.classes)} in all)" if len(self.classes) > 12 else "")
        rows = {"model": f"{self.config.model} ({total:,} parameters)", "input": f"{self.config.channels}x"
                f"{self.config.img_size}x{self.config.img_size}", "task": self.task.name, "classes": shown,
                "run": str(self.run.path) if self.run else "-"}
        if self.evaluation is not None:
            rows["score"] = self.evaluation.headline if self.task.multilabel else \
                f"accuracy {self.evaluation.accuracy:.4f} on {len(self.evaluation.y_true)} images"
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{html.escape(v)}</td>"
                       f"</tr>" for k, v in rows.items())
        return f"<table><caption>imgclf Classifier</caption>{body}</table>"

    # ---- loading ------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name: str, device: str = "auto") -> "Classifier":
        """An ImageNet-1k classifier straight from pretrained weights, with human-readable class names."""
        from timm.data import ImageNetInfo

        pre = pretrained_preprocess(name, 3)
        config = TrainConfig(model=name, pretrained=True, channels=3, img_size=pre["img_size"],
                             crop_pct=pre["crop_pct"], interpolation=pre["interpolation"], mean=pre["mean"],
                             std=pre["std"], channels_last=False)
        model = create_model(name, 1000, 3, pre["img_size"], pretrained=True)
        info = ImageNetInfo()
        classes = [info.index_to_description(i) for i in range(info.num_classes())]
        return cls(model, classes, config, None, device)

    @classmethod
    def load(cls, run: str | Path, weights: str | Path = "best", device: str = "auto", model: nn.Module | None = None
             ) -> "Classifier":
        """Rebuild the model of a run directory and load its weights: ``best`` (the kept checkpoint), ``last``
        (the last epoch's, from ``last.pt``) or the path of any weights file of that run (a user callback's
        checkpoint, absolute or relative to the run directory).

        A timm model name that is not a run (``efficientnet_lite0``) gives its pretrained ImageNet classifier. A run
        trained on your own ``nn.Module`` needs an instance of it as ``model``.
        """
        if str(run).lower().endswith(".onnx"):
            raise UserError(f"{run}: an exported ONNX file predicts and serves (imgclf predict / serve, "
                            f"imgclf.load); this needs the PyTorch run directory it was exported from")
        if not Path(run).exists() and not (Path("runs") / run).exists() and known_name(str(run)):
            return cls.from_pretrained(str(run), device)
        run_dir = RunDir.open(run)
        config, classes = run_dir.config(), run_dir.labels()
        if is_custom(config.model) and model is None:
            name = config.model[len(CUSTOM):]
            raise UserError(f"{run_dir.path} was trained with your own model ({name}); load it from Python with "
                            f"imgclf.load({str(run_dir.path)!r}, model={name}(...))")
        # the model that predicts: GoogLeNet's auxiliary classifiers served training only
        model = model if model is not None else create_model(config.model, len(classes), config.channels,
                                                             config.img_size, auxiliary=False)
        path = cls._weights_path(run_dir, weights)
        if not path.exists():
            raise UserError(f"{path}: the run has no weights yet; train it first (imgclf train)")
        state = without_auxiliary(read_weights(path))  # safetensors, or last.pt's model (weights_only)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"{path}: the weights do not fit the model in {run_dir / 'config.yaml'} "
                            f"({str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc})") \
                from None
        clf = cls(model, classes, config, run_dir, device)
        clf.threshold, clf.positive = run_dir.threshold(), run_dir.positive()
        if (run_dir / EVALUATION).is_file() and path == run_dir / BEST:  # the final evaluation of these weights
            with np.load(run_dir / EVALUATION, allow_pickle=False) as saved:
                clf.evaluation = evaluation_for(clf.task, classes, saved["y_true"], saved["probs"], clf.threshold,
                                                positive=clf.positive)
        return clf

    @staticmethod
    def _weights_path(run_dir: RunDir, weights: str | Path) -> Path:
        """The file behind ``weights``; a run without its best checkpoint falls back to ``last.pt``, loudly."""
        if str(weights) == "best":
            if not (run_dir / BEST).exists() and (run_dir / LAST).exists():
                done = run_dir.metrics()
                if not done:  # stopped inside its first epoch: last.pt holds a few steps, not a trained model
                    state = RunStatus.read(run_dir).get("status", "stopped")
                    raise UserError(f"{run_dir.path} has no trained epoch yet ({state} during epoch 1); resume it "
                                    f"with: imgclf train --resume --name {run_dir.name} --project "
                                    f"{run_dir.path.parent}")
                warn(f"{run_dir / BEST} is missing; using the weights of epoch {int(done[-1]['epoch'])} from "
                     f"{run_dir / LAST}")
                return run_dir / LAST
            return run_dir / BEST
        if str(weights) == "last":
            return run_dir / LAST
        path = Path(weights).expanduser()
        path = path if path.is_absolute() or path.exists() else run_dir.path / path
        if not path.is_file():
            raise UserError(f"weights {weights}: no such file (give best, last, or a weights file of the run)")
        return path

    # ---- inference ----------------------------------------------------------------------------------------
    supports_gradcam = True

    def proba(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(torch.from_numpy(x)).numpy()

    @torch.inference_mode()
    def predict_proba(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Class probabilities for uint8 images already at the model's size, (N, C, H, W) -> (N, classes): a
        softmax over the classes, or for a multi-label model each label's sigmoid. Computed ``batch_size`` images
        a pass, by default as many as fit the memory (:mod:`imgclf.inference.batching`)."""
        def run(start: int, stop: int) -> torch.Tensor:
            batch = normalize(x[start:stop].to(self.device), self.mean, self.std, self.config.channels_last)
            return self.task.probabilities(self.model(batch)).cpu()

        if batch_size:
            out = [run(start, start + batch_size) for start in range(0, len(x), batch_size)]
        else:
            out = in_passes(run, len(x), tuple(x.shape[1:]), self.device, self.fitted_passes)
        return torch.cat(out) if out else torch.empty(0, len(self.classes))

    # ---- evaluation ---------------------------------------------------------------------------------------
    def _map_labels(self, source: Source) -> np.ndarray:
        """Position of each of the source's classes among the model's classes; unknown names are an error."""
        ids = {c: i for i, c in enumerate(self.classes)}
        unknown = [c for c in source.classes if c not in ids]
        if unknown:
            raise UserError(f"{source.name}: label(s) {', '.join(map(repr, unknown[:5]))} are not classes of this "
                            f"model ({', '.join(self.classes[:10])}{', ...' if len(self.classes) > 10 else ''})")
        missing = [c for c in self.classes if c not in set(source.classes)]
        if missing:
            warn(f"{source.name} has {len(source.classes)} of the model's {len(self.classes)} classes "
                 f"({', '.join(source.classes[:10])}); none of: {', '.join(missing[:10])}"
                 f"{', ...' if len(missing) > 10 else ''}. The scores count only the classes it has")
        return np.array([ids[c] for c in source.classes], dtype=np.int64)

    def eval_images(self, data: str | None = None, split: str | None = None, limit: int | None = None
                    ) -> tuple[ImageTensors, str]:
        """The labelled images to evaluate on, decoded, and a description of where they come from.

        Without ``data``: the run's own test split, else its validation split (rebuilt from the seed).
        With ``data``: its test split if it has one, else all of its images. ``limit``: a random subset of at most
        that many images (seeded), decoded alone.
        """
        cfg = self.config
        if data is None:
            source = load_source(cfg.data, cfg.data_root).for_task(self.task.name)
            source = holdout(source, cfg.val_split, cfg.seed, cfg.folds, cfg.fold)
            split = split or ("test" if "test" in source.splits else "val")
        else:
            source = load_source(data, cfg.data_root)
            if source.multilabel and not self.task.multilabel:
                raise UserError(f"{source.name} is multi-label data (several labels per image) and this model "
                                f"answers one class per image; evaluate it on single-label data")
            source = source.for_task(self.task.name)
            split = split or ("test" if "test" in source.splits else "train")
        if split not in source.splits:
            raise UserError(f"{data or cfg.data} has no {split} split (it has: {', '.join(source.splits)})")
        mapping = self._map_labels(source)
        chosen = source.splits[split]
        if limit is not None and len(chosen) > limit:
            chosen = chosen.subset(np.sort(np.random.default_rng(cfg.seed).choice(len(chosen), limit, replace=False)))
        # a small subset (export's checks) stays in RAM; a whole split is kept the way the run keeps its data
        images = decode_split(chosen, Preprocess.of(cfg), desc=f"decoding {split}", quiet=cfg.quiet,
                              cache="ram" if limit is not None else cfg.cache)
        images.originals = chosen.pixels
        if self.task.multilabel:  # the source's label columns, placed at the model's
            y = torch.zeros((len(images), len(self.classes)), dtype=torch.float32)
            y[:, torch.from_numpy(mapping)] = images.y
            images.y = y
        else:
            images.y = torch.from_numpy(mapping)[images.y]
        return images, f"{data or cfg.data} ({split} split, {len(images)} images)"

    def evaluate(self, data: str | None = None, split: str | None = None, top_k: int = 5,
                 save_to: Path | None = None, tta: bool = False) -> "Evaluation | MultiLabelEvaluation":
        """Accuracy, top-k accuracy, per-class report and confusion matrix (multi-label: mAP, F1, per-label report);
        files written to ``save_to``. With ``tta`` the scores are those of the test-time views averaged, and the
        accuracy (mAP) without them is kept beside (``plain_accuracy``, ``plain_map``) to show the gain."""
        images, _ = self.eval_images(data, split)
        if len(images) == 0:
            raise UserError("no readable labelled images to evaluate on")
        result, _ = self.score(images, tta, top_k)
        if save_to is not None:
            result.save(Path(save_to), images.x)
        return result

    def score(self, images: ImageTensors, tta: bool = False, top_k: int = 5, plain: np.ndarray | None = None
              ) -> "tuple[Evaluation | MultiLabelEvaluation, np.ndarray]":
        """The evaluation of labelled ``images`` and the probabilities it scored; with ``tta`` those of the
        test-time views averaged, the accuracy (mAP) without them kept beside. ``plain``: this model's
        probabilities on ``images`` where they are already known (a frozen backbone's cached features through the
        head), so that they are not computed again."""
        plain = self.predict_proba(images.x).numpy() if plain is None else plain
        probs = self.views_proba(images.x) if tta else plain
        result = evaluation_for(self.task, self.classes, images.y.numpy(), probs, self.threshold, top_k,
                                self.positive)
        if tta and self.task.multilabel:
            result.plain_map = evaluation_for(self.task, self.classes, result.y_true, plain, self.threshold).\
                mean_average_precision
        elif tta:
            result.plain_accuracy = float((plain.argmax(1) == result.y_true).mean())
        return result, probs

    def views_proba(self, x: torch.Tensor) -> np.ndarray:
        """Class probabilities of uint8 images (N, C, H, W) averaged over their test-time views."""
        batch = inference_batch(tuple(x.shape[1:]))
        return np.concatenate([averaged(self.proba, x[i:i + batch].numpy(), self.config.flip is not False)
                               for i in range(0, len(x), batch)])

    def info(self) -> dict:
        """What a user wants to know about this classifier at a glance."""
        total, trainable = count_parameters(self.model)
        out = {"model": self.config.model, "task": self.task.name,
               **({"mode": self.config.mode} if self.config.mode else {}),
               "classes": self.classes, "parameters": total, "trainable": trainable,
               "input": f"{self.config.channels}x{self.config.img_size}x{self.config.img_size}",
               "mean": self.config.mean, "std": self.config.std, "data": self.config.data}
        if self.run is not None:
            out["run"] = str(self.run.path)
            if status := RunStatus.read(self.run).get("status"):
                out["status"] = status
            rows, monitor = self.run.metrics(), self.config.monitor
            kept = kept_epoch(self.run / BEST)
            row = next((r for r in rows if int(r["epoch"]) == kept), None)
            if row is not None and monitor in row:
                out["best"] = f"{monitor} {row[monitor]:.4f} at epoch {kept} of {int(rows[-1]['epoch'])} (kept in " \
                              f"{BEST})"
            if rows:
                n_val = RunStatus.read(self.run).get("images", {}).get("val")
                out["diagnosis"] = diagnose(rows, monitor, kept, self.config, n_val).text
            if (self.run / "eval.json").exists():
                report = json.loads((self.run / "eval.json").read_text(encoding="utf-8"))
                score = f"mAP {report['map']:.4f}" if "map" in report else f"accuracy {report['accuracy']:.4f}"
                out["evaluated"] = f"{score} on {report['images']} images (report.txt)"
            out["files"] = sorted(p.name for p in self.run.path.iterdir())
        return out
