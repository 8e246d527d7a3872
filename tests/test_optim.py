import torch

from imgclf.config import TrainConfig
from imgclf.models import create_model
from imgclf.training.optim import create_optimizer, create_schedule


def lrs(cfg, steps_per_epoch=10):
    model = create_model("cnn:8-m-fc8", 3, 1, 8)
    optimizer = create_optimizer(model, cfg)
    schedule = create_schedule(optimizer, cfg, steps_per_epoch)
    out = []
    for step in range(1, cfg.epochs * steps_per_epoch + 1):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step(step)
    return optimizer, out


def test_onecycle_warms_up_for_a_quarter_then_anneals():
    _, rates = lrs(TrainConfig(epochs=4, lr=0.01, scheduler="onecycle"))
    peak = max(range(len(rates)), key=rates.__getitem__)
    assert abs(rates[peak] - 0.01) < 1e-4 and 8 <= peak <= 11
    assert rates[0] < 0.001 and rates[-1] < 1e-4


def test_cosine_from_timm_with_warmup():
    _, rates = lrs(TrainConfig(epochs=4, lr=0.1, scheduler="cosine", warmup_epochs=1))
    assert rates[0] < 0.01 and abs(max(rates) - 0.1) < 0.01 and rates[-1] < 0.005
    assert all(a >= b for a, b in zip(rates[12:], rates[13:]))  # decays after warm-up


def test_optimizers_and_no_decay_on_biases_and_batchnorm():
    model = create_model("cnn:8-m-fc8", 3, 1, 8)
    sgd = create_optimizer(model, TrainConfig(optimizer="sgd", momentum=0.8))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.8
    adamw = create_optimizer(model, TrainConfig(optimizer="adamw", weight_decay=0.1))
    assert isinstance(adamw, torch.optim.AdamW)
    decays = sorted(g["weight_decay"] for g in adamw.param_groups)
    assert decays == [0.0, 0.1]
    no_decay = next(g for g in adamw.param_groups if g["weight_decay"] == 0.0)
    assert all(p.ndim <= 1 for p in no_decay["params"])


def test_plateau_and_none_have_no_step_schedule():
    model = create_model("cnn:8-m-fc8", 3, 1, 8)
    for kind in ("plateau", "none"):
        cfg = TrainConfig(scheduler=kind)
        assert create_schedule(create_optimizer(model, cfg), cfg, 100) is None
