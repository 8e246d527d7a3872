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
