"""Transfer learning: feature extraction trains only the head on features computed once; fine-tuning changes only
the unfrozen blocks; frozen batch-norm keeps its statistics."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.models.efficientnet import EfficientNet
from torch import nn

import imgclf
from imgclf.cli.main import main
from imgclf.data.tensors import ImageTensors
from imgclf.models import create_model
from imgclf.training.callbacks import Callback
from imgclf.training.features import FeatureCache
from imgclf.training.transfer import FineTune, backbone_blocks, freeze, param_groups, pre_logits, train_mode

from .conftest import TINY

LITE0 = dict(TINY, model="efficientnet_lite0", img_size=32, pretrained=True)


@pytest.fixture(scope="module")
def lite0_reference() -> dict[str, torch.Tensor]:
    """The pretrained backbone as it comes from the built-in weights (3 classes, 32 px)."""
    return create_model("efficientnet_lite0", 3, 3, 32, pretrained=True).state_dict()


def backbone_keys(state: dict) -> list[str]:
    return [k for k in state if not k.startswith("classifier.")]


def block_of_key(model: nn.Module) -> dict[str, int]:
    """State-dict key -> backbone block index, buffers (batch-norm statistics) with their layer's parameters."""
    ids = {id(p): i for i, block in enumerate(backbone_blocks(model)) for p in block}
    module_block = {name.rsplit(".", 1)[0]: ids[id(p)] for name, p in model.named_parameters() if id(p) in ids}
    return {k: module_block[k.rsplit(".", 1)[0]] for k in model.state_dict() if k.rsplit(".", 1)[0] in module_block}


@pytest.fixture
def backbone_images(monkeypatch) -> list[int]:
    """The number of images of every batch that goes through an EfficientNet backbone."""
    seen: list[int] = []
    real = EfficientNet.forward_features

    def counting(self, x):
        if x.device.type != "meta":  # the memory estimate's pass computes shapes, no pixels
            seen.append(len(x))
        return real(self, x)
    monkeypatch.setattr(EfficientNet, "forward_features", counting)
    return seen


def test_feature_extract_trains_only_the_head_on_features_computed_once(image_folder, run_cwd, lite0_reference,
                                                                        backbone_images, capsys):
    clf = imgclf.train(str(image_folder), epochs=3, name="fe", mode="feature-extract", **LITE0)
    assert clf.config.augment == "none" and clf.config.mode == "feature-extract"
    # each distinct image (the dark squares are all alike) through the backbone once, for the 3 epochs and the
    # final evaluation of the saved model (its validation images' features are cached: only the head runs)
    distinct = len({hashlib.sha256(f.read_bytes()).digest() for f in image_folder.rglob("*.png")})
    assert distinct < 36 and sum(backbone_images) == 2 + distinct  # 2: shape checks of a new model
    images, _ = clf.eval_images(split="val")
    scored = np.load(clf.run / "evaluation.npz")  # the head on cached features: the whole network's numbers
    np.testing.assert_allclose(scored["probs"], clf.predict_proba(images.x).numpy(), atol=1e-5)
    state = clf.model.cpu().state_dict()
    assert all(torch.equal(state[k], lite0_reference[k]) for k in backbone_keys(state))
    assert state["classifier.weight"].abs().sum() > 0  # the new head (zero at the start) learned

    backbone_images.clear()
    imgclf.train(str(image_folder), epochs=3, name="fe-again", mode="feature-extract", **LITE0)
    assert sum(backbone_images) == 2  # every feature came from the disk cache
    assert "0 image(s) through the frozen backbone, 36 found in the cache" in (run_cwd / "runs/fe-again/train.log"
                                                                                ).read_text()


def test_feature_extract_with_augmentation_recomputes_but_keeps_the_backbone(image_folder, run_cwd,
                                                                             lite0_reference, feature_cache_dir):
    clf = imgclf.train(str(image_folder), epochs=1, name="fe-aug", mode="feature-extract", augment="light", **LITE0)
    assert "no feature cache" in (clf.run / "train.log").read_text()
    assert not feature_cache_dir.exists()
    state = clf.model.cpu().state_dict()
    # batch-norm running statistics too: frozen layers stay in inference mode while the head trains
    assert all(torch.equal(state[k], lite0_reference[k]) for k in backbone_keys(state))


class BackboneAfterHeadEpoch(Callback):
    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == 0:
            self.state = {k: v.clone() for k, v in trainer.full_model.state_dict().items()}


