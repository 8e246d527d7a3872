"""Shared matplotlib set-up: a headless backend, fonts that cover Korean and other scripts, sizes that scale with
the number of classes, and one way to save a figure."""
from __future__ import annotations

import importlib.util
import math
import sys
from functools import lru_cache
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # headless files; a notebook keeps its inline backend (no windows either)
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import font_manager  # noqa: E402

# Fonts tried after DejaVu Sans, glyph by glyph (matplotlib >= 3.6 falls back per character), so a class named
# "운동화" or "猫" is drawn instead of empty boxes. NanumGothic ships with the koreanize-matplotlib package.
CJK_FONTS = ("NanumGothic", "Noto Sans CJK KR", "Noto Sans CJK JP", "Noto Sans CJK SC", "Droid Sans Fallback")


@lru_cache(maxsize=None)
def setup_fonts() -> tuple[str, ...]:
    """Register the bundled Korean font and make every figure fall back to the CJK fonts installed; returns the
    font families in use."""
    # The package's font file only: importing the package would restyle every figure as a side effect.
    spec = importlib.util.find_spec("koreanize_matplotlib")
    if spec is not None and spec.submodule_search_locations:
        font = Path(list(spec.submodule_search_locations)[0]) / "fonts" / "NanumGothic.ttf"
        if font.is_file():
            font_manager.fontManager.addfont(str(font))
    installed = {f.name for f in font_manager.fontManager.ttflist}
    families = ("DejaVu Sans", *(f for f in CJK_FONTS if f in installed))
    matplotlib.rcParams["font.family"] = list(families)
    return families


def label_fontsize(n: int) -> float:
    """Tick-label size for ``n`` class names: 10 pt for a few, down to 5 pt for ~100."""
    return float(max(5, 10 - n // 15))


def grid_shape(n: int, columns: int | None = None) -> tuple[int, int]:
    """(rows, columns) of a near-square grid holding ``n`` tiles."""
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


def subplots(rows: int, cols: int, size: tuple[float, float], **options):
    """``plt.subplots`` with the fonts set up, axes always a 2-D array, and matplotlib's constrained layout (which,
    unlike tight_layout, keeps a figure title clear of the top row)."""
    setup_fonts()
    return plt.subplots(rows, cols, figsize=size, squeeze=False, layout="constrained", **options)


def show_image(ax, image: np.ndarray, title: str | None = None, fontsize: float = 8, color: str = "black") -> None:
    """An image tile without ticks: (H, W), (H, W, 1) or (H, W, 3), uint8 or float in [0, 1]."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255 if image.dtype == np.uint8 else 1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=fontsize, color=color)


def hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.axis("off")


def save(fig, path: Path, dpi: int = 100) -> Path:
    """Write the PNG and free the figure (long training jobs make many)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def to_hwc(images) -> np.ndarray:
    """uint8 tensors or arrays (N, C, H, W) -> numpy (N, H, W, C) for imshow."""
    array = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
    return array.transpose(0, 2, 3, 1)
