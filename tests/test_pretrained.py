"""Pretrained weights offline: the built-in EfficientNet-Lite0, local weight files, and what is refused."""
import os

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import imgclf
from imgclf.cli.main import main
from imgclf.errors import UserError
from imgclf.inference.classifier import Classifier
from imgclf.models import create_model, pretrained
from imgclf.models.pretrained import read_weights

from .conftest import TINY


@pytest.fixture(scope="module")
def imagenet():
    return Classifier.from_pretrained("efficientnet_lite0", device="cpu")


def test_builtin_lite0_knows_espresso_and_cats(imagenet, tmp_path):
    from skimage import data

    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    Image.fromarray(data.chelsea()).save(tmp_path / "chelsea.jpg")
    coffee, cat = imagenet.predict([str(tmp_path / "coffee.png"), str(tmp_path / "chelsea.jpg")], top_k=5)
    assert coffee.label == "espresso" and coffee.probs[0] > 0.5
    assert imagenet.classes.index(cat.label) in range(281, 286)
    assert imagenet.config.crop_pct == 0.875 and imagenet.config.interpolation == "bicubic"


def test_predict_with_a_model_name_prints_imagenet_names(tmp_path, capsys):
    from skimage import data

    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    assert main(["predict", "efficientnet_lite0", str(tmp_path / "coffee.png"), "--top-k", "2"]) == 0
    assert "espresso (" in capsys.readouterr().out


def test_lite0_adapts_to_gray_input_and_new_classes(imagenet):
    model = create_model("efficientnet_lite0", 10, in_chans=1, img_size=64, pretrained=True)
    ref = imagenet.model.cpu()
    assert model.classifier.out_features == 10
    assert torch.allclose(model.conv_stem.weight[:, 0], ref.conv_stem.weight.sum(1))
    assert torch.equal(model.blocks[2][0].conv_pw.weight, ref.blocks[2][0].conv_pw.weight)


def test_weights_file_round_trip_and_adaptation(tmp_path):
    source = timm.create_model("resnet18", num_classes=7)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    save_file(source.state_dict(), str(tmp_path / "r18.safetensors"))
    for name in ("r18.pth", "r18.safetensors"):
        same = create_model("resnet18", 7, 3, 32, weights=str(tmp_path / name))
        assert all(torch.equal(v, source.state_dict()[k]) for k, v in same.state_dict().items())
    other = create_model("resnet18", 3, 1, 32, weights=str(tmp_path / "r18.pth"))
    assert other.fc.out_features == 3 and other.conv1.weight.shape[1] == 1
    assert torch.equal(other.layer3[0].conv1.weight, source.layer3[0].conv1.weight)


def test_weights_of_another_architecture_name_the_keys(tmp_path):
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(UserError, match=r"missing \(e.g. layer1.2"):
        create_model("resnet34", 3, 3, 32, weights=str(tmp_path / "r18.pth"))


class Exploit:
    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_that_runs_code_is_refused(tmp_path):
    Exploit.marker = tmp_path / "pwned"
    torch.save({"conv.weight": torch.zeros(1), "payload": Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="refused"):
        read_weights(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_tampered_builtin_weights_are_refused(monkeypatch):
    module, _ = pretrained.OFFLINE["efficientnet_lite0"]
    monkeypatch.setitem(pretrained.OFFLINE, "efficientnet_lite0", (module, "0" * 64))
    with pytest.raises(UserError, match="SHA-256"):
        create_model("efficientnet_lite0", 3, pretrained=True)


def test_pretrained_offline_without_builtin_weights_names_the_ways_out(monkeypatch):
    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("network unreachable")
        return real(name, pretrained=False, **kwargs)
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(UserError, match="--weights FILE.*efficientnet_lite0"):
        create_model("resnet18", 3, pretrained=True)


def test_train_from_pretrained_saves_its_preprocessing(image_folder, run_cwd):
    options = dict(TINY, model="efficientnet_lite0", img_size=32, batch_size=12)
    clf = imgclf.train(str(image_folder), epochs=1, name="tl", pretrained=True, **options)
    cfg = clf.config
    assert (cfg.channels, cfg.img_size, cfg.crop_pct, cfg.interpolation) == (3, 32, 0.875, "bicubic")
    assert cfg.mean == pytest.approx([0.485, 0.456, 0.406]) and cfg.pretrained
    again = imgclf.load(clf.run.path)
    x = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(again.predict_proba(x), clf.predict_proba(x), atol=1e-6)
