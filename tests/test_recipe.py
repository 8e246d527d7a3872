"""The modern recipe from timm (issue 14, part 4, first pieces): Mixup/CutMix and gradient accumulation; and the
named recipes of --recipe."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from imgclf import train
from imgclf.callbacks import Callback
from imgclf.cli.main import _with_recipe, build_parser, main
from imgclf.errors import UserError
from imgclf.data.loader import train_loader
from imgclf.data.tensors import ImageTensors
from imgclf.training.mix import MixBatch
from imgclf.training.trainer import Trainer

from .conftest import TINY, TINY_ARGS, write_class_folders


def test_mixing_blends_pairs_and_their_labels_and_leaves_an_odd_batch_alone():
    torch.manual_seed(0)
    np.random.seed(0)  # timm draws the mixing proportion from numpy
    x, y = torch.randn(8, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    mix = MixBatch(mixup=1.0, cutmix=0.0, num_classes=3, label_smoothing=0.1)
    mixed, target = mix(x.clone(), y)
    assert not torch.equal(mixed, x) and target.shape == (8, 3)
    assert torch.allclose(target.sum(1), torch.ones(8))
    assert ((target > 0.15) & (target < 0.85)).any()  # an image of one class holds a share of its partner's
    odd, plain = mix(x[:7].clone(), y[:7])
    assert torch.equal(odd, x[:7]) and torch.allclose(plain.max(1).values, torch.full((7,), 0.9 + 0.1 / 3))


def _fit(batch: int, accumulate: int) -> torch.Tensor:
    torch.manual_seed(0)
    features = ImageTensors(torch.randn(16, 5), torch.arange(16) % 3)
    head = nn.Linear(5, 3)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5)
    loader = train_loader(features, batch, None, 0, seed=1)
    Trainer(head, optimizer, nn.CrossEntropyLoss(), loader, None, None, None, torch.device("cpu"), 1,
            log=lambda m: None, accumulate=accumulate).fit()
    return head.weight.detach()


def test_accumulating_two_half_batches_is_one_full_batch():
    assert torch.allclose(_fit(8, 1), _fit(4, 2), atol=1e-6)
    assert not torch.allclose(_fit(8, 1), _fit(4, 1), atol=1e-4)  # the same images in smaller steps differ


def test_training_with_mixup_cutmix_and_accumulation(image_folder, run_cwd):
    assert main(["train", str(image_folder), "--epochs", "2", "--mixup", "0.2", "--cutmix", "1.0", "--accumulate",
                 "2", "--name", "mix", "--scheduler", "none", *TINY_ARGS]) == 0
    run = run_cwd / "runs" / "mix"
    config = (run / "config.yaml").read_text()
    assert "mixup: 0.2" in config and "cutmix: 1.0" in config and "accumulate: 2" in config
    state = torch.load(run / "last.pt", weights_only=True)
    batches = math.ceil(32 / 8)  # 32 training images (36, less a tenth for validation), batch 8
    assert state["global_step"] == 2 * math.ceil(batches / 2)


@pytest.mark.parametrize("extra, message", [
    (["--mixup", "0.2", "--class-weights", "balanced"], "--class-weights does not apply to the soft targets"),
    (["--cutmix", "1", "--pretrained", "--model", "resnet18", "--mode", "feature-extract"],
     "trains on cached features"),
])
def test_mixing_that_cannot_work_is_refused(image_folder, run_cwd, capsys, extra, message):
    assert main(["train", str(image_folder), *TINY_ARGS, *extra]) == 2
    assert message in capsys.readouterr().err and not (run_cwd / "runs").exists()


def test_ema_weights_differ_from_the_live_ones_and_resume(image_folder, run_cwd):
    assert main(["train", str(image_folder), "--epochs", "3", "--ema", "--ema-decay", "0.9", "--name", "ema",
                 "--scheduler", "none", *TINY_ARGS]) == 0
    run = run_cwd / "runs" / "ema"
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val_live_acc", "val_ema_acc", "ema"} <= set(header)
    state = torch.load(run / "last.pt", weights_only=True)
    live, ema = state["model"], state["ema"]
    assert any(not torch.equal(live[k], ema[k]) for k in live if live[k].is_floating_point())  # the average lags
    assert main(["train", "--resume", "--name", "ema", "--epochs", "4", "--quiet"]) == 0  # the EMA resumes too


def test_an_epoch_whose_ema_scores_better_offers_the_ema_weights(monkeypatch):
    torch.manual_seed(0)
    backbone, head = nn.Linear(4, 5), nn.Linear(5, 3)
    full = nn.Sequential(backbone, head)  # the head alone trains on cached features
    features = ImageTensors(torch.randn(12, 5), torch.arange(12) % 3)
    trainer = Trainer(head, torch.optim.SGD(head.parameters(), lr=0.5), nn.CrossEntropyLoss(),
                      train_loader(features, 4, None, 0, seed=1), features, None, None, torch.device("cpu"), 1,
                      log=lambda m: None, full_model=full, ema_decay=0.5)
    scores = iter([{"loss": 1.0, "acc": 0.5}, {"loss": 0.9, "acc": 0.75}])  # live, then EMA
    monkeypatch.setattr(trainer, "validate", lambda images, model=None: next(scores))
    trainer.fit()
    assert trainer.use_ema and trainer.history[-1]["val_acc"] == 0.75 and trainer.history[-1]["ema"] == 1.0
    weights = trainer.epoch_weights()
    assert torch.equal(weights["1.weight"], trainer.ema.module.weight) and not torch.equal(weights["1.weight"],
                                                                                           head.weight)
    assert weights["0.weight"] is full.state_dict(keep_vars=True)["0.weight"]  # the frozen backbone as it is


def test_tta_views_are_the_image_its_mirror_and_two_shifts():
    from imgclf.inference.tta import averaged, shifted, views

    x = np.arange(2 * 1 * 16 * 16, dtype=np.uint8).reshape(2, 1, 16, 16)
    seen = views(x)
    assert len(seen) == 4 and len(views(x, flip=False)) == 3
    assert np.array_equal(seen[1], x[..., ::-1])
    moved = shifted(x, 1, 1)
    assert np.array_equal(moved[:, :, 1:, 1:], x[:, :, :-1, :-1]) and np.array_equal(moved[:, :, 0, 1:],
                                                                                     x[:, :, 0, :-1])
    def proba(v):
        return np.stack([v.reshape(len(v), -1).mean(1), np.zeros(len(v))], 1)
    assert np.allclose(averaged(proba, x), np.mean([proba(v) for v in seen], axis=0))


def test_evaluate_and_predict_with_tta(image_folder, run_cwd, capsys):
    import json

    from imgclf.inference.load import load_predictor
    from imgclf.inference.tta import views

    assert main(["train", str(image_folder), "--epochs", "1", "--name", "t", *TINY_ARGS]) == 0
    capsys.readouterr()
    assert main(["evaluate", "runs/t", str(image_folder), "--tta"]) == 0
    out = capsys.readouterr().out
    assert "test-time augmentation: accuracy" in out and "without (" in out
    assert "accuracy_without" in json.loads((run_cwd / "runs/t/eval/shapes/eval.json").read_text())["tta"]
    clf = load_predictor("runs/t")
    x = np.stack([clf.pixels(p) for p in sorted(image_folder.glob("*/*.png"))[:5]])
    clf.tta = True
    assert np.allclose(clf.scores(x), np.mean([clf.proba(v) for v in views(x)], axis=0), atol=1e-6)
    assert main(["predict", "runs/t", str(image_folder / "bar"), "--tta"]) == 0


class TinyNet(nn.Module):
    """A user's own network, Keras-Sequential style."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(8, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_a_users_own_module_trains_saves_and_loads(image_folder, run_cwd, capsys):
    import imgclf

    clf = imgclf.train(str(image_folder), model=TinyNet(), epochs=2, batch_size=8, quiet=True, workers=0,
                       plots=False, name="own")
    assert "model: custom:TinyNet" in (run_cwd / "runs/own/config.yaml").read_text()
    again = imgclf.load("runs/own", model=TinyNet())
    x = np.stack([again.pixels(p) for p in sorted(image_folder.glob("*/*.png"))[:4]])
    assert np.allclose(again.proba(x), clf.proba(x), atol=1e-6)
    assert main(["predict", "runs/own", str(image_folder / "bar")]) == 2
    assert "trained with your own model (TinyNet); load it from Python with imgclf.load(" in capsys.readouterr().err
    with pytest.raises(imgclf.UserError, match=r"gives \(2, 5\) for a batch of 2 images; it must give one logit per "
                                                r"class, \(2, 3\)"):
        imgclf.train(str(image_folder), model=TinyNet(5), epochs=1, quiet=True, workers=0, plots=False)
    assert not any("TinyNet" in p.name for p in (run_cwd / "runs").iterdir() if p.name != "own")