def test_fine_tune_trains_the_head_first_then_only_the_unfrozen_blocks(image_folder, run_cwd, lite0_reference):
    spy = BackboneAfterHeadEpoch()
    clf = imgclf.train(str(image_folder), epochs=3, name="ft", mode="fine-tune", unfreeze=2, callbacks=[spy],
                       **LITE0)
    assert all(torch.equal(spy.state[k], lite0_reference[k]) for k in backbone_keys(spy.state))
    last = imgclf.load(clf.run.path, weights="last").model.cpu()  # the best may be the head-only epoch
    blocks = block_of_key(last)
    top = max(blocks.values())
    state = last.state_dict()
    changed = {blocks[k] for k in blocks if not torch.equal(state[k], lite0_reference[k])}
    assert changed == {top - 1, top}  # the top 2 of 8 blocks, nothing below
    log = (clf.run / "train.log").read_text()
    assert "epoch 1: training the new head, backbone frozen" in log
    assert "epoch 2: unfroze the top 2 of 8 backbone blocks" in log


def test_freeze_keeps_frozen_batch_norm_in_inference_mode():
    model = create_model("cnn:8-16-m-32-fc16", 3, 1, 16)
    assert freeze(model, 1) == 1 and len(backbone_blocks(model)) == 4
    trainable = [p.requires_grad for block in backbone_blocks(model) for p in block]
    assert trainable == [False] * (len(trainable) - 2) + [True, True]  # the dense layer's weight and bias
    train_mode(model)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not any(m.training for m in norms) and model.get_classifier().training
    assert freeze(model, "all") == 4
    train_mode(model)
    assert all(m.training for m in norms)
    freeze(model, "all", freeze_bn=True)
    train_mode(model)
    assert not any(m.training for m in norms) and model.features[0].weight.requires_grad


def test_param_groups_give_the_backbone_a_lower_learning_rate():
    model = create_model("cnn:8-m-16-fc16", 3, 1, 16)
    groups = param_groups(model, 1e-2, 0.05, 0.1)
    head = {id(p) for p in model.get_classifier().parameters()}
    for group in groups:
        is_head = all(id(p) in head for p in group["params"])
        assert group["lr"] == pytest.approx(1e-2 if is_head else 1e-3)
        assert group["weight_decay"] == (0.05 if all(p.ndim > 1 for p in group["params"]) else 0.0)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


class _Trainer:
    def __init__(self, model, start_epoch):
        self.full_model, self.start_epoch, self.lines = model, start_epoch, []

    def log(self, line):
        self.lines.append(line)


def test_fine_tune_phase_follows_the_epoch_on_resume():
    model = create_model("cnn:8-16-m-32-fc16", 3, 1, 16)
    FineTune(head_epochs=2, unfreeze=2).on_epoch_begin(_Trainer(model, 0), 0)
    assert not any(p.requires_grad for block in backbone_blocks(model) for p in block)
    resumed = _Trainer(model, 3)
    FineTune(head_epochs=2, unfreeze=2).on_epoch_begin(resumed, 3)
    assert [any(p.requires_grad for p in b) for b in backbone_blocks(model)] == [False, False, True, True]
    assert resumed.lines == ["epoch 4: unfroze the top 2 of 4 backbone blocks, backbone learning rate x0.5"]


def test_feature_cache_computes_each_image_once_and_persists(tmp_path):
    model = create_model("cnn:8-m-16-g", 3, 1, 16).eval()
    x = torch.randint(0, 255, (10, 1, 16, 16), dtype=torch.uint8)
    images = ImageTensors(torch.cat([x, x[:3]]), torch.arange(13) % 3)  # three images twice
    cache = FeatureCache(model, [0.5], [0.25], torch.device("cpu"), tmp_path)
    first = cache(images)
    cache.save()
    assert cache.computed == 10 and cache.reused == 3
    expected = pre_logits(model, (x.float() / 255 - 0.5) / 0.25).detach()
    assert torch.allclose(first.x[:10], expected, atol=1e-6) and torch.equal(first.x[10:], first.x[:3])
    assert torch.equal(first.y, images.y)
    again = FeatureCache(model, [0.5], [0.25], torch.device("cpu"), tmp_path)(images)
    assert torch.equal(again.x, first.x)
    reloaded = FeatureCache(model, [0.5], [0.25], torch.device("cpu"), tmp_path)
    reloaded(images)
    assert reloaded.computed == 0 and reloaded.reused == 13
    other_norm = FeatureCache(model, [0.4], [0.25], torch.device("cpu"), tmp_path)
    assert other_norm.path != cache.path  # a different normalisation is a different backbone input
    with torch.no_grad():
        model.features[0].weight.add_(1)
    assert FeatureCache(model, [0.5], [0.25], torch.device("cpu"), tmp_path).path != cache.path


