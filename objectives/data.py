"""Data sets: ``digits`` (built in), ``cifar10`` (python-pickle batches), ``imagefolder``.

Everything is held in memory as normalised float tensors (N, 3, H, W): the data sets this tool
tunes on are small, and a trial then spends its time on the model, not on decoding images.
Nothing is ever downloaded unless the spec asks for it (``data.download = true``).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .choices import DATASETS
from .errors import first_line


class DataError(ValueError):
    """A data set that cannot be loaded as asked (missing directory, bad layout, ...)."""


@dataclass
class DataSplits:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def example_input(self, batch: int = 2) -> torch.Tensor:
        return self.x_val[:batch].clone()

    def calibration_subset(self, size: int, seed: int = 0) -> torch.Tensor:
        """A fixed random subset of the training images (for int8 calibration)."""
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self.x_train), generator=generator)[:size]
        return self.x_train[index]


def load_data(name: str, data_dir: str | None = None, image_size: int | None = None, download: bool = False,
              val_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    if name == "digits":
        x, y, classes = _digits()
        x_train, y_train, x_val, y_val = _stratified_split(x, y, val_fraction, seed)
    elif name == "cifar10":
        x_train, y_train, x_val, y_val, classes = _cifar10(data_dir, download)
    elif name == "imagefolder":
        x_train, y_train, x_val, y_val, classes = _imagefolder(data_dir, image_size or 32)
    else:
        raise DataError(f"unknown data set {name!r}; allowed: {', '.join(DATASETS)}")
    size = image_size or x_train.shape[-1]
    x_train, x_val = _resize(x_train, size), _resize(x_val, size)
    mean = x_train.mean(dim=(0, 2, 3))
    std = x_train.std(dim=(0, 2, 3)).clamp_min(1e-6)
    norm = lambda t: ((t - mean[:, None, None]) / std[:, None, None]).contiguous()  # noqa: E731
    return DataSplits(name, norm(x_train), y_train, norm(x_val), y_val, classes,
                      tuple(mean.tolist()), tuple(std.tolist()))


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _digits():
    """scikit-learn's 1,797 handwritten digits (8x8, 0..16), upscaled to 32x32 RGB."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return x, torch.from_numpy(digits.target.astype(np.int64)), [str(c) for c in digits.target_names]


def _stratified_split(x, y, val_fraction, seed):
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    train, val = train_test_split(index, test_size=val_fraction, stratify=y.numpy(), random_state=seed)
    return x[train], y[train], x[val], y[val]


def _cifar10(data_dir: str | None, download: bool):
    if data_dir is None and not download:
        raise DataError("data set 'cifar10' needs data.dir (a folder with the python batches, "
                        "data_batch_1..5 and test_batch), or data.download = true")
    root = Path(data_dir or ".edgetune-cache/cifar10")
    folder = next((p for p in (root, root / "cifar-10-batches-py") if (p / "test_batch").is_file()), None)
    if folder is None and download:
        import torchvision

        try:
            torchvision.datasets.CIFAR10(str(root), download=True)
        except Exception as error:  # no network: say so in one line
            raise DataError(f"cannot download CIFAR-10 into {root}: {error}") from None
        folder = root / "cifar-10-batches-py"
    if folder is None:
        raise DataError(f"no CIFAR-10 python batches in {root} (expected data_batch_1..5 and test_batch)")

    def read(path: Path):
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")  # the format of the official archive
        images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return torch.from_numpy(images.astype(np.float32) / 255.0), torch.tensor(batch["labels"], dtype=torch.int64)

    train = [read(p) for p in sorted(folder.glob("data_batch_*"))]
    if not train:
        raise DataError(f"no CIFAR-10 training batches (data_batch_*) in {folder}")
    x_val, y_val = read(folder / "test_batch")
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return torch.cat([t[0] for t in train]), torch.cat([t[1] for t in train]), x_val, y_val, classes


def _imagefolder(data_dir: str | None, size: int):
    if not data_dir:
        raise DataError("data set 'imagefolder' needs data.dir (a folder with train/ and val/ inside)")
    root = Path(data_dir)
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise DataError(f"data directory {root} has no {' or '.join(m + '/' for m in missing)} folder (imagefolder needs train/ and val/)")
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])

    def read(split: str):
        try:
            folder = datasets.ImageFolder(str(root / split), transform=transform, loader=_rgb_loader)
        except (FileNotFoundError, RuntimeError) as error:
            raise DataError(f"{root / split}: {error}") from None
        images = torch.stack([folder[i][0] for i in range(len(folder))])
        return images, torch.tensor(folder.targets, dtype=torch.int64), folder.classes

    x_train, y_train, classes = read("train")
    x_val, y_val, val_classes = read("val")
    if val_classes != classes:
        raise DataError(f"{root}: train/ and val/ have different class folders")
    return x_train, y_train, x_val, y_val, classes


def _rgb_loader(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:  # corrupt, truncated or unreadable
        reason = ("not an image file Pillow can read" if isinstance(error, UnidentifiedImageError)
                  else first_line(error))
        raise DataError(f"image {path} cannot be read: {reason}") from None
