from imgclf.cli.main import main
from imgclf.models import create_model
from imgclf.models.summary import summarize


def test_small_network_checked_by_hand():
    model = create_model("cnn:8-m", 4, in_chans=1, img_size=8)
    rows = {r.name: r for r in summarize(model, (1, 8, 8))}
    conv, pool, dense = rows["features.0"], rows["features.3"], rows["head.1"]
    assert conv.output == (8, 8, 8) and conv.params == 8 * 1 * 3 * 3 and conv.macs == 8 * 8 * 8 * 9
    assert rows["features.1"].params == 16 and pool.output == (8, 4, 4) and pool.macs == 0
    assert dense.output == (4,) and dense.params == 128 * 4 + 4 and dense.macs == 128 * 4


def test_a_1x1_bottleneck_costs_less():
    plain = summarize(create_model("cnn:64-64", 2, 64, 16), (64, 16, 16))
    bottleneck = summarize(create_model("cnn:16k1-64", 2, 64, 16), (64, 16, 16))
    assert sum(r.macs for r in bottleneck) < 0.4 * sum(r.macs for r in plain)


def test_frozen_parameters_are_reported(capsys):
    model = create_model("resnet18", 3, 3, 32)
    for p in model.layer1.parameters():
        p.requires_grad = False
    rows = summarize(model, (3, 32, 32))
    assert any(r.trainable == 0 and r.params > 0 for r in rows if r.name.startswith("layer1"))
    assert main(["summary", "cnn:8-m", "--img-size", "8", "--num-classes", "4"]) == 0
    out = capsys.readouterr().out
    assert "parameters: 604 (604 trainable, 0 frozen)" in out and "multiply-accumulates per image: 5,120" in out
