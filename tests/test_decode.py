import io

import numpy as np
import pytest
import torch
from PIL import Image

from imgclf.data.decode import BadImage, Preprocess, is_image_file, open_image, to_mode


def load_pixels(path, channels, size):
    return Preprocess(channels, size).load(path)


def save(path, im, **kw):
    im.save(path, **kw)
    return path


def test_modes_are_converted_to_the_model_channels(tmp_path):
    rgb = Image.new("RGB", (20, 10), (255, 0, 0))
    assert load_pixels(save(tmp_path / "a.png", rgb), 3, 8).shape == (3, 8, 8)
    gray = load_pixels(save(tmp_path / "a.jpg", rgb), 1, 8)
    assert gray.shape == (1, 8, 8) and 60 < gray.mean() < 90  # red's luma, not 0 or 255
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    red = load_pixels(save(tmp_path / "c.jpg", cmyk), 3, 8)
    assert red[0].mean() > 200 and red[1].mean() < 60


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr = np.full((8, 8), 32768, dtype=np.uint16)
    path = save(tmp_path / "deep.png", Image.fromarray(arr))
    value = load_pixels(path, 1, 8).mean()
    assert 120 < value < 135


def test_transparency_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert load_pixels(save(tmp_path / "t.png", rgba), 3, 8).min() == 255
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    assert load_pixels(save(tmp_path / "p.png", pal, transparency=0), 1, 8).min() == 255
    la = Image.new("LA", (8, 8), (0, 255))
    assert load_pixels(save(tmp_path / "la.png", la), 1, 8).max() == 0


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    path = save(tmp_path / "rot.jpg", im, exif=exif.tobytes())
    opened = open_image(path)
    assert opened.size == (20, 40)
    arr = np.asarray(opened.convert("L"))
    assert arr[:15].mean() > 200 and arr[25:].mean() < 50  # the white half is now on top


def test_crop_keeps_the_centre_and_squash_keeps_everything():
    im = Image.new("L", (30, 10), 0)
    im.paste(255, (0, 0, 10, 10))  # white left third
    assert Preprocess(1, 10, "crop")(im).max() < 50
    assert Preprocess(1, 10, "squash")(im)[:, :, :3].mean() > 200


def test_crop_pct_resizes_beyond_the_crop_like_timm():
    im = Image.new("L", (100, 50), 0)
    im.paste(255, (40, 15, 60, 35))  # a 20x20 white square in the middle
    whole = Preprocess(1, 20, crop_pct=1.0, interpolation="bicubic")(im)
    tight = Preprocess(1, 20, crop_pct=0.5, interpolation="bicubic")(im)
    assert whole.shape == tight.shape == (1, 20, 20)
    assert (tight > 128).mean() > 2 * (whole > 128).mean()  # the square fills more of a tighter crop


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"hello, I am text", "not an image"),
])
def test_unreadable_files_raise_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(BadImage, match=reason):
        open_image(path)


def test_truncated_jpeg_is_reported(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[:600])
    with pytest.raises(BadImage, match="cannot decode"):
        open_image(path)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = save(tmp_path / "big.png", Image.new("L", (40, 40)))  # 1600 pixels: Pillow would only warn
    with pytest.raises(BadImage, match="decompression bomb"):
        open_image(path)


def test_image_extensions_any_case_and_hidden_files(tmp_path):
    assert is_image_file(tmp_path / "A.JPG") and is_image_file(tmp_path / "b.TiFf")
    assert not is_image_file(tmp_path / ".DS_Store") and not is_image_file(tmp_path / "._a.jpg")
    assert not is_image_file(tmp_path / "notes.txt")


def test_a_split_decodes_into_one_allocation_with_bad_files_leaving_no_gap(tmp_path):
    from imgclf.data.sources import Split
    from imgclf.data.tensors import channel_stats, decode_split

    rng = np.random.default_rng(0)
    paths = []
    for i in range(80):  # enough for the worker processes to be used
        path = tmp_path / f"{i:03d}.png"
        if i in (0, 41, 79):
            path.write_bytes(b"not a picture")
        else:
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    pre = Preprocess(3, 8)
    images = decode_split(Split(np.arange(80) % 2, paths=paths), pre, workers=1)
    good = [i for i in range(80) if i not in (0, 41, 79)]
    assert images.x.shape == (77, 3, 8, 8) and images.y.tolist() == [i % 2 for i in good]
    assert all(np.array_equal(images.x[k].numpy(), pre.load(paths[i])) for k, i in enumerate(good))
    assert [p for p, _ in images.skipped] == [str(paths[i]) for i in (0, 41, 79)]
    # the statistics in chunks of a few images equal numpy's over everything
    mean, std = channel_stats(images.x, chunk_bytes=3 * 8 * 8 * 8 * 5)
    as_float = images.x.double().div(255)
    assert mean == pytest.approx(as_float.mean(dim=(0, 2, 3)).tolist(), abs=1e-4)
    assert std == pytest.approx(as_float.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-4)


def test_statistics_come_from_a_spread_sample_and_digests_from_every_core(monkeypatch):
    from imgclf.data import tensors

    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3000, 3, 48, 48), dtype=np.uint8))
    x[1500:] //= 2  # the second half darker: a sample from the start alone would be off
    monkeypatch.setattr(tensors, "STATS_SAMPLE", 300)
    rows = torch.from_numpy(np.linspace(0, 2999, 300).round().astype(int))
    sample = x[rows].double().div(255)
    mean, std = tensors.channel_stats(x, chunk_bytes=3 * 48 * 48 * 8 * 7)
    assert mean == pytest.approx(sample.mean(dim=(0, 2, 3)).tolist(), abs=1e-4)
    assert std == pytest.approx(sample.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-4)
    assert mean == pytest.approx(x.double().div(255).mean(dim=(0, 2, 3)).tolist(), abs=0.01)

    x[2999] = x[5]  # in the last chunk of rows
    digests = tensors.row_digests(x)
    assert len(digests) == 3000 and digests[2999] == digests[5] and len(set(digests)) == 2999


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_the_resize_barely_sees(tmp_path):
    path = tmp_path / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((2400, 1800)).save(path, quality=90)
    pre = Preprocess(3, 96)
    assert pre.least_side == 192 and open_image(path, least_side=pre.least_side).size == (300, 225)  # 1/8 scale
    assert open_image(tmp_path / "photo.jpg").size == (2400, 1800)
    fast, full = pre.load(path).astype(int), pre(open_image(path)).astype(int)
    assert np.abs(fast - full).max() <= 3 and np.abs(fast - full).mean() < 0.5


def test_alpha_is_flattened_over_white_exactly_as_alpha_composite_would():
    value, alpha = np.meshgrid(np.arange(256), np.arange(256))  # every value/alpha pair
    rgba = Image.fromarray(np.stack([value, 255 - value, value // 2, alpha], -1).astype(np.uint8), "RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    expected = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    assert np.array_equal(np.asarray(to_mode(rgba, 3)), expected)


def test_high_bit_depths_scale_as_the_float_formula_in_bands():
    rng = np.random.default_rng(0)
    for arr, top in ((rng.integers(0, 65536, (700, 900)).astype(np.uint16), 65535.0),
                     (rng.random((700, 900)).astype(np.float32) * 3, None)):
        top = top or float(arr.max())
        expected = np.clip(arr.astype(np.float64) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        assert np.array_equal(np.asarray(to_mode(Image.fromarray(arr), 1)), expected)
