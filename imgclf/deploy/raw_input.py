"""``imgclf export --raw-input``: the run's preprocessing inside the ONNX graph, so that an app only decodes a photo.

The exported graph takes raw RGB pixels, ``uint8 (N, H, W, 3)`` of any size, and does what
:class:`~imgclf.data.decode.Preprocess` does in Python with Pillow, step by step: the grey conversion (integer
weights, exact), the box-average of an image more than 6x its target (``reducing_gap=3``), the antialiased resize of
the shorter side to ``size / crop_pct`` (the width, rounded to 8 bits, then the height, each a matrix product with
Pillow's own coefficients), the centre ``size`` x ``size`` crop (or a squash), then ``/ 255``, minus the mean,
over the standard deviation. It is a small graph of its own, joined in front of the model's with ``onnx.compose``:
apps that re-implement resize, crop and normalisation differently are the commonest cause of an exported model
answering differently from its original.

Measured against imgclf's Python preprocessing on scikit-image's photos (300x451 to 512x512) for 224, 96 and 28 px:
at most one grey level apart (float rounding), 0.0-0.11 levels on average. The resize is built from matrix products,
not ONNX's ``Resize`` with ``antialias``, because runtimes disagree on that one (OpenVINO 2026.4: 4 levels off on
average) and every runtime computes a matrix product alike. Cost (bench/raw_input.py): a 12-megapixel photo takes
0.13 s here (Pillow: 0.02 s), a 1365x1024 one 0.09 s (0.01 s). What remains is in the decoding: imgclf decodes a large JPEG at a reduced scale, an
app decodes it whole; the export's check, on the run's own validation images decoded whole, measures what that
changes in the answers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..errors import UserError
from ..inference.onnx import RAW_INPUT, RAW_INPUT_FORMAT

LEAST_OPSET = 18  # ReduceSum/ReduceMin with axes as inputs, as the graph writes them
# Pillow's L = (19595 R + 38470 G + 7471 B + 32768) >> 16: exact in float32, as every sum stays below 2^24
GREY_WEIGHTS = (19595.0, 38470.0, 7471.0)
REDUCING_GAP = 3.0  # imgclf's Preprocess resizes with Pillow's reducing_gap=3
# Pillow's antialiased filters and their support (its nearest and Lanczos are not built here)
FILTERS = {"bilinear": 1.0, "bicubic": 2.0}


def _const(name: str, values: object, dtype: type = np.float32):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


CONSTANTS = {"grey_w": np.reshape(GREY_WEIGHTS, (1, 3, 1, 1)), "half": [32768.0], "shift": [65536.0],
             "zero": [0.0], "one": [1.0], "two_f": [2.0], "gap": [REDUCING_GAP], "top": [255.0], "half_pixel": [0.5],
             "support_bilinear": [FILTERS["bilinear"]], "support_bicubic": [FILTERS["bicubic"]],
             "cubic_a": [-0.5], "cubic_a2": [1.5], "cubic_a3": [2.5], "four": [4.0], "five": [5.0], "eight": [8.0],
             "fixed_point": [float(1 << 22)]}  # Pillow's PRECISION_BITS for 8-bit images: 32 - 8 - 2
INT_CONSTANTS = {"i0": [0], "i1": [1], "i2": [2], "i4": [4], "hw_axes": [2, 3], "no_pads": [0] * 6,
                 "sum_axes": [3, 5], "i0_scalar": np.int64(0), "i1_scalar": np.int64(1)}


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
    # the shorter side to size / crop_pct, the other in proportion (Python's round: half to even, as Round);
    # side x target / short, not side x (target / short): OpenVINO 2026.4 turned that Div of a constant upside down
    return [_node("ReduceMin", ["hw_f"], "short", keepdims=1), _node("Mul", ["hw_f", "short_target"], "stretched"),
            _node("Div", ["stretched", "short"], "scaled"), _node("Round", ["scaled"], "rounded"),
            _node("Cast", ["rounded"], "rounded_i", to=TensorProto.INT64), _node("Max", ["rounded_i", "side"], "new_hw")]


def _reduce() -> list:
    """Pillow's ``reducing_gap=3``: an image more than 6x its target is first box-averaged by ``f`` = its ratio / 3
    (per axis; 1 leaves it as it is), the last partial block over the pixels it has, rounded as Pillow rounds:
    ``x`` to ``reduced``, with ``f`` (int64 [2]) and ``hw_f`` / ``f`` (``box``, the reduced image's true extent)."""
    from onnx import TensorProto

    def per_axis(name: str, k: str) -> object:
        return _node("Slice", [name, k, {"i0": "i1", "i1": "i2"}[k]], f"{name}_{k}")

    out = [_node("Cast", ["new_hw"], "new_f", to=TensorProto.FLOAT), _node("Div", ["hw_f", "new_f"], "ratio_hw"),
            _node("Div", ["ratio_hw", "gap"], "over_gap"), _node("Floor", ["over_gap"], "f_floor"),
            _node("Max", ["f_floor", "one"], "f_f"), _node("Cast", ["f_f"], "f", to=TensorProto.INT64),
            _node("Div", ["hw_f", "f_f"], "box"),
            _node("Sub", ["f", "i1"], "f_less"), _node("Add", ["hw", "f_less"], "hw_up"),
            _node("Div", ["hw_up", "f"], "blocks"), _node("Mul", ["blocks", "f"], "padded"),
            _node("Sub", ["padded", "hw"], "pad_end"), _node("Concat", ["no_pads", "pad_end"], "pads", axis=0),
            per_axis("blocks", "i0"), per_axis("f", "i0"), per_axis("blocks", "i1"), per_axis("f", "i1"),
            _node("Concat", ["nc", "blocks_i0", "f_i0", "blocks_i1", "f_i1"], "shape6", axis=0),
            _node("Pad", ["x", "pads"], "x_pad"), _node("Reshape", ["x_pad", "shape6"], "x_blocks"),
            _node("ReduceSum", ["x_blocks", "sum_axes"], "sums", keepdims=0)]
    for k, axis in (("i0", "i1"), ("i1", "i0")):  # pixels in each block: min(f, side - start), row by column
        out += [_node("Squeeze", [f"blocks_{k}", "i0"], f"blocks_{k}_len"),
                _node("Range", ["i0_scalar", f"blocks_{k}_len", "i1_scalar"], f"block_{k}"),
                _node("Mul", [f"block_{k}", f"f_{k}"], f"block_start_{k}"),
                _node("Slice", ["hw", k, {"i0": "i1", "i1": "i2"}[k]], f"side_{k}"),
                _node("Sub", [f"side_{k}", f"block_start_{k}"], f"left_{k}"),
                _node("Min", [f"left_{k}", f"f_{k}"], f"count_{k}_int"),
                _node("Cast", [f"count_{k}_int"], f"count_{k}_flat", to=TensorProto.FLOAT),
                _node("Unsqueeze", [f"count_{k}_flat", axis], f"count_{k}")]
    return out + [
            _node("Mul", ["count_i0", "count_i1"], "counts"),
            _node("Div", ["counts", "two_f"], "half_counts"), _node("Floor", ["half_counts"], "amend"),
            _node("Add", ["sums", "amend"], "sums_amended"), _node("Div", ["sums_amended", "counts"], "means"),
            _node("Floor", ["means"], "reduced")]


def _weights(tag: str, k: str, kind: str) -> list:
    """``{tag}_w`` (new x in): Pillow's resampling coefficients along one axis (``k``: i0 the height, i1 the
    width), as its ``precompute_coeffs`` makes them: output pixel i centred at (i + 0.5) * scale in the input,
    the filter stretched by the scale when shrinking, the taps inside Pillow's window, each row summing to 1 and
    rounded to Pillow's 22 fractional bits."""
    end = {"i0": "i1", "i1": "i2"}[k]
    n = f"{tag}_"
    out = [_node("Slice", ["new_hw", k, end], n + "n_out"), _node("Slice", ["blocks", k, end], n + "n_in"),
           _node("Slice", ["box", k, end], n + "extent"), _node("Slice", ["new_f", k, end], n + "out_f"),
           _node("Cast", [n + "n_in"], n + "in_f", to=1),
           _node("Div", [n + "extent", n + "out_f"], n + "scale"), _node("Max", [n + "scale", "one"], n + "fscale"),
           _node("Mul", [n + "fscale", f"support_{kind}"], n + "support")]
    for name, count, axis in (("i", "n_out", "i1"), ("j", "n_in", "i0")):  # i: a column [new, 1]; j: a row [1, in]
        out += [_node("Squeeze", [n + count, "i0"], n + name + "_len"),
                _node("Range", ["i0_scalar", n + name + "_len", "i1_scalar"], n + name + "_int"),
                _node("Cast", [n + name + "_int"], n + name + "_flat", to=1),
                _node("Unsqueeze", [n + name + "_flat", axis], n + name)]
    out += [_node("Add", [n + "i", "half_pixel"], n + "i_mid"), _node("Mul", [n + "i_mid", n + "scale"], n + "centre"),
            _node("Sub", [n + "centre", n + "support"], n + "lo_edge"), _node("Add", [n + "lo_edge", "half_pixel"], n + "lo_r"),
            _node("Floor", [n + "lo_r"], n + "lo_f"), _node("Max", [n + "lo_f", "zero"], n + "lo"),
            _node("Add", [n + "centre", n + "support"], n + "hi_edge"), _node("Add", [n + "hi_edge", "half_pixel"], n + "hi_r"),
            _node("Floor", [n + "hi_r"], n + "hi_f"), _node("Min", [n + "hi_f", n + "in_f"], n + "hi"),
            _node("Sub", [n + "j", n + "centre"], n + "d"), _node("Add", [n + "d", "half_pixel"], n + "d_mid"),
            _node("Div", [n + "d_mid", n + "fscale"], n + "t"), _node("Abs", [n + "t"], n + "at")]
    if kind == "bilinear":  # the triangle filter
        out += [_node("Sub", ["one", n + "at"], n + "tri"), _node("Max", [n + "tri", "zero"], n + "raw")]
    else:  # Keys' cubic, a = -0.5: ((a + 2)|t| - (a + 3))t^2 + 1 within 1, (((|t| - 5)|t| + 8)|t| - 4)a within 2
        out += [_node("Mul", [n + "at", "cubic_a2"], n + "c1"), _node("Sub", [n + "c1", "cubic_a3"], n + "c2"),
                _node("Mul", [n + "c2", n + "at"], n + "c3"), _node("Mul", [n + "c3", n + "at"], n + "c4"),
                _node("Add", [n + "c4", "one"], n + "near"),
                _node("Sub", [n + "at", "five"], n + "e1"), _node("Mul", [n + "e1", n + "at"], n + "e2"),
                _node("Add", [n + "e2", "eight"], n + "e3"), _node("Mul", [n + "e3", n + "at"], n + "e4"),
                _node("Sub", [n + "e4", "four"], n + "e5"), _node("Mul", [n + "e5", "cubic_a"], n + "far"),
                _node("Less", [n + "at", "two_f"], n + "within2"), _node("Where", [n + "within2", n + "far", "zero"], n + "outer"),
                _node("Less", [n + "at", "one"], n + "within1"), _node("Where", [n + "within1", n + "near", n + "outer"], n + "raw")]
    out += [_node("GreaterOrEqual", [n + "j", n + "lo"], n + "from_lo"), _node("Less", [n + "j", n + "hi"], n + "below_hi"),
            _node("And", [n + "from_lo", n + "below_hi"], n + "window"), _node("Where", [n + "window", n + "raw", "zero"], n + "taps"),
            _node("ReduceSum", [n + "taps", "i1"], n + "total", keepdims=1), _node("Div", [n + "taps", n + "total"], n + "unit_w"),
            _node("Mul", [n + "unit_w", "fixed_point"], n + "fixed"), _node("Round", [n + "fixed"], n + "fixed_r"),
            _node("Div", [n + "fixed_r", "fixed_point"], n + "w")]
    return out


def _resize(kind: str) -> list:
    """``reduced`` resized to ``new_hw`` by two matrix products with Pillow's coefficients, the width first,
    rounded (Pillow's fixed point: half up) and clipped to 8 bits, then the height: the same pixels as Pillow's,
    and operators every runtime and converter computes alike (ONNX ``Resize`` with ``antialias`` is not: OpenVINO
    2026.4 gives another filter, 4 levels off on average)."""
    out = _weights("wide", "i1", kind) + _weights("tall", "i0", kind)
    out += [_node("Transpose", ["wide_w"], "wide_wt", perm=[1, 0]), _node("MatMul", ["reduced", "wide_wt"], "wide_sum"),
            _node("Add", ["wide_sum", "half_pixel"], "wide_half"), _node("Floor", ["wide_half"], "wide_levels"),
            _node("Clip", ["wide_levels", "zero", "top"], "wide8"),
            _node("MatMul", ["tall_w", "wide8"], "tall_sum"), _node("Add", ["tall_sum", "half_pixel"], "tall_half"),
            _node("Floor", ["tall_half"], "tall_levels"), _node("Clip", ["tall_levels", "zero", "top"], "resized")]
    return out


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
        raise UserError(f"--raw-input: the run resizes with {cfg.interpolation}, and the graph builds Pillow's "
                        f"bilinear and bicubic filters only; export without --raw-input, or train with "
                        f"--interpolation bilinear or bicubic")
    size = cfg.img_size
    nodes = [_node("Cast", [RAW_INPUT], "u8", to=TensorProto.FLOAT), _node("Transpose", ["u8"], "rgb", perm=[0, 3, 1, 2])]
    nodes += _grey() if cfg.channels == 1 else [_node("Identity", ["rgb"], "x")]
    nodes += [_node("Shape", ["x"], "shape"), _node("Slice", ["shape", "i0", "i2"], "nc"),
              _node("Slice", ["shape", "i2", "i4"], "hw"), _node("Cast", ["hw"], "hw_f", to=TensorProto.FLOAT)]
    nodes += _target(cfg.resize) + _reduce() + _resize(cfg.interpolation) + _crop_and_normalise(output)
    values = CONSTANTS | {"short_target": [size / (cfg.crop_pct if cfg.resize == "crop" else 1.0)],
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
        raise UserError(f"--raw-input needs ONNX opset {LEAST_OPSET} or later (its preprocessing's reductions); this export "
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