@pytest.mark.parametrize("args, message", [
    (["--mode", "fine-tune"], "add --pretrained"),
    (["--mode", "feature-extract"], "add --pretrained"),
    (["--mode", "scratch", "--pretrained", "--model", "efficientnet_lite0"], "--mode scratch trains from random"),
    (["--pretrained", "--model", "efficientnet_lite0", "--unfreeze", "top"], "--unfreeze must be a number"),
    (["--pretrained", "--model", "efficientnet_lite0", "--epochs", "2", "--head-epochs", "2"],
     "leaves no epoch"),
])
def test_transfer_options_that_cannot_work_are_one_line_errors(image_folder, run_cwd, capsys, args, message):
    assert main(["train", str(image_folder), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (run_cwd / "runs").exists()


def test_positive_gives_yes_no_answers_scored_against_folders(tmp_path, capsys):
    from PIL import Image
    from skimage import data

    for folder, name, image in (("positive", "coffee.png", data.coffee()), ("negative", "cat.jpg", data.chelsea()),
                                ("negative", "rocket.jpg", data.rocket())):
        (tmp_path / "photos" / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "photos" / folder / name)
    out = tmp_path / "answers.json"
    assert main(["predict", "efficientnet_lite0", str(tmp_path / "photos"), "--positive", "Espresso,cup",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy 1.0000" in printed and "3 image(s) with ground truth" in printed
    answers = {Path(row["path"]).name: row for row in json.loads(out.read_text())}
    assert answers["coffee.png"]["yes"] and answers["coffee.png"]["truth"]
    assert not answers["cat.jpg"]["yes"] and answers["cat.jpg"]["p_positive"] < 0.05

    # cats by ImageNet id, the summed probability of all five cat classes against a threshold
    assert main(["predict", "efficientnet_lite0", str(tmp_path / "photos" / "negative" / "cat.jpg"),
                 "--positive", "281,282,283,284,285", "--threshold", "0.5"]) == 0
    assert " yes " in capsys.readouterr().out
    assert main(["predict", "efficientnet_lite0", str(tmp_path / "photos"), "--positive", "expresso"]) == 2
    assert "did you mean 'espresso'" in capsys.readouterr().err


def test_positive_understands_synonyms_ids_and_not_folders():
    from imgclf.inference.decide import folder_truth, positive_ids

    classes = ["tabby, tabby cat", "hotdog, hot dog, red hot", "espresso"]
    assert positive_ids("Hot Dog", classes) == [1] and positive_ids("2,tabby cat", classes) == [0, 2]
    assert folder_truth("data/hot_dog/1.jpg", ["hotdog, hot dog, red hot"]) is True
    assert folder_truth("data/not_hot_dog/1.jpg", ["hotdog, hot dog, red hot"]) is False
    assert folder_truth("data/yes/1.jpg", ["espresso"]) is True
    assert folder_truth("data/misc/1.jpg", ["espresso"]) is None


def test_a_test_split_is_scored_through_the_head_and_its_features_serve_the_next_run(tmp_path, run_cwd,
                                                                                      backbone_images):
    from .conftest import write_class_folders

    data = tmp_path / "data"
    write_class_folders(data / "train", 8, seed=1)
    write_class_folders(data / "test", 3, seed=2)
    clf = imgclf.train(str(data), epochs=2, name="fe-test", mode="feature-extract", **LITE0)
    report = json.loads((clf.run / "eval.json").read_text())
    images, _ = clf.eval_images(split="test")
    scored = np.load(clf.run / "evaluation.npz")
    assert report["split"] == "test" and len(scored["probs"]) == len(images) == 9
    np.testing.assert_allclose(scored["probs"], clf.predict_proba(images.x).numpy(), atol=1e-5)
    backbone_images.clear()
    imgclf.train(str(data), epochs=2, name="fe-test-again", mode="feature-extract", **LITE0)
    assert sum(backbone_images) == 2  # the test images' features were cached by the first run's evaluation
