"""``imgclf export --raw-input``: the run's preprocessing inside the ONNX graph, so that an app only decodes a photo.

The exported graph takes raw RGB pixels, ``uint8 (N, H, W, 3)`` of any size, and does what
:class:`~imgclf.data.decode.Preprocess` does in Python: Pillow's grey conversion (integer weights, exact), the
shorter side scaled to ``size / crop_pct`` with an antialiased filter (ONNX ``Resize`` with ``antialias=1``, opset
18, the filter Pillow uses), the centre ``size`` x ``size`` crop (or a squash), rounding to whole grey levels as
Pillow's 8-bit result, then ``/ 255``, minus the mean, over the standard deviation. Pillow's own steps are
followed, not approximated: it box-averages an image more than 6x its target first (``reducing_gap=3``), resizes
the width, rounds and clips to 8 bits, then the height; so does the graph. Measured against imgclf's Python
preprocessing on scikit-image's photos (300x451 to 512x512) for 224, 96 and 28 px: at most one grey level apart
(float rounding), 0.002-0.11 levels on average. What remains is in the decoding: imgclf decodes a large JPEG at
a reduced scale, an app decodes it whole; the export's check, on the run's own validation images decoded whole,
measures what that changes in the answers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..errors import UserError
from ..inference.onnx import RAW_INPUT, RAW_INPUT_FORMAT

LEAST_OPSET = 18  # Resize's antialias attribute
# Pillow's L = (19595 R + 38470 G + 7471 B + 32768) >> 16: exact in float32, as every sum stays below 2^24
GREY_WEIGHTS = (19595.0, 38470.0, 7471.0)
REDUCING_GAP = 3.0  # imgclf's Preprocess resizes with Pillow's reducing_gap=3
# Pillow's antialiased filters (its bicubic is Keys' a = -0.5). Its nearest and Lanczos have no ONNX twin.
FILTERS = {"bilinear": {"mode": "linear", "antialias": 1, "exclude_outside": 1},
           "bicubic": {"mode": "cubic", "antialias": 1, "cubic_coeff_a": -0.5, "exclude_outside": 1}}


def _const(name: str, values: object, dtype: type = np.float32):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


CONSTANTS = {"grey_w": np.reshape(GREY_WEIGHTS, (1, 3, 1, 1)), "half": [32768.0], "shift": [65536.0],
             "zero": [0.0], "one": [1.0], "two_f": [2.0], "gap": [REDUCING_GAP], "top": [255.0],
             "stretch": [1 + 1e-6], "unit_scales": [1.0, 1.0, 1.0]}
INT_CONSTANTS = {"i0": [0], "i1": [1], "i2": [2], "i3": [3], "i4": [4], "hw_axes": [2, 3], "no_pads": [0] * 6,
                 "ones_nc": [1, 1], "sum_axes": [3, 5]}


def _node(op: str, inputs: list[str], output: str, **attrs: object):
    from onnx import helper

    return helper.make_node(op, inputs, [output], **attrs)


def _grey() -> list:
    """Pillow's ``convert("L")`` of the float RGB image ``rgb``, to the grey level, as ``x``."""
    return [_node("Mul", ["rgb", "grey_w"], "grey_m"), _node("ReduceSum", ["grey_m", "i1"], "grey_s", keepdims=1),
            _node("Add", ["grey_s", "half"], "grey_h"), _node("Div", ["grey_h", "shift"], "grey_d"),
            _node("Floor", ["grey_d"], "x")]


def _target(resize: str) -> list:
    """``new_hw`` (int64 [2]): the size the image is resized to before the crop, from ``hw`` (its size)."""
    from onnx import TensorProto

    if resize == "squash":
        return [_node("Identity", ["side"], "new_hw")]
    # the shorter side to size / crop_pct, the other in proportion (Python's round: half to even, as Round)
    return [_node("ReduceMin", ["hw_f"], "short", keepdims=1), _node("Div", ["target", "short"], "ratio"),
            _node("Mul", ["hw_f", "ratio"], "scaled"), _node("Round", ["scaled"], "rounded"),
            _node("Cast", ["rounded"], "rounded_i", to=TensorProto.INT64), _node("Max", ["rounded_i", "side"], "new_hw")]


