"""Property-based: whatever bytes or image a file holds, loading it gives the model's pixels or a BadImage."""
import io
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from imgclf.data.decode import BadImage, Preprocess

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
# what each format can store
FORMATS = {"PNG": {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}, "JPEG": {"L", "RGB", "CMYK"},
           "GIF": {"L", "P"}, "BMP": {"1", "L", "P", "RGB"}, "TIFF": {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK",
                                                                       "I;16", "I", "F"}, "WEBP": {"RGB", "RGBA"}}
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _load(data: bytes, suffix: str, pre: Preprocess) -> np.ndarray:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"file{suffix}"
        path.write_bytes(data)
        return pre.load(path)


@SETTINGS
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".tiff", ".webp"]),
       channels=st.sampled_from([1, 3]))
def test_random_bytes_give_pixels_or_a_bad_image(data, suffix, channels):
    pre = Preprocess(channels, 12)
    try:
        x = _load(data, suffix, pre)
    except BadImage as exc:
        assert str(exc)
    else:
        assert x.shape == (channels, 12, 12) and x.dtype == np.uint8


@st.composite
def images(draw):
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from([m for m in MODES if m in FORMATS[fmt]]))
    w, h = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode if mode in
                                                                                    ("1", "L", "LA", "P", "RGB",
                                                                                     "RGBA", "CMYK") else "L")
    if mode in ("I;16", "I", "F"):
        values = rng.integers(0, 65535, (h, w))
        im = Image.fromarray(values.astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
    buffer = io.BytesIO()
    im.save(buffer, fmt)
    return buffer.getvalue(), "." + fmt.lower()


@SETTINGS
@given(image=images(), channels=st.sampled_from([1, 3]), size=st.integers(8, 32))
def test_valid_images_of_any_mode_and_size_load_to_the_model_shape(image, channels, size):
    data, suffix = image
    x = _load(data, suffix, Preprocess(channels, size))
    assert x.shape == (channels, size, size) and x.dtype == np.uint8
