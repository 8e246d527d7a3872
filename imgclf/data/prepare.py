"""From a data source to decoded tensors: choose the input size and channels, then decode every split once."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError
from .decode import Preprocess
from .sources import Source
from .tensors import ImageTensors, decode_split, row_digests, scan

# For photos of mixed sizes, the from-scratch CNN works at this size unless --img-size says otherwise.
CNN_PHOTO_SIZE = 96
# Images no larger than this, all of one size, are used at their own size.
KEEP_NATIVE_UP_TO = 128


@dataclass
class Prepared:
    """The decoded splits of a source, at the model's input size and channels."""

    classes: list[str]
    splits: dict[str, ImageTensors]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)  # validation/test images identical to a training image


def input_shape(source: Source, img_size: int | None, channels: int | None, model_size: int | None = None,
                workers: int | None = None, quiet: bool = False) -> tuple[int, int]:
    """(channels, size) of the model's input: what the user asked for, else what the data suggests, else the
    architecture's own ``model_size`` (None for the from-scratch cnn: :data:`CNN_PHOTO_SIZE`)."""
    native = source.native_size
    if native is not None:
        gray = source.native_channels == 1
        common = native if native[0] == native[1] else None
    else:
        stats = scan(source.splits["train"].paths, workers, quiet)
        gray, common = stats.all_gray, stats.size
        common = common if common is None or common[0] == common[1] else None
    channels = channels or (1 if gray else 3)
    if img_size is None:
        if common is not None and (common[0] <= KEEP_NATIVE_UP_TO or native is not None):
            img_size = common[0]
        else:
            img_size = model_size or CNN_PHOTO_SIZE
    return channels, img_size


def prepare(source: Source, pre: Preprocess, workers: int | None = None, quiet: bool = False,
            max_bad_fraction: float = 1.0, cache: str = "ram") -> Prepared:
    """Decode every split of ``source``; files that cannot be read are skipped and listed, unless they are more
    than ``max_bad_fraction`` of all the files: then training on what is left would mislead, and it is an error."""
    splits, skipped = {}, []
    for name, split in source.splits.items():
        tensors = decode_split(split, pre, workers, f"decoding {name}", quiet, cache)
        skipped += tensors.skipped
        splits[name] = tensors
    total = sum(len(split) for split in source.splits.values())
    if total and len(skipped) / total > max_bad_fraction:
        raise UserError(f"{len(skipped)} of {total} images ({len(skipped) / total:.0%}) cannot be read, more than "
                        f"--max-bad-fraction {max_bad_fraction:g}; see why with: imgclf check DATA (e.g. "
                        f"{skipped[0][0]}: {skipped[0][1]}), or raise the limit")
    if len(splits["train"]) == 0:
        raise UserError("none of the training images could be read (see the reasons above); check the files")
    y = splits["train"].y
    present = set(np.flatnonzero(y.sum(0).numpy()).tolist()) if y.ndim == 2 else set(y.unique().tolist())
    if len(present) < 2:
        only = source.classes[next(iter(present))] if present else "none"
        raise UserError(f"training needs at least 2 classes with images, found 1 ({only!r}); "
                        f"add a folder of images for each class")
    return Prepared(source.classes, splits, skipped, leaked(splits, quiet))


def leaked(splits: dict[str, ImageTensors], quiet: bool = True) -> list[str]:
    """Validation/test images whose decoded pixels equal a training image's: the check ``imgclf check`` does in
    full (near duplicates too), here at the cost of hashing pixels already in memory."""
    others = [name for name in splits if name != "train"]
    if not others:
        return []
    say = f"checking {', '.join(others)} for copies of training images"
    train = set(row_digests(splits["train"].x, say, quiet))
    out = []
    for name, images in splits.items():
        if name != "train":
            out += [images.paths[i] if images.paths else f"{name}[{i}]"
                    for i, key in enumerate(row_digests(images.x, say, quiet)) if key in train]
    return out
