"""A trained classifier: the model, its class names and its preprocessing, loaded from a run directory."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import timm
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .binary import Decision, decide, positive_ids
from .config import TrainConfig
from .data.cache import ImageTensors, decode_split
from .data.decode import BadImage
from .data.sources import Source, load_source
from .data.split import with_validation
from .data.transforms import normalize
from .device import resolve_device
from .diagnose import diagnose
from .errors import UserError
from .metrics import Evaluation
from .models import count_parameters, create_model, pretrained_preprocess
from .predict import Prediction, collect_inputs
from .run import BEST, LAST, RunDir


class Predictor:
    """What every classifier can do given ``classes``, ``config`` (for the preprocessing) and
    :meth:`predict_proba`: predict files, folders, globs, PIL images and arrays, and answer yes/no questions.
    :class:`Classifier` runs PyTorch; :class:`imgclf.onnx_model.OnnxClassifier` runs an exported ``.onnx`` file."""

    classes: list[str]
    config: TrainConfig

    def predict_proba(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities for uint8 images already at the model's size, (N, C, H, W) -> (N, classes)."""
        raise NotImplementedError

    def pixels(self, item: str | Path | Image.Image | np.ndarray) -> np.ndarray:
        """One image as the model sees it before normalisation: uint8 (C, H, W) at its size; a file that cannot
        be read raises :class:`~imgclf.data.decode.BadImage`."""
        pre = self.config.preprocess
        if isinstance(item, Image.Image):
            return pre(item)
        if isinstance(item, np.ndarray):
            return pre(Image.fromarray(item))
        return pre.load(item)

    def probabilities(self, inputs: str | Path | Image.Image | np.ndarray | Iterable, batch_size: int = 64
                      ) -> Iterator[tuple[str, torch.Tensor | None, str | None]]:
        """(name, probabilities over every class, error) per input, in order; an unreadable file has no
        probabilities and the reason as its error. Inputs as for :meth:`predict`."""
        items = [inputs] if isinstance(inputs, (str, Path, Image.Image, np.ndarray)) else list(inputs)
        if all(isinstance(i, (str, Path)) for i in items):
            items = collect_inputs([str(i) for i in items])
        for start in range(0, len(items), batch_size):
            chunk, pixels, errors = items[start:start + batch_size], [], {}
            for i, item in enumerate(chunk):
                try:
                    pixels.append(self.pixels(item))
                except BadImage as exc:
                    errors[i] = str(exc)
            probs = iter(self.predict_proba(torch.from_numpy(np.stack(pixels)))) if pixels else iter(())
            for i, item in enumerate(chunk):
                name = str(item) if isinstance(item, (str, Path)) else f"<image {start + i}>"
                yield (name, None, errors[i]) if i in errors else (name, next(probs), None)

    def predict(self, inputs: str | Path | Image.Image | np.ndarray | Iterable, top_k: int = 5,
                batch_size: int = 64) -> list[Prediction]:
        """Top-k classes for image files, folders, globs, PIL images or HxW[xC] uint8 arrays.

        Unreadable files get a :class:`Prediction` with ``error`` set instead of stopping the rest.
        """
        k = max(1, min(top_k, len(self.classes)))
        results: list[Prediction] = []
        for name, probs, error in self.probabilities(inputs, batch_size):
            if probs is None:
                results.append(Prediction(name, [], [], error))
                continue
            top = probs.topk(k)
            results.append(Prediction(name, [self.classes[j] for j in top.indices.tolist()],
                                      [round(p, 6) for p in top.values.tolist()]))
        return results

    def decide(self, inputs: str | Path | Image.Image | np.ndarray | Iterable, positive: str | list[str],
               threshold: float | None = None, batch_size: int = 64) -> list[Decision]:
        """Yes/no per image: is it one of the ``positive`` classes (names or ids)? Yes when the most likely class
        is positive, or, given ``threshold``, when the positive classes' summed probability reaches it. Images
        in folders named positive/negative (or ``X``/``not_X``) carry their ground truth."""
        spec = positive if isinstance(positive, str) else ",".join(map(str, positive))
        ids = positive_ids(spec, self.classes)
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise UserError(f"--threshold must be between 0 and 1, got {threshold}")
        return [decide(name, probs, ids, self.classes, threshold, error)
                for name, probs, error in self.probabilities(inputs, batch_size)]