def _reduce() -> list:
    """Pillow's ``reducing_gap=3``: an image more than 6x its target is first box-averaged by ``f`` = its ratio / 3
    (per axis; 1 leaves it as it is), the last partial block over the pixels it has, rounded as Pillow rounds:
    ``x`` to ``reduced``, with ``f`` (int64 [2]) and ``hw_f`` / ``f`` (``box``, the reduced image's true extent)."""
    from onnx import TensorProto

    def per_axis(name: str, k: str) -> object:
        return _node("Slice", [name, k, {"i0": "i1", "i1": "i2"}[k]], f"{name}_{k}")

    return [_node("Cast", ["new_hw"], "new_f", to=TensorProto.FLOAT), _node("Div", ["hw_f", "new_f"], "ratio_hw"),
            _node("Div", ["ratio_hw", "gap"], "over_gap"), _node("Floor", ["over_gap"], "f_floor"),
            _node("Max", ["f_floor", "one"], "f_f"), _node("Cast", ["f_f"], "f", to=TensorProto.INT64),
            _node("Div", ["hw_f", "f_f"], "box"),
            _node("Sub", ["f", "i1"], "f_less"), _node("Add", ["hw", "f_less"], "hw_up"),
            _node("Div", ["hw_up", "f"], "blocks"), _node("Mul", ["blocks", "f"], "padded"),
            _node("Sub", ["padded", "hw"], "pad_end"), _node("Concat", ["no_pads", "pad_end"], "pads", axis=0),
            per_axis("blocks", "i0"), per_axis("f", "i0"), per_axis("blocks", "i1"), per_axis("f", "i1"),
            _node("Concat", ["nc", "blocks_i0", "f_i0", "blocks_i1", "f_i1"], "shape6", axis=0),
            _node("Concat", ["ones_nc", "blocks_i0", "f_i0", "blocks_i1", "f_i1"], "shape6_one", axis=0),
            _node("Pad", ["x", "pads"], "x_pad"), _node("Reshape", ["x_pad", "shape6"], "x_blocks"),
            _node("ReduceSum", ["x_blocks", "sum_axes"], "sums", keepdims=0),
            _node("Concat", ["ones_nc", "hw"], "one_shape", axis=0),
            _node("ConstantOfShape", ["one_shape"], "ones", value=_const("v", [1.0])),
            _node("Pad", ["ones", "pads"], "ones_pad"), _node("Reshape", ["ones_pad", "shape6_one"], "one_blocks"),
            _node("ReduceSum", ["one_blocks", "sum_axes"], "counts", keepdims=0),
            _node("Div", ["counts", "two_f"], "half_counts"), _node("Floor", ["half_counts"], "amend"),
            _node("Add", ["sums", "amend"], "sums_amended"), _node("Div", ["sums_amended", "counts"], "means"),
            _node("Floor", ["means"], "reduced")]


def _resize(filters: dict) -> list:
    """``reduced`` resized to ``new_hw``, the width first, rounded and clipped to 8 bits, then the height, as
    Pillow does (so bicubic's overshoot at sharp edges is clipped where Pillow clips it). Each pass scales by
    new / ``box`` (Pillow's box: the reduced image's true extent, not its rounded-up size) and keeps the first
    ``new`` pixels."""
    out, source = [], "reduced"
    for axis, k in ((3, "i1"), (2, "i0")):
        tag = f"pass{axis}"
        unit = "unit_scales" if axis == 3 else "unit_h"
        out += [_node("Slice", ["new_f", k, {"i0": "i1", "i1": "i2"}[k]], f"{tag}_new"),
                _node("Slice", ["box", k, {"i0": "i1", "i1": "i2"}[k]], f"{tag}_box"),
                _node("Div", [f"{tag}_new", f"{tag}_box"], f"{tag}_ratio"),
                _node("Mul", [f"{tag}_ratio", "stretch"], f"{tag}_scale"),  # the output at least new, never new - 1
                _node("Concat", [unit, f"{tag}_scale"] if axis == 3 else ["unit_nc", f"{tag}_scale", "one"],
                      f"{tag}_scales", axis=0),
                _node("Resize", [source, "", f"{tag}_scales"], f"{tag}_out", coordinate_transformation_mode="half_pixel",
                      **filters),
                _node("Slice", ["new_hw", k, {"i0": "i1", "i1": "i2"}[k]], f"{tag}_stop"),
                _node("Slice", [f"{tag}_out", "i0", f"{tag}_stop", {"i1": "i3", "i0": "i2"}[k]], f"{tag}_kept"),
                _node("Round", [f"{tag}_kept"], f"{tag}_levels"),
                _node("Clip", [f"{tag}_levels", "zero", "top"], f"{tag}_8bit")]
        source = f"{tag}_8bit"
    return out + [_node("Identity", [source], "resized")]


