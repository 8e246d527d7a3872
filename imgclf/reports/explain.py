"""Where the network looks and what it sees: Grad-CAM heat maps (the ``grad-cam`` library), a layer's feature
maps, and the first layer's filters. Works for the built-in CNN and timm models alike: layers are found by
running one image through the model and noting which leaf layers give a spatial (N, C, H, W) output."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.decode import BadImage
from ..data.transforms import normalize
from ..errors import UserError
from ..inference.classifier import Classifier
from ..inference.decide import positive_ids
from ..inference.inputs import collect_inputs
from ..plots.style import grid_shape, hide_unused, save, show_image, subplots, to_hwc

# Layers that only pool, drop or pass through: not a target for Grad-CAM or a feature map worth showing.
_PASS_THROUGH = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d,
                 nn.Identity)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish)


def spatial_layers(model: nn.Module, shape: tuple[int, int, int], device: torch.device | str = "cpu"
                   ) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every leaf layer with a 4-D output, in the order the layers run."""
    seen: dict[str, tuple[int, ...]] = {}

    def hook(name: str):
        def record(_module: nn.Module, _inputs: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                seen.setdefault(name, tuple(output.shape[1:]))
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()
               if name and not any(m.children()) and not isinstance(m, _PASS_THROUGH)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return list(seen.items())


def find_layer(model: nn.Module, name: str, shape: tuple[int, int, int], device: torch.device | str = "cpu"
               ) -> nn.Module:
    """The layer called ``name``; a wrong name lists the layers that would work."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    names = [n for n, _ in spatial_layers(model, shape, device)]
    shown = names if len(names) <= 12 else names[:4] + ["..."] + names[-8:]
    raise UserError(f"--layer {name!r} is not a layer of this model; layers with feature maps: {', '.join(shown)} "
                    f"(imgclf summary RUN lists them all)")


def default_cam_layer(model: nn.Module, shape: tuple[int, int, int], device: torch.device | str = "cpu") -> str:
    """The last layer with a spatial map of at least 2x2: the usual Grad-CAM target (the last conv block)."""
    layers = spatial_layers(model, shape, device)
    if not layers:
        raise UserError("this model has no convolution layer with a spatial output to explain")
    spatial = [name for name, s in layers if min(s[1:]) >= 2]
    return (spatial or [layers[-1][0]])[-1]


def default_feature_layer(model: nn.Module, shape: tuple[int, int, int], device: torch.device | str = "cpu") -> str:
    """The first activation after a convolution (what the first filters respond to), else the first layer."""
    modules = dict(model.named_modules())
    layers = [name for name, _ in spatial_layers(model, shape, device)]
    if not layers:
        raise UserError("this model has no convolution layer with a spatial output to show")
    return next((n for n in layers if isinstance(modules[n], _ACTIVATIONS)), layers[0])


@dataclass
class Explanation:
    """Grad-CAM for a batch: heat maps in [0, 1] at the input size, the explained class and its probability."""

    layer: str
    heat: np.ndarray          # (N, H, W)
    class_ids: list[int]
    probs: torch.Tensor       # (N, classes)
    predicted: list[int]


def grad_cam(clf: Classifier, pixels: torch.Tensor, class_ids: list[int] | None = None, layer: str | None = None
             ) -> Explanation:
    """Grad-CAM of uint8 images (N, C, H, W) at the model's size, for ``class_ids`` (default: the predicted ones;
    for a multi-label model the most likely label, each label's logit being its own score)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    shape = tuple(pixels.shape[1:])
    name = layer or default_cam_layer(clf.model, shape, clf.device)
    module = find_layer(clf.model, name, shape, clf.device)
    x = normalize(pixels.to(clf.device), clf.mean, clf.std)
    with torch.no_grad():
        probs = clf.task.probabilities(clf.model.eval()(x)).cpu()
    predicted = probs.argmax(1).tolist()
    targets = list(class_ids) if class_ids is not None else predicted
    # Gradients must reach the layer even when the weights are frozen (a feature-extraction run).
    x.requires_grad_(True)
    with GradCAM(model=clf.model, target_layers=[module]) as cam:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in targets])
    return Explanation(name, heat, targets, probs, predicted)


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The heat map in the jet colour map over the image (H, W, C uint8) as an RGB uint8 image."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    return show_cam_on_image(rgb.astype(np.float32) / 255, heat, use_rgb=True, image_weight=0.55)


def class_id(clf: Classifier, name: str) -> int:
    """The id of ``--class NAME`` (a class name, an ImageNet synonym, or an id)."""
    ids = positive_ids(name, clf.classes, option="--class")
    if len(ids) != 1:
        raise UserError(f"--class {name!r}: give one class")
    return ids[0]