class Classifier(Predictor):
    """Predict and evaluate with a trained model. Get one from :func:`imgclf.train` or :func:`imgclf.load`."""

    def __init__(self, model: nn.Module, classes: list[str], config: TrainConfig, run: RunDir | None = None,
                 device: str | torch.device = "auto") -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device).eval()
        self.classes, self.config, self.run = classes, config, run
        self.evaluation: Evaluation | None = None  # set by imgclf.train: the score on the test/validation split
        self.mean = torch.tensor(config.mean, device=self.device)
        self.std = torch.tensor(config.std, device=self.device)

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
    def load(cls, run: str | Path, weights: str = "best", device: str = "auto") -> "Classifier":
        """Rebuild the model of a run directory and load its ``best`` (or ``last``) weights.

        A timm model name that is not a run (``efficientnet_lite0``) gives its pretrained ImageNet classifier.
        """
        if str(run).endswith(".onnx"):
            from .onnx_model import OnnxClassifier
            return OnnxClassifier.load(run)  # type: ignore[return-value]  # same predict interface, no training
        if not Path(run).exists() and not (Path("runs") / run).exists() and timm.is_model(str(run)):
            return cls.from_pretrained(str(run), device)
        run_dir = RunDir.open(run)
        config, classes = run_dir.config(), run_dir.labels()
        model = create_model(config.model, len(classes), config.channels, config.img_size)
        path = run_dir / (BEST if weights == "best" else LAST)
        if weights == "best" and not path.exists() and (run_dir / LAST).exists():
            path = run_dir / LAST
        try:
            state = load_file(str(path)) if path.suffix == ".safetensors" else \
                torch.load(path, map_location="cpu", weights_only=True)["model"]
        except FileNotFoundError:
            raise UserError(f"{path}: the run has no weights yet; train it first (imgclf train)") from None
        except (SafetensorError, RuntimeError, KeyError, OSError, EOFError) as exc:
            raise UserError(f"{path}: the weights file is damaged ({str(exc).splitlines()[0]}); "
                            f"re-train or copy the run again") from None
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"{path}: the weights do not fit the model in {run_dir / 'config.yaml'} "
                            f"({str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc})") \
                from None
        return cls(model, classes, config, run_dir, device)

    # ---- inference ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_proba(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities for uint8 images already at the model's size, (N, C, H, W) -> (N, classes)."""
        out = []
        for start in range(0, len(x), batch_size):
            batch = normalize(x[start:start + batch_size].to(self.device), self.mean, self.std,
                              self.config.channels_last)
            out.append(self.model(batch).float().softmax(1).cpu())
        return torch.cat(out) if out else torch.empty(0, len(self.classes))

    # ---- evaluation ---------------------------------------------------------------------------------------
    def _map_labels(self, source: Source) -> np.ndarray:
        """Position of each of the source's classes among the model's classes; unknown names are an error."""
        ids = {c: i for i, c in enumerate(self.classes)}
        unknown = [c for c in source.classes if c not in ids]
        if unknown:
            raise UserError(f"{source.name}: label(s) {', '.join(map(repr, unknown[:5]))} are not classes of this "
                            f"model ({', '.join(self.classes[:10])}{', ...' if len(self.classes) > 10 else ''})")
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
            source = with_validation(load_source(cfg.data, cfg.data_root), cfg.val_split, cfg.seed)
            split = split or ("test" if "test" in source.splits else "val")
        else:
            source = load_source(data, cfg.data_root)
            split = split or ("test" if "test" in source.splits else "train")
        if split not in source.splits:
            raise UserError(f"{data or cfg.data} has no {split} split (it has: {', '.join(source.splits)})")
        mapping = self._map_labels(source)
        chosen = source.splits[split]
        if limit is not None and len(chosen) > limit:
            chosen = chosen.subset(np.sort(np.random.default_rng(cfg.seed).choice(len(chosen), limit, replace=False)))
        images = decode_split(chosen, cfg.preprocess, desc=f"decoding {split}", quiet=cfg.quiet)
        images.y = torch.from_numpy(mapping)[images.y]
        return images, f"{data or cfg.data} ({split} split, {len(images)} images)"

    def evaluate(self, data: str | None = None, split: str | None = None, top_k: int = 5,
                 save_to: Path | None = None) -> Evaluation:
        """Accuracy, top-k accuracy, per-class report and confusion matrix; files written to ``save_to``."""
        images, _ = self.eval_images(data, split)
        if len(images) == 0:
            raise UserError("no readable labelled images to evaluate on")
        result = Evaluation(self.classes, images.y.numpy(), self.predict_proba(images.x).numpy(), top_k)
        if save_to is not None:
            result.save(Path(save_to), images.x)
        return result

    def info(self) -> dict:
        """What a user wants to know about this classifier at a glance."""
        total, trainable = count_parameters(self.model)
        out = {"model": self.config.model, **({"mode": self.config.mode} if self.config.mode else {}),
               "classes": self.classes, "parameters": total, "trainable": trainable,
               "input": f"{self.config.channels}x{self.config.img_size}x{self.config.img_size}",
               "mean": self.config.mean, "std": self.config.std, "data": self.config.data}
        if self.run is not None:
            out["run"] = str(self.run.path)
            rows = self.run.metrics()
            monitor = self.config.monitor
            if rows and monitor in rows[0]:
                best = (max if monitor.endswith("acc") else min)(rows, key=lambda r: r[monitor])
                out["best"] = f"{monitor} {best[monitor]:.4f} at epoch {int(best['epoch'])} of {int(rows[-1]['epoch'])}"
            if rows:
                out["diagnosis"] = diagnose(rows).text
            if (self.run / "eval.json").exists():
                report = json.loads((self.run / "eval.json").read_text(encoding="utf-8"))
                out["evaluated"] = f"accuracy {report['accuracy']:.4f} on {report['images']} images (report.txt)"
            out["files"] = sorted(p.name for p in self.run.path.iterdir())
        return out
