import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgclf.data import builtin
from imgclf.data.builtin import load_builtin
from imgclf.data.sources import load_source, sort_classes
from imgclf.data.split import split_indices, with_validation
from imgclf.errors import UserError

from .conftest import write_class_folders


def test_class_folders_ignore_hidden_and_non_image_files(image_folder):
    (image_folder / "bar" / ".DS_Store").write_bytes(b"\0\0")
    (image_folder / "bar" / "notes.txt").write_text("not an image")
    (image_folder / ".hidden").mkdir()
    Image.new("RGB", (4, 4)).save(image_folder / ".hidden" / "x.png")
    Image.new("RGB", (4, 4)).save(image_folder / "bar" / "UPPER.PNG")
    source = load_source(str(image_folder))
    assert source.classes == ["bar", "bright", "dark"]
    train = source.splits["train"]
    assert len(train) == 37 and list(source.splits) == ["train"]
    assert np.bincount(train.labels).tolist() == [13, 12, 12]
    assert all(p.suffix.lower() == ".png" and not p.name.startswith(".") for p in train.paths)


def test_split_folders_and_unicode_class_names(tmp_path):
    root = tmp_path / "food"
    names = ("김치 찌개", "불고기", "비빔밥")
    for split, n in (("train", 4), ("valid", 2), ("test", 2)):
        write_class_folders(root / split, n, classes=names)
    source = load_source(str(root))
    assert source.classes == sorted(names)
    assert {k: len(v) for k, v in source.splits.items()} == {"test": 6, "train": 12, "val": 6}


def test_class_only_in_test_is_an_error(split_folder):
    write_class_folders(split_folder / "test", 2, classes=("ghost",))
    with pytest.raises(UserError, match="ghost"):
        load_source(str(split_folder))


def test_numeric_class_names_sort_as_numbers():
    assert sort_classes({"10", "2", "1"}) == ["1", "2", "10"]
    assert sort_classes({"b", "a", "10"}) == ["10", "a", "b"]


def test_path_csv_with_split_column(image_folder, tmp_path):
    rows = [{"path": str(p.relative_to(image_folder)), "label": p.parent.name,
             "split": "test" if i % 4 == 0 else "train"}
            for i, p in enumerate(sorted(image_folder.rglob("*.png")))]
    csv = image_folder / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    source = load_source(str(csv))
    assert source.classes == ["bar", "bright", "dark"]
    assert len(source.splits["train"]) == 27 and len(source.splits["test"]) == 9
    assert all(p.is_file() for p in source.splits["train"].paths)


def test_path_csv_missing_column_names_the_fix(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("file_name_x,label\na.png,cat\n")
    with pytest.raises(UserError, match="missing a path column"):
        load_source(str(csv))


def test_pixel_csv_kaggle_layout(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 784))
    frame = pd.DataFrame(pixels, columns=[f"pixel{i + 1}" for i in range(784)])
    frame.insert(0, "label", np.arange(20) % 3)
    frame.to_csv(tmp_path / "train.csv", index=False)
    source = load_source(str(tmp_path / "train.csv"))
    train = source.splits["train"]
    assert source.classes == ["0", "1", "2"] and train.pixels.shape == (20, 28, 28)
    assert np.array_equal(train.pixels[3].ravel(), pixels[3]) and train.labels[4] == 1


def test_pixel_csv_not_square_is_an_error(tmp_path):
    frame = pd.DataFrame(np.zeros((2, 20), dtype=int), columns=[f"pixel{i}" for i in range(20)])
    frame.insert(0, "label", [0, 1])
    frame.to_csv(tmp_path / "odd.csv", index=False)
    with pytest.raises(UserError, match="square"):
        load_source(str(tmp_path / "odd.csv"))


@pytest.mark.parametrize("make,match", [
    (lambda p: p / "nope", "no such file or folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no images found"),
    (lambda p: (p / "x.txt").touch() or p / "x.txt", "not a folder or a .csv"),
])
def test_bad_data_paths(tmp_path, make, match):
    with pytest.raises(UserError, match=match):
        load_source(str(make(tmp_path)))


