"""Prediction's forward passes fit the memory: measured on the first passes, bounded like training's batch."""
import numpy as np
import pytest
import torch

from imgclf.config import TrainConfig
from imgclf.inference import batching
from imgclf.inference.classifier import Classifier
from imgclf.models import create_model
from imgclf.resources import PeakMemory, inference_batch

MB = 1 << 20


def _fake_pass(sizes: list[int], per_image: int):
    """A pass whose memory grows by ``per_image`` bytes an image (pages touched, as activations are)."""
    def run(start: int, stop: int) -> list[int]:
        sizes.append(stop - start)
        held = np.ones((stop - start) * per_image, np.uint8)
        return list(range(start, stop)) if held[-1] == 1 else []
    return run


@pytest.mark.skipif(not PeakMemory.available("cpu"), reason="the CPU's peak memory is read from Linux' /proc")
def test_passes_are_measured_and_sized_to_the_budget(monkeypatch):
    shape = (3, 128, 128)
    monkeypatch.setattr(batching, "device_memory", lambda device: 600 * MB)  # a budget of 300 MB
    sizes: list[int] = []
    fitted: dict = {}
    done = batching.in_passes(_fake_pass(sizes, 10 * MB), 60, shape, "cpu", fitted)
    assert [i for part in done for i in part] == list(range(60))  # every image once, in order
    assert sizes[:2] == [1, 8]  # the measuring passes predict images too: nothing is computed twice
    assert 25 <= fitted[shape] <= 31 and max(sizes[2:]) <= fitted[shape]  # about 300 MB / 10 MB an image

    tight: dict = {}
    sizes.clear()
    monkeypatch.setattr(batching, "device_memory", lambda device: 120 * MB)  # 60 MB: not even the pass of 8
    batching.in_passes(_fake_pass(sizes, 10 * MB), 30, shape, "cpu", tight)
    assert sizes[0] == 1 and 8 not in sizes and 3 <= tight[shape] <= 6 and max(sizes[1:]) <= tight[shape]

    roomy: dict = {}
    monkeypatch.setattr(batching, "device_memory", lambda device: 1 << 40)
    batching.in_passes(_fake_pass([], 1 * MB), 60, shape, "cpu", roomy)
    assert roomy[shape] == inference_batch(shape)  # the input-size ceiling where memory is plenty

    sizes.clear()
    batching.in_passes(_fake_pass(sizes, 10 * MB), 20, shape, "cpu", tight)
    assert max(sizes) <= tight[shape] and len(sizes) == -(-20 // tight[shape])  # measured once per shape


def test_small_images_and_few_images_are_not_measured(monkeypatch):
    monkeypatch.setattr(batching, "PeakMemory", None)  # any measurement would fail
    fitted: dict = {}
    sizes: list[int] = []
    batching.in_passes(_fake_pass(sizes, 10), 600, (1, 28, 28), "cpu", fitted)
    assert sizes == [200, 200, 200] and fitted == {(1, 28, 28): 256}  # 600 in equal passes of at most 256
    sizes.clear()
    batching.in_passes(_fake_pass(sizes, 10), 9, (3, 224, 224), "cpu", fitted)  # a few photos: answered at once
    assert sizes == [9] and (3, 224, 224) not in fitted


@pytest.mark.skipif(not PeakMemory.available("cpu"), reason="the CPU's peak memory is read from Linux' /proc")
def test_a_classifier_predicts_the_same_in_passes_that_fit(monkeypatch):
    torch.manual_seed(0)
    cfg = TrainConfig(model="cnn:16-m-32-m-fc16", channels=3, img_size=128, channels_last=False,
                      mean=[0.5] * 3, std=[0.25] * 3)
    clf = Classifier(create_model(cfg.model, 3, 3, 128), ["a", "b", "c"], cfg, device="cpu")
    x = torch.randint(0, 256, (40, 3, 128, 128), dtype=torch.uint8)
    whole = clf.predict_proba(x, batch_size=40)
    seen: list[int] = []
    clf.model.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    monkeypatch.setattr(batching, "device_memory", lambda device: 1 << 40)
    assert torch.allclose(clf.predict_proba(x), whole, atol=1e-5)
    assert clf.fitted_passes[(3, 128, 128)] == inference_batch((3, 128, 128)) and seen[:2] == [1, 8]

    tight = Classifier(clf.model, clf.classes, cfg, device="cpu")
    per_image = sum(4 * 128 * 128 * c for c in (16, 16, 8)) / MB  # the widest layer's input and output, in MB
    monkeypatch.setattr(batching, "device_memory", lambda device: int(8 * per_image * MB))  # a few images' worth
    seen.clear()
    assert torch.allclose(tight.predict_proba(x), whole, atol=1e-5)
    fitted = tight.fitted_passes[(3, 128, 128)]
    assert 1 <= fitted < 10 and max(seen[2:]) <= fitted  # far fewer than the 40 asked
