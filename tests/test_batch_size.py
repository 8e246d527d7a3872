"""--batch-size auto: a training step measured on the real model, the batch that fits the budget, accumulation that
keeps the asked step, a refusal before the first step when nothing fits, and gradient checkpointing."""
from __future__ import annotations

import pytest
import torch
import yaml

from imgclf import train
from imgclf.config import TrainConfig
from imgclf.errors import UserError
from imgclf.models import create_model
from imgclf.training import batch_size
from imgclf.training.batch_size import StepCost, _split, measure_step

from .conftest import TINY, write_class_folders


def test_a_step_is_split_into_batches_of_a_multiple_of_8_that_keep_its_size():
    assert _split(128, 40) == (32, 4)
    assert _split(128, 127) == (64, 2)
    assert _split(100, 40) == (34, 3)  # no multiple of 8 divides 100: the nearest even split


def test_the_measured_step_grows_with_the_image_and_leaves_the_model_as_it_was():
    cfg = TrainConfig(model="cnn:32-32-m-64-fc16", channels=3, img_size=64, precision="fp32", channels_last=False)
    net = create_model(cfg.model, 3, 3, 64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.random.get_rng_state()
    small = measure_step(net, cfg, torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), rng)  # the random images drew from a state put back after
    cfg.img_size = 192
    large = measure_step(create_model(cfg.model, 3, 3, 192), cfg, torch.device("cpu"))
    # nine times the pixels: about nine times the activations per image (4.7-9.2x measured with two processes at
    # once: at 64 px an image's few MB are near the allocator's noise, hence the wide margins)
    assert 3 < large.per_image / small.per_image < 15, (small, large)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # batch-norm statistics too
    assert all(p.grad is None for p in net.parameters())


@pytest.fixture
def photos(tmp_path):
    return write_class_folders(tmp_path / "data", 16)


def _small_machine(monkeypatch, cost: StepCost, memory: float) -> None:
    monkeypatch.setattr(batch_size, "measure_step", lambda net, cfg, device: cost)
    monkeypatch.setattr(batch_size, "available_memory", lambda: memory)


def test_a_step_that_does_not_fit_is_accumulated_and_said_in_the_config(photos, tmp_path, monkeypatch):
    # budget: half of 36 MB = 18 MB; 1 MB fixed + 1 MB per image: 17 fit, so batches of 16
    _small_machine(monkeypatch, StepCost(per_image=1e6, fixed=1e6), 36e6)
    options = TINY | {"batch_size": 32, "img_size": 96, "epochs": 1}
    clf = train(str(photos), project=str(tmp_path / "runs"), name="acc", **options)
    saved = yaml.safe_load((clf.run / "config.yaml").read_text())
    assert (saved["batch_size"], saved["accumulate"]) == (16, 2)
    assert "32 asked, batches of 16 fit" in saved["batch_plan"] and "keep its 32 images" in saved["batch_plan"]
    assert "batch size: 32 asked" in (clf.run / "train.log").read_text()


def test_auto_keeps_the_recipe_batch_where_it_fits_and_small_images_are_not_measured(photos, tmp_path, monkeypatch):
    _small_machine(monkeypatch, StepCost(per_image=1e6, fixed=1e6), 1e12)
    options = TINY | {"batch_size": None, "epochs": 1}
    large = train(str(photos), project=str(tmp_path / "runs"), name="large", img_size=96, **options)
    # 128, at most the 43 training images (48 less the 5 held out for validation)
    assert large.config.batch_size == 43 and large.config.accumulate == 1
    assert large.config.batch_plan.startswith("128 fits")
    small = train(str(photos), project=str(tmp_path / "runs"), name="small", **options)  # 16 px: not measured
    assert small.config.batch_plan is None and small.config.batch_size == 43


def test_nothing_fitting_is_refused_before_a_step_naming_the_ways_out(photos, tmp_path, monkeypatch, capsys):
    from imgclf.cli.main import main

    _small_machine(monkeypatch, StepCost(per_image=1e9, fixed=1e6), 4e9)
    code = main(["train", str(photos), "--model", "cnn:8-m-16-m-fc16", "--img-size", "96", "--epochs", "1",
                 "--project", str(tmp_path / "runs"), "--quiet", "--no-plots"])
    err = capsys.readouterr().err
    assert code == 2 and "not even a batch of 8 fits" in err and "--grad-checkpointing" in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run left behind


def test_gradient_checkpointing_gives_the_same_gradients_for_less_memory():
    torch.manual_seed(0)
    net = create_model("cnn:16-16-m-32-32-m-fc32", 3, 3, 64).eval()  # eval: batch-norm as a fixed function
    x = torch.randn(4, 3, 64, 64)
    net(x).sum().backward()
    plain = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    net.set_grad_checkpointing(True)
    net(x).sum().backward()
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(plain, net.parameters()))
    # A deep stack at full size, where the activations kept for the backward pass are most of a step: their bytes,
    # counted as autograd saves them (the peak RSS of the same steps, 0.50x in a fresh process, moved with what the
    # process had allocated before, up to 1.15x after other tests).
    net = create_model("cnn:16-16-16-16-m-32-32-32-32-m-fc32", 3, 3, 128).train()
    x = torch.randn(8, 3, 128, 128)
    kept = _saved_bytes(net, x)
    net.set_grad_checkpointing(True)
    assert _saved_bytes(net, x) < 0.4 * kept  # 0.19x: the segments' inputs, not every layer's output


def _saved_bytes(net: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one training step."""
    saved: dict = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[(t.data_ptr(), tuple(t.shape))] = t.numel() * t.element_size()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = net(x).sum()
    loss.backward()
    return sum(saved.values())


def test_gradient_checkpointing_on_a_model_without_it_is_a_clear_error(photos, tmp_path):
    with pytest.raises(UserError, match="tv:alexnet cannot recompute its activations"):
        train(str(photos), project=str(tmp_path / "runs"), **(TINY | {"model": "tv:alexnet", "img_size": 64,
                                                                        "grad_checkpointing": True}))
