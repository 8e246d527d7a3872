"""Predict with a LiteRT (TensorFlow Lite) file written by ``imgclf export --format litert``: the LiteRT interpreter
(``ai-edge-litert``, XNNPACK on the CPU) runs it one image at a time, as a phone does, and the class names and
preprocessing come from the ``export.json`` the export wrote beside it (a ``.tflite`` file has no place of its own
for them that the interpreter reads)."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import UserError
from ..resources import threads_per_process
from .onnx import OnnxClassifier

LITERT_INPUT_FORMAT = ("uint8 NHWC at the model's size (the app resizes and centre-crops as export.json says); "
                       "scaling and normalisation in the graph; outputs probabilities")
RECORD = "export.json"
EPS = 1e-7  # probabilities turned back into logits are clipped this far from 0 and 1


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The converter's chatter silenced: its progress lines (Python's stdout and stderr) and the log lines its
    compiled TensorFlow and absl layers write straight to file descriptor 2."""
    logging.getLogger("absl").setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(io.StringIO()), \
                contextlib.redirect_stdout(io.StringIO()):
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def interpreter_class():
    """The LiteRT interpreter, or a one-line error naming the extra."""
    try:
        with quiet():
            from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise UserError("the LiteRT runtime is not installed: pip install 'imgclf[litert]' (or only "
                        "ai-edge-litert to predict)") from None
    return Interpreter


def runtime_version() -> str:
    """The LiteRT runtime's version (``ai-edge-litert``)."""
    with quiet():
        import ai_edge_litert
    return ai_edge_litert.__version__


class LiteRtClassifier(OnnxClassifier):
    """:class:`OnnxClassifier`'s predict API on the LiteRT interpreter. The file answers probabilities; its
    :meth:`logits` are their logs (a multi-label file's, their log-odds), which the softmax (sigmoid) turns back
    into the same probabilities, so thresholds, TTA and the rest of the predict API work unchanged."""

    @staticmethod
    def write_metadata(folder: Path, meta: dict[str, str]) -> None:
        """Where :meth:`_open` reads the run's metadata from (the export then writes its full record there)."""
        (folder / RECORD).write_text(json.dumps({"metadata": meta}, indent=1, ensure_ascii=False), encoding="utf-8")

    @staticmethod
    def signature(path: Path) -> tuple[str, str]:
        """(the file's signature key, its input's name): what a calibration feeds, by name."""
        with quiet():
            interpreter = interpreter_class()(model_path=str(path))
        key, spec = next(iter(interpreter.get_signature_list().items()))
        return key, spec["inputs"][0]

    def _open(self, threads: int | None) -> tuple[dict[str, str], int | str | None]:
        interpreter = interpreter_class()
        record = self.path.parent / RECORD
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such file")
        try:
            meta = json.loads(record.read_text(encoding="utf-8"))["metadata"]
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"{self.path}: no readable {RECORD} with its metadata beside it; keep the folder "
                            f"'imgclf export --format litert' wrote together, or export again") from None
        try:
            with quiet():  # "Created TensorFlow Lite XNNPACK delegate", on every load
                self.interpreter = interpreter(model_path=str(self.path),
                                               num_threads=threads or threads_per_process())
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"{self.path}: not a valid LiteRT model ({str(exc).splitlines()[0][:200]})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        return meta, 1

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """The file's own outputs (probabilities) for uint8 images (N, C, H, W) at the model's size, one image per
        call."""
        out = np.empty((len(x), len(self.classes)), np.float32)
        for i, image in enumerate(x):
            self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(image.transpose(1, 2, 0))[None])
            self.interpreter.invoke()
            out[i] = self.interpreter.get_tensor(self.output["index"])[0]
        scale, zero = self.output["quantization"]
        return (out - zero) * scale if scale else out  # an integer output is dequantized

    def logits(self, x: np.ndarray | list[np.ndarray]) -> np.ndarray:
        p = np.clip(self.outputs(np.asarray(x)), EPS, 1 - EPS)
        return np.log(p / (1 - p)) if self.task.multilabel else np.log(p)