def _crop_and_normalise(output: str) -> list:
    """The centre ``side`` x ``side`` of ``resized`` (Pillow's crop box: integer halves), over 255, minus the
    mean, over the standard deviation."""
    return [_node("Sub", ["new_hw", "side"], "spare"), _node("Div", ["spare", "i2"], "start"),
            _node("Add", ["start", "side"], "stop"), _node("Slice", ["resized", "start", "stop", "hw_axes"], "cropped"),
            _node("Div", ["cropped", "top"], "unit"), _node("Sub", ["unit", "mean"], "centred"),
            _node("Div", ["centred", "std"], output)]


def preprocessing_graph(cfg: TrainConfig, output: str, opsets: list, ir_version: int, batch: int | str = "batch"):
    """An ONNX model from raw pixels (``pixels``: uint8 N x H x W x 3) to ``output``: the model's float input;
    ``batch`` is N (a name where it is free, a number where the model's batch is fixed)."""
    from onnx import TensorProto, helper

    if cfg.interpolation not in FILTERS:
        raise UserError(f"--raw-input: the run resizes with {cfg.interpolation}, which ONNX's Resize cannot do "
                        f"as Pillow does; export without --raw-input, or train with --interpolation bilinear or "
                        f"bicubic")
    size = cfg.img_size
    nodes = [_node("Cast", [RAW_INPUT], "u8", to=TensorProto.FLOAT), _node("Transpose", ["u8"], "rgb", perm=[0, 3, 1, 2])]
    nodes += _grey() if cfg.channels == 1 else [_node("Identity", ["rgb"], "x")]
    nodes += [_node("Shape", ["x"], "shape"), _node("Slice", ["shape", "i0", "i2"], "nc"),
              _node("Slice", ["shape", "i2", "i4"], "hw"), _node("Cast", ["hw"], "hw_f", to=TensorProto.FLOAT),
              _node("Concat", ["one", "one"], "unit_nc", axis=0)]
    nodes += _target(cfg.resize) + _reduce() + _resize(FILTERS[cfg.interpolation]) + _crop_and_normalise(output)
    values = CONSTANTS | {"target": [size / (cfg.crop_pct if cfg.resize == "crop" else 1.0)],
                          "mean": np.reshape(cfg.mean, (1, -1, 1, 1)), "std": np.reshape(cfg.std, (1, -1, 1, 1))}
    used = {name for node in nodes for name in node.input}
    inits = [_const(k, v) for k, v in values.items() if k in used]
    inits += [_const(k, v, np.int64) for k, v in (INT_CONSTANTS | {"side": [size] * 2}).items() if k in used]
    graph = helper.make_graph(
        nodes, "imgclf_preprocessing",
        [helper.make_tensor_value_info(RAW_INPUT, TensorProto.UINT8, [batch, "height", "width", 3])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, cfg.channels, size, size])], inits)
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def add_raw_input(path: Path, cfg: TrainConfig, meta: dict[str, str]) -> None:
    """Put the preprocessing graph in front of the ONNX model at ``path`` (rewritten in place), with ``meta`` and
    the raw input format in its metadata."""
    import onnx
    from onnx import compose

    model = onnx.load(str(path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < LEAST_OPSET:
        raise UserError(f"--raw-input needs ONNX opset {LEAST_OPSET} or later (Resize with antialias); this export "
                        f"uses {opset}: drop --opset or give --opset {LEAST_OPSET}")
    images = model.graph.input[0]
    first = images.type.tensor_type.shape.dim[0]
    batch = first.dim_value if first.HasField("dim_value") else (first.dim_param or "batch")
    pre = preprocessing_graph(cfg, "preprocessed", list(model.opset_import), model.ir_version, batch)
    pre = compose.add_prefix(pre, "pre/", rename_inputs=False)
    joined = compose.merge_models(pre, model, io_map=[("pre/preprocessed", images.name)])
    del joined.metadata_props[:]
    for key, value in (meta | {"input_format": RAW_INPUT_FORMAT}).items():
        joined.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(joined)
    onnx.save(joined, str(path))