def test_the_lr_suggestion_is_the_steepest_descent_before_the_minimum():
    from imgclf.training.lr_find import suggest

    lrs = list(np.logspace(-6, 1, 71))
    losses = [2.0 - 1.5 / (1 + np.exp(-(np.log10(lr) + 3) * 3)) + (0.5 * (np.log10(lr) + 0.5) ** 2
                                                                    if lr > 0.3 else 0) for lr in lrs]
    s = suggest(lrs, losses)
    assert 3e-4 < s < 3e-3  # the middle of the fall, at 1e-3
    assert s < lrs[int(np.argmin(losses))]


def test_lr_find_writes_its_curve_and_prints_the_command(image_folder, run_cwd, capsys):
    from PIL import Image

    assert main(["lr-find", str(image_folder), "--steps", "30", "--name", "lf", *TINY_ARGS]) == 0
    out = capsys.readouterr().out
    assert "suggested learning rate:" in out and f"imgclf train {image_folder}" in out and "--steps" not in out
    suggestion = float(out.split("suggested learning rate: ")[1].split()[0])
    assert 1e-7 <= suggestion <= 10
    with Image.open(run_cwd / "runs/lf/lr_find.png") as im:
        assert im.format == "PNG" and im.size[0] > 300
    assert len((run_cwd / "runs/lf/lr_find.csv").read_text().splitlines()) > 5


