"""The convolution lessons: exact numbers against hand-computed ones, and the pictures they save."""
import numpy as np
import pytest
from PIL import Image

from imgclf.cli.main import main
from imgclf.errors import UserError
from imgclf.lessons.bottleneck import bottleneck
from imgclf.lessons.convolution import convolve, output_size, parse_kernel, pool


def test_a_vertical_edge_through_the_vertical_kernel():
    image = np.zeros((6, 6), dtype=np.float32)
    image[:, 3:] = 1.0  # dark left half, bright right half
    out = convolve(image, parse_kernel("vertical"))
    # each output sees 3 rows of [left - right]: -3 where the window straddles the edge, 0 elsewhere
    expected = np.array([[0, -3, -3, 0]] * 4, dtype=np.float32)
    assert out.shape == (4, 4) and np.array_equal(out, expected)
    assert not convolve(image, parse_kernel("horizontal")).any()  # no horizontal edge to find
    same = convolve(image, parse_kernel("1,0,-1;1,0,-1;1,0,-1"), padding="same")
    assert same.shape == (6, 6) and same[2, 5] == 3.0  # zero padding on the right: 1 + 1 + 1 - 0
    assert convolve(image, parse_kernel("vertical"), stride=2).shape == (output_size(6, 3, 2, 0),) * 2 == (2, 2)


def test_pooling_keeps_the_maximum_or_the_mean():
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert np.array_equal(pool(image, 2, kind="max"), [[5, 7], [13, 15]])
    assert np.array_equal(pool(image, 2, kind="avg"), [[2.5, 4.5], [10.5, 12.5]])
    assert pool(image, 3, 1).shape == (2, 2)


def test_the_bottleneck_arithmetic():
    direct, reduced = bottleneck(28, 28, 128, 64, 5, 32)
    assert direct.params == 5 * 5 * 128 * 64 and direct.macs == 28 * 28 * 5 * 5 * 128 * 64
    assert reduced.params == 128 * 32 + 5 * 5 * 32 * 64
    assert reduced.macs == 28 * 28 * (128 * 32 + 5 * 5 * 32 * 64)


@pytest.mark.parametrize("h,w,c,out,k,r", [(28, 28, 192, 32, 5, 16), (7, 9, 3, 8, 3, 2), (14, 14, 64, 64, 1, 64)])
def test_the_bottleneck_arithmetic_is_what_torch_counts(h, w, c, out, k, r):
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    def counted(layers: nn.Module):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            layers(torch.zeros(1, c, h, w))
        return sum(p.numel() for p in layers.parameters()), counter.get_total_flops() // 2
    direct, reduced = bottleneck(h, w, c, out, k, r)
    assert (direct.params, direct.macs) == counted(nn.Conv2d(c, out, k, padding=k // 2, bias=False))
    assert (reduced.params, reduced.macs) == counted(nn.Sequential(nn.Conv2d(c, r, 1, bias=False),
                                                                   nn.Conv2d(r, out, k, padding=k // 2, bias=False)))


def test_viz_commands_print_sizes_and_save_pictures(tmp_path, capsys):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    out = tmp_path / "k.png"
    assert main(["viz", "kernel", str(tmp_path / "photo.png"), "--kernel", "sobel", "--stride", "2",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "input 40x50, kernel 3x3, stride 2" in printed and "output 19x24" in printed
    with Image.open(out) as im:
        assert im.size[0] > 600 and len(set(np.asarray(im.convert("L")).ravel().tolist())) > 50  # not blank
    assert main(["viz", "pool", str(tmp_path / "photo.png"), "--output", str(tmp_path / "p.png")]) == 0
    assert "40x50 -> 20x25" in capsys.readouterr().out and (tmp_path / "p.png").stat().st_size > 1000
    assert main(["viz", "bottleneck", "--in", "28x28x128", "--out", "64", "--kernel", "5", "--reduce", "32"]) == 0
    printed = capsys.readouterr().out
    assert "160,563,200" in printed and "43,352,064" in printed and "3.7x fewer multiply-adds" in printed


@pytest.mark.parametrize("spec", ["1,2;3", "a,b", ""])
def test_a_bad_kernel_is_a_clear_error(spec):
    with pytest.raises(UserError, match="rows of numbers"):
        parse_kernel(spec)