def plot_explanations(images: np.ndarray, found: Explanation, classes: list[str], path: Path,
                      titles: list[str] | None = None) -> Path:
    """Each image beside its Grad-CAM overlay, titled with the explained class and its probability."""
    n = len(images)
    cols = 2 * min(n, 4)
    rows = -(-n // 4)
    fig, axes = subplots(rows, cols, (2.6 * cols, 2.9 * rows + 0.4))
    for i, image in enumerate(images):
        c = found.class_ids[i]
        label = titles[i] if titles else images_title(found, classes, i)
        show_image(axes.flat[2 * i], image, label, fontsize=8)
        show_image(axes.flat[2 * i + 1], overlay(image, found.heat[i]), f"Grad-CAM: {classes[c]}", fontsize=8)
    hide_unused(axes, 2 * n)
    fig.suptitle(f"Grad-CAM at layer {found.layer} (red: what raised the class score most)", fontsize=10)
    return save(fig, path)


def images_title(found: Explanation, classes: list[str], i: int) -> str:
    """'predicted X (p)' and, when another class is explained, that one too."""
    p, c = found.predicted[i], found.class_ids[i]
    text = f"predicted {classes[p]} ({found.probs[i, p]:.2f})"
    return text if p == c else f"{text}\nexplaining {classes[c]} ({found.probs[i, c]:.2f})"


def feature_maps(clf: Classifier, pixels: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of ``layer`` for one uint8 image (1, C, H, W) -> (channels, h, w)."""
    module = find_layer(clf.model, layer, tuple(pixels.shape[1:]), clf.device)
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out.detach().float().cpu()))
    try:
        with torch.no_grad():
            clf.model.eval()(normalize(pixels.to(clf.device), clf.mean, clf.std))
    finally:
        handle.remove()
    if not captured or captured[0].dim() != 4:
        raise UserError(f"--layer {layer!r} has no spatial output to show; pick a convolution or activation layer")
    return captured[0][0]


def plot_feature_maps(maps: torch.Tensor, image: np.ndarray, layer: str, path: Path, limit: int = 64) -> Path:
    """The input, then up to ``limit`` channels of a layer's output, each scaled to its own range."""
    shown = maps[:limit].numpy()
    rows, cols = grid_shape(len(shown) + 1, 8)
    fig, axes = subplots(rows, cols, (1.5 * cols, 1.6 * rows + 0.5))
    show_image(axes.flat[0], image, "input", fontsize=7)
    for i, fmap in enumerate(shown, start=1):
        low, high = float(fmap.min()), float(fmap.max())
        show_image(axes.flat[i], (fmap - low) / (high - low) if high > low else np.zeros_like(fmap), f"{i - 1}",
                   fontsize=7)
        axes.flat[i].images[0].set_cmap("viridis")
    hide_unused(axes, len(shown) + 1)
    more = f", first {limit} shown" if len(maps) > limit else ""
    fig.suptitle(f"feature maps of {layer}: {len(maps)} channels of {maps.shape[1]}x{maps.shape[2]}{more}")
    return save(fig, path)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise UserError("this model has no convolution layer")


def plot_filters(model: nn.Module, path: Path, limit: int = 64) -> Path:
    """The first convolution's filters as small images: in colour for RGB input, gray otherwise (the mean over
    input channels), each scaled to its own range so its pattern shows."""
    name, conv = first_conv(model)
    weights = conv.weight.detach().float().cpu()
    if weights.shape[1] != 3:
        weights = weights.mean(1, keepdim=True)
    shown = weights[:limit]
    low = shown.amin(dim=(1, 2, 3), keepdim=True)
    high = shown.amax(dim=(1, 2, 3), keepdim=True)
    tiles = ((shown - low) / (high - low).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()
    rows, cols = grid_shape(len(tiles), 8)
    fig, axes = subplots(rows, cols, (1.2 * cols, 1.3 * rows + 0.5))
    for i, (ax, tile) in enumerate(zip(axes.flat, tiles)):
        show_image(ax, tile, str(i), fontsize=7)
        ax.images[0].set_interpolation("nearest")
    hide_unused(axes, len(tiles))
    w = conv.weight.shape
    fig.suptitle(f"first-layer filters ({name}: {w[0]} filters of {w[1]}x{w[2]}x{w[3]}"
                 f"{f', first {limit} shown' if w[0] > limit else ''})")
    return save(fig, path)


def explain_files(clf: Classifier, inputs: list[str], out_dir: Path, target: str | None = None,
                  layer: str | None = None, overwrite: bool = False) -> list[tuple[str, str]]:
    """Grad-CAM picture per image file (folders and globs expand) into ``out_dir`` as ``NAME_gradcam.png``, a new
    numbered name when one is taken (unless ``overwrite``); returns (input, what happened) per file. An
    unreadable file is reported and the rest go on. A multi-label model's picture has a map per label it answers
    (at most 4; its most likely label when it answers none), or per label of ``target`` (comma-separated)."""
    multilabel = clf.task.multilabel
    class_ids = None if target is None else \
        positive_ids(target, clf.classes, option="--class")[:4] if multilabel else [class_id(clf, target)]
    results, used = [], set()
    for path in collect_inputs(inputs):
        try:
            pixels = torch.tensor(clf.pixels(path))[None]
        except BadImage as exc:
            results.append((path, f"error: {exc}"))
            continue
        ids, titles = class_ids, None
        if multilabel:
            probs = clf.predict_proba(pixels)[0].numpy()
            ids = ids or (clf.task.answer(probs, 1, clf.threshold) or [int(probs.argmax())])[:4]
            titles = [f"label {clf.classes[c]} ({probs[c]:.2f})" for c in ids]
            pixels = pixels.repeat(len(ids), 1, 1, 1)  # one map per label
        found = grad_cam(clf, pixels, ids, layer)
        base = out_dir / f"{Path(path).stem}_gradcam.png"
        target_path, n = base, 2
        while target_path in used or (not overwrite and target_path.exists()):  # never replace, never collide
            target_path, n = base.with_name(f"{base.stem}-{n}{base.suffix}"), n + 1
        used.add(target_path)
        picture = plot_explanations(to_hwc(pixels), found, clf.classes, target_path, titles)
        about = ", ".join(titles) if titles else images_title(found, clf.classes, 0).replace(chr(10), ", ")
        explained = ", ".join(clf.classes[c] for c in found.class_ids)
        results.append((path, f"{about}; Grad-CAM of {explained} at {found.layer} -> {picture}"))
    return results
