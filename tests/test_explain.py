"""Grad-CAM looks where the evidence is; layers are found for the built-in CNN and timm models; feature maps and
filters render; the explain and viz commands work and fail clearly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from imgclf.cli.main import main
from imgclf.models import create_model
from imgclf.reports import explain
from imgclf.training.job import train

from .conftest import TINY, assert_picture

SIZE = 32


def half_image(kind: str, rng: np.random.Generator) -> np.ndarray:
    """The class is in the left half (a vertical or a horizontal bar); the right half holds a bar of a random kind,
    so it says nothing about the class."""
    img = rng.integers(0, 30, (SIZE, SIZE), dtype=np.uint8)

    def bar(x0: int, vertical: bool) -> None:
        if vertical:
            x = x0 + rng.integers(3, 12)
            img[4:28, x:x + 3] = 255
        else:
            y = rng.integers(4, 26)
            img[y:y + 3, x0 + 2:x0 + 14] = 255
    bar(0, kind == "vertical")
    bar(SIZE // 2, bool(rng.integers(0, 2)))
    return img


@pytest.fixture(scope="module")
def halves_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("halves")
    rng = np.random.default_rng(0)
    for split, n in (("train", 100), ("test", 20)):
        for kind in ("horizontal", "vertical"):
            (root / "data" / split / kind).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(half_image(kind, rng)).save(root / "data" / split / kind / f"{i}.png")
    options = {**TINY, "model": "cnn:16-m-32-m-32-g", "batch_size": 16, "lr": 0.02}
    clf = train(str(root / "data"), epochs=10, augment="none", flip=False, project=str(root / "runs"),
                name="halves", **{k: v for k, v in options.items() if k != "model"}, model=options["model"])
    return clf, root


def test_grad_cam_heat_is_where_the_evidence_is(halves_run):
    clf, root = halves_run
    assert clf.evaluation.accuracy >= 0.95
    images, _ = clf.eval_images()
    found = explain.grad_cam(clf, images.x)
    assert found.layer == "features.10"  # the ReLU of the last convolution, before global pooling
    assert found.heat.shape == (len(images), SIZE, SIZE)
    per_image = found.heat[:, :, :SIZE // 2].sum((1, 2)) / found.heat.sum((1, 2))
    print(f"share of the heat on the left half: {per_image.mean():.3f}, per image {np.sort(per_image).round(2)}")
    # Both halves hold a bar and the global pooling sees bars anywhere, so the right half draws some heat too; a
    # broken or uniform map would share it evenly (0.5)
    assert per_image.mean() > 0.62
    assert (per_image > 0.5).mean() >= 0.85  # nearly every image: most of its heat on the left


def test_grad_cam_for_another_class_and_a_named_layer(halves_run):
    clf, _ = halves_run
    pixels = torch.from_numpy(half_image("vertical", np.random.default_rng(5)))[None, None]
    other = explain.grad_cam(clf, pixels, [clf.classes.index("horizontal")], layer="features.6")
    assert other.class_ids == [clf.classes.index("horizontal")] and other.layer == "features.6"
    with pytest.raises(Exception, match="not a layer of this model; layers with feature maps: features.0"):
        explain.grad_cam(clf, pixels, layer="nope")


def test_timm_models_get_their_last_conv_block():
    model = create_model("efficientnet_lite0", 3, 3, 64)
    assert explain.default_cam_layer(model, (3, 64, 64)) == "bn2.act"
    assert explain.default_feature_layer(model, (3, 64, 64)) == "bn1.act"
    names = [n for n, _ in explain.spatial_layers(model, (3, 64, 64))]
    assert names[0] == "conv_stem" and "global_pool" not in " ".join(names)


def test_explain_command(halves_run, tmp_path, capsys):
    clf, root = halves_run
    image = root / "data" / "test" / "vertical" / "0.png"
    (tmp_path / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = main(["explain", str(clf.run.path), str(image), str(tmp_path / "broken.png"), "--output-dir", str(out),
                 "--class", "horizontal"])
    captured = capsys.readouterr()
    assert code == 1  # one of the two files could not be read
    assert "explaining horizontal" in captured.out and "broken.png: error:" in captured.err
    assert_picture(out / "0_gradcam.png", 400, 200)
    assert main(["explain", str(clf.run.path), str(image), "--class", "diagonal"]) == 2
    assert "--class 'diagonal' is not a class of this model" in capsys.readouterr().err


def test_viz_filters_and_features(halves_run, tmp_path, capsys):
    clf, root = halves_run
    assert main(["viz", "filters", str(clf.run.path), "--output", str(tmp_path / "f.png")]) == 0
    assert "features.0: 16 filters of 1x3x3" in capsys.readouterr().out
    assert_picture(tmp_path / "f.png", 300, 150)
    image = str(root / "data" / "test" / "vertical" / "0.png")
    assert main(["viz", "features", str(clf.run.path), image, "--output", str(tmp_path / "m.png")]) == 0
    assert "layer features.2: 16 feature maps of 32x32" in capsys.readouterr().out
    assert_picture(tmp_path / "m.png", 400, 200)
    assert main(["viz", "features", str(clf.run.path), image, "--layer", "head.9"]) == 2
    assert "not a layer of this model" in capsys.readouterr().err


def test_feature_maps_are_the_layer_output(halves_run):
    clf, _ = halves_run
    pixels = torch.from_numpy(half_image("vertical", np.random.default_rng(1)))[None, None]
    maps = explain.feature_maps(clf, pixels, "features.2")
    direct = clf.model.features[:3](((pixels.float() / 255) - clf.mean.view(1, -1, 1, 1)) / clf.std.view(1, -1, 1, 1))
    assert torch.allclose(maps, direct[0], atol=1e-5)