def test_lr_find_that_diverges_at_once_is_a_clear_error(image_folder, run_cwd, capsys):
    assert main(["lr-find", str(image_folder), "--start-lr", "1e6", "--end-lr", "1e9", "--steps", "20",
                 *TINY_ARGS]) == 2
    assert "the loss diverged within" in capsys.readouterr().err and not (run_cwd / "runs").exists()


def test_strong_augmentation_changes_images_and_keeps_their_size():
    from imgclf.data.transforms import augmentation

    torch.manual_seed(0)
    x = torch.randint(0, 255, (3, 40, 40), dtype=torch.uint8)
    strong = augmentation("strong", 32, 3)
    outs = [strong(x) for _ in range(4)]
    assert all(o.shape == (3, 32, 32) and o.dtype == torch.uint8 for o in outs)
    assert len({o.numpy().tobytes() for o in outs}) == 4


def test_layer_decay_gives_each_block_a_lower_rate_than_the_one_above():
    import timm

    from imgclf.training.transfer import layer_decay_groups

    model = timm.create_model("resnet18", num_classes=3)
    groups = layer_decay_groups(model, 1e-3, 0.05, 0.5)
    rates = sorted({g["lr"] for g in groups}, reverse=True)
    assert rates[0] == pytest.approx(1e-3) and len(rates) > 3
    assert all(b == pytest.approx(a * 0.5) for a, b in zip(rates, rates[1:]))
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    with pytest.raises(Exception, match="layer_decay needs a timm architecture"):
        layer_decay_groups(nn.Linear(2, 2), 1e-3, 0.05, 0.5)


def test_fine_tuning_with_layer_decay(image_folder, run_cwd):
    assert main(["train", str(image_folder), "--model", "efficientnet_lite0", "--pretrained", "--layer-decay", "0.75",
                 "--epochs", "2", "--img-size", "32", "--name", "ld", "--batch-size", "8", "--quiet", "--workers",
                 "0", "--no-plots", "--augment", "strong"]) == 0
    state = torch.load(run_cwd / "runs/ld/last.pt", weights_only=True)
    rates = sorted({g["initial_lr"] if "initial_lr" in g else g["lr"] for g in state["optimizer"]["param_groups"]})
    assert len(rates) > 5  # one rate per block, not one for the head and one for the backbone


# ---- named recipes (--recipe): settings that go together, under the options given ---------------------------------
def test_a_recipe_fills_what_the_command_line_leaves_unsaid(tmp_path):
    parser = build_parser()
    argv = ["train", str(tmp_path), "--recipe", "accurate", "--val-split", "0.2"]
    args = _with_recipe(parser, parser.parse_args(argv), argv)
    assert (args.ema, args.tta, args.val_split) == (True, True, 0.2)  # the option given wins over the recipe's 0
    plain = build_parser().parse_args(["train", str(tmp_path)])
    assert (plain.ema, plain.tta, plain.val_split) == (False, False, 0.1)


class _Kept(Callback):
    def on_train_end(self, trainer) -> None:
        self.use_ema = trainer.use_ema


def test_the_accurate_recipe_trains_on_everything_keeps_the_average_and_evaluates_with_tta(tmp_path):
    data = tmp_path / "data"
    write_class_folders(data / "train", 12, seed=1)
    write_class_folders(data / "test", 5, seed=3)
    kept = _Kept()
    clf = train(str(data), epochs=2, recipe="accurate", project=str(tmp_path / "runs"), name="r",
                callbacks=[kept], **TINY)
    saved = yaml.safe_load((clf.run / "config.yaml").read_text())
    assert (saved["recipe"], saved["ema"], saved["val_split"], saved["tta"]) == ("accurate", True, 0.0, True)
    assert kept.use_ema  # no validation to weigh it on: the average is the result, as Keras' use_ema keeps it
    scores = json.loads((clf.run / "eval.json").read_text())
    assert scores["split"] == "test" and 0 <= scores["tta"]["accuracy_without"] <= 1
    assert "test-time augmentation: accuracy" in (clf.run / "train.log").read_text()


def test_an_unknown_recipe_is_a_one_line_error(image_folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", str(image_folder), "--recipe", "fastest"])
    assert exited.value.code == 2
    assert "invalid choice: 'fastest'" in capsys.readouterr().err
    with pytest.raises(UserError, match="recipe 'fastest' is not one of: accurate"):
        train(str(image_folder), recipe="fastest", project=str(tmp_path / "runs"), **TINY)