@pytest.mark.parametrize("name,cls,where", [
    ("fashion-mnist", "FashionMNIST", "FashionMNIST/raw"),
    ("mnist", "MNIST", "MNIST/raw"),
    ("cifar10", "CIFAR10", "cifar-10-batches-py"),
    ("food101", "Food101", "food-101"),
])
def test_builtin_offline_says_where_to_put_the_files(tmp_path, monkeypatch, name, cls, where):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network unreachable")
    monkeypatch.setattr(getattr(torchvision.datasets, cls), "__init__", offline)
    monkeypatch.setattr(builtin, "host_unreachable", lambda url, timeout=3.0: None)  # the host answers, then fails
    with pytest.raises(UserError, match=where) as error:
        load_source(name, str(tmp_path))
    assert "--data-root" in str(error.value) and "network unreachable" in str(error.value)


def test_builtin_reads_idx_files_gzipped_or_not(tmp_path):
    import gzip

    sample = load_builtin("fashion-mnist-sample", None)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, split in (("train", "train"), ("t10k", "test")):
        x, y = sample.splits[split].pixels[:50], sample.splits[split].labels[:50].astype(np.uint8)
        img_header = bytes([0, 0, 8, 3]) + b"".join(int(n).to_bytes(4, "big") for n in x.shape)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(img_header + x.tobytes())
        with gzip.open(raw / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + len(y).to_bytes(4, "big") + y.tobytes())
    source = load_source("fashion-mnist", str(tmp_path))
    assert source.classes[0] == "T-shirt/top" and source.flip_ok
    assert np.array_equal(source.splits["train"].pixels, sample.splits["train"].pixels[:50])
    assert np.array_equal(source.splits["test"].labels, sample.splits["test"].labels[:50])
    # Files on disk are read without torchvision, 3 s of import before a cnn's first step (it only downloads).
    check = ("import sys; from imgclf.data.sources import load_source; "
             f"load_source('fashion-mnist', {str(tmp_path)!r}); print('torchvision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr


def test_stratified_split_is_reproducible_and_disjoint():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    train, val = split_indices(labels, 0.2, seed=7)
    assert set(train).isdisjoint(val) and len(train) + len(val) == 100
    assert np.bincount(labels[val]).tolist() == [8, 6, 4, 2]
    again, _ = split_indices(labels, 0.2, seed=7)
    other, _ = split_indices(labels, 0.2, seed=8)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_with_validation_keeps_an_existing_val_split(split_folder):
    source = load_source(str(split_folder))
    assert with_validation(source, 0.5, 0) is source
    made = with_validation(load_source(str(split_folder / "train")), 0.25, 0)
    assert len(made.splits["val"]) == 9 and len(made.splits["train"]) == 27


def test_too_few_images_to_split():
    with pytest.raises(UserError, match="too few"):
        split_indices(np.array([0, 1, 2]), 0.1, 0)


def test_an_offline_built_in_dataset_fails_in_seconds_naming_where_its_files_go(tmp_path, monkeypatch):
    """No download is tried when its host does not answer: torchvision's own retries take over half a minute."""
    import torchvision

    tried = []
    monkeypatch.setattr(builtin, "host_unreachable", lambda url, timeout=3.0: tried.append(url) or "no network")
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", lambda self: pytest.fail("download tried"))
    with pytest.raises(UserError, match=r"fashion-mnist is not under .* cannot be downloaded here \(no network\); "
                                        r"put its files in .*FashionMNIST/raw \(train-images-idx3-ubyte.gz"):
        builtin.load_builtin("fashion-mnist", str(tmp_path))
    assert tried == torchvision.datasets.FashionMNIST.mirrors
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", lambda self: pytest.fail("download tried"))
    with pytest.raises(UserError, match="cifar10 is not under .*cannot be downloaded here"):
        builtin.load_builtin("cifar10", str(tmp_path))
