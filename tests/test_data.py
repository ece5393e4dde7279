import pickle

import numpy as np
import pytest
import torch

from edgetune.objectives.data import DataError, load_data


def test_digits_is_a_fixed_stratified_32px_split(digits):
    assert digits.num_classes == 10
    assert digits.image_shape == (3, 32, 32)
    assert len(digits.x_train) + len(digits.x_val) == 1797
    assert abs(len(digits.x_val) / 1797 - 0.2) < 0.01
    counts = torch.bincount(digits.y_val, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified
    again = load_data("digits")
    assert torch.equal(again.y_val, digits.y_val) and torch.equal(again.x_val, digits.x_val)
    assert abs(float(digits.x_train.mean())) < 1e-3  # normalised on the training split


def _write_cifar_batches(folder, n=20):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ["data_batch_1", "data_batch_2", "test_batch"]:
        batch = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)


def test_cifar10_reads_the_python_batches(tmp_path):
    _write_cifar_batches(tmp_path / "cifar-10-batches-py")
    data = load_data("cifar10", str(tmp_path))
    assert data.x_train.shape == (40, 3, 32, 32) and data.x_val.shape == (20, 3, 32, 32)
    assert data.classes[0] == "airplane" and data.num_classes == 10


def test_cifar10_missing_is_a_clear_error_and_never_downloads(tmp_path):
    with pytest.raises(DataError, match=r"no CIFAR-10 python batches in .*empty \(expected data_batch_1..5 and test_batch\)"):
        load_data("cifar10", str(tmp_path / "empty"))
    with pytest.raises(DataError, match="needs data.dir"):
        load_data("cifar10")


def test_imagefolder(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for label in ("cat", "dog"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((40, 40, 3), 60 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    data = load_data("imagefolder", str(tmp_path), image_size=24)
    assert data.classes == ["cat", "dog"] and data.x_train.shape == (6, 3, 24, 24) and len(data.y_val) == 6


def test_imagefolder_without_val_is_clear(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="has no val/ folder"):
        load_data("imagefolder", str(tmp_path))
