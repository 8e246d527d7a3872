import pytest
import torch
from torch import nn

from imgclf.errors import UserError
from imgclf.models import CNN, create_model, default_img_size


def test_default_cnn_follows_input_channels_and_size():
    for chans, size in ((1, 28), (3, 32), (3, 64)):
        model = create_model("cnn", 7, chans, size)
        assert model(torch.zeros(2, chans, size, size)).shape == (2, 7)


def test_spec_builds_the_layers_it_names():
    model = CNN("16k5s2p0-m3s2-32-a-d0.25-fc64-d0.5", num_classes=4, in_chans=3, img_size=64)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (16, (5, 5), (2, 2), (0, 0)), (32, (3, 3), (1, 1), (1, 1))]
    assert any(isinstance(m, nn.MaxPool2d) and m.kernel_size == 3 and m.stride == 2 for m in model.features)
    assert any(isinstance(m, nn.AvgPool2d) for m in model.features)
    dense = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [d.out_features for d in dense] == [64, 4]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.25, 0.5]
    # 64 -> conv5/s2/p0: 30 -> pool3/s2: 14 -> conv: 14 -> avgpool: 7
    assert dense[0].in_features == 32 * 7 * 7
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 2


def test_global_pool_spec():
    model = CNN("8-g", num_classes=3, in_chans=1, img_size=16)
    assert model.head[-1].in_features == 8


@pytest.mark.parametrize("spec,match", [
    ("32-x-64", "cannot read layer 'x'"),
    ("fc32-32", "must come before"),
    ("m-d0.5", "no convolution"),
    ("32-m-m-m-m-m-m", "vanishes"),
])
def test_bad_specs_explain_themselves(spec, match):
    with pytest.raises(UserError, match=match):
        create_model(f"cnn:{spec}", 3, 1, 28)


def test_timm_models_by_name_with_any_channels():
    model = create_model("resnet18", 5, in_chans=1, img_size=32)
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 5)
    assert default_img_size("inception_v3") == 299 and default_img_size("cnn") is None


def test_unknown_model_suggests_names():
    with pytest.raises(UserError, match="did you mean resnet18"):
        create_model("resnet-18", 3)


def test_too_small_input_for_an_architecture():
    with pytest.raises(UserError, match="cannot take 16x16"):
        create_model("inception_v3", 3, 3, 16)


# ---- torchvision's architectures: GoogLeNet and its auxiliary classifiers ------------------------------------
def test_torchvision_names_beside_timms():
    from imgclf.models import canonical

    assert canonical("googlenet") == "tv:googlenet"  # timm has no GoogLeNet
    assert canonical("resnet18") == "resnet18" and canonical("tv:resnet18") == "tv:resnet18"  # a clash: timm's
    with pytest.raises(UserError, match="did you mean googlenet"):
        canonical("googlenett")
    with pytest.raises(UserError, match="did you mean tv:resnet18"):
        canonical("tv:resnet81")
    model = create_model("tv:resnet18", 4, in_chans=1, img_size=32)
    assert type(model.net).__module__ == "torchvision.models.resnet" and model.net.conv1.in_channels == 1
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 4)


def test_googlenet_trains_with_its_auxiliary_losses():
    from imgclf.models import main_logits
    from imgclf.training.loss import AUX_WEIGHT, WithAuxiliary

    model = create_model("googlenet", 3, in_chans=3, img_size=64).train()
    out = model(torch.randn(4, 3, 64, 64))
    assert len(out) == 3 and all(o.shape == (4, 3) for o in out)  # logits, then the two auxiliary classifiers
    y = torch.tensor([0, 1, 2, 0])
    ce = nn.CrossEntropyLoss()
    loss = WithAuxiliary(ce)(out, y)
    assert AUX_WEIGHT == 0.3 and loss.item() == pytest.approx(
        (ce(out[0], y) + 0.3 * (ce(out[1], y) + ce(out[2], y))).item(), rel=1e-6)
    assert main_logits(out) is out[0]
    loss.backward()  # the auxiliary classifiers get gradients: they are trained
    assert model.net.aux1.fc2.weight.grad.abs().sum() > 0
    model.eval()
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3)  # inference: the logits alone
    # From ImageNet weights the auxiliary classifiers are left out: published weights leave them untrained.
    assert create_model("googlenet", 3, 3, 64, auxiliary=False).net.aux1 is None


def test_a_googlenet_run_predicts_without_auxiliary_classifiers(image_folder, run_cwd):
    import sys

    import imgclf

    clf = imgclf.train(str(image_folder), "googlenet", epochs=1, name="g", img_size=32, batch_size=8,
                       quiet=True, plots=False, workers=0, report=False)
    assert clf.config.model == "tv:googlenet" and clf.model.net.aux1 is None
    assert clf.predict_proba(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 3)
    # Loading the run to predict asks torchvision alone: timm is not imported (a fresh process).
    code = ("import sys, imgclf; c = imgclf.load('runs/g'); c.predict_proba(__import__('torch').zeros(1, 3, 32, 32, "
            "dtype=__import__('torch').uint8)); assert 'timm' not in sys.modules, 'timm imported'")
    import subprocess
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_summary_shows_googlenets_inception_modules(capsys):
    from imgclf.cli.main import main

    assert main(["summary", "googlenet", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines() if line.startswith("net.")]
    assert [r for r in rows if "inception" in r] == [f"net.inception{b}" for b in
                                                      ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")]
    macs = int(out.split("multiply-accumulates per image: ")[1].split()[0].replace(",", ""))
    assert 1.45e9 < macs < 1.55e9  # the paper: "1.5 billion multiply-adds at inference time"
    assert "in layers that run in training only (auxiliary classifiers)" in out
