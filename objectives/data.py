"""Data sets: ``digits`` (built in), ``cifar10`` (python-pickle batches), ``imagefolder``.

A small set is held in memory as normalised float tensors (N, 3, H, W): a trial then spends its
time on the model, not on decoding images (and on a GPU the tensors live there). An image folder
whose decoded tensors would pass :data:`IN_MEMORY_BYTES` (``data.in_memory = "auto"``) is streamed
instead: torchvision's ``ImageFolder`` read by a ``DataLoader`` with worker processes, the same
resize and normalisation, pinned memory when training on CUDA. Every loop draws from a split through
one interface, :class:`Samples`, so it does not care which one it has.
Nothing is ever downloaded unless the spec asks for it (``data.download = true``).
"""
from __future__ import annotations

import os
import pickle
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.nn import functional as F

from .accelerator import CPU, Accelerator
from .cache import cache_dir
from .choices import DATASETS
from .errors import first_line

#: ``data.in_memory = "auto"``: an image folder is held in memory when its decoded f32 tensors (train and
#: val) take at most this; a larger one is streamed. Several workers on one host each hold their copy.
IN_MEMORY_BYTES = 2 << 30


class DataError(ValueError):
    """A data set that cannot be loaded as asked (missing directory, bad layout, ...)."""


class Samples:
    """One split as the training and evaluation loops see it: its labels (always in memory) and batches
    of (images, labels, index) on a device, in a given order; ``index`` says which samples a batch holds
    (a distilled fine-tune looks the teacher's logits up by it)."""

    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def placed(self, on: Accelerator) -> "Samples":
        """The same split, ready to feed ``on``'s device (done once per process, not per trial)."""
        return self

    def batches(self, order: torch.Tensor | None, batch_size: int, on: Accelerator = CPU
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Batches on ``on``'s device in ``order`` (a permutation of the indices; None: as stored)."""
        raise NotImplementedError

    def take(self, index) -> torch.Tensor:
        """The images at ``index`` (a tensor or a sequence of ints), on the CPU (calibration subsets,
        example inputs, thumbnails)."""
        raise NotImplementedError


class TensorSamples(Samples):
    """A split held as tensors (on the CPU, on the GPU or pinned: see :meth:`Accelerator.place`)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        self.images = images
        self.labels = labels if labels is not None else torch.zeros(len(images), dtype=torch.int64)

    def placed(self, on: Accelerator) -> "TensorSamples":
        return TensorSamples(on.place(self.images), on.place(self.labels))

    def batches(self, order, batch_size, on=CPU):
        if order is None:
            for start in range(0, len(self), batch_size):
                stop = start + batch_size
                yield (self.images[start:stop].to(on.device), self.labels[start:stop].to(on.device),
                       torch.arange(start, min(stop, len(self)), device=on.device))
            return
        order = order.to(on.device)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield on.batch(self.images, index), on.batch(self.labels, index), index

    def take(self, index):
        return self.images[torch.as_tensor(index, dtype=torch.int64, device=self.images.device)].cpu()


def as_samples(images: "torch.Tensor | Samples", labels: torch.Tensor | None = None) -> Samples:
    """``images`` as :class:`Samples`: a tensor (with its labels) becomes :class:`TensorSamples`."""
    return images if isinstance(images, Samples) else TensorSamples(images, labels)


class _Order(torch.utils.data.Sampler):
    """The sample order of the next pass, set before each: a loader's persistent workers serve every pass."""

    def __init__(self, count: int):
        self.order = list(range(count))

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class FolderSamples(Samples):
    """A split of an image folder decoded batch by batch by a ``DataLoader``'s worker processes; pinned
    host memory when it feeds a CUDA device. Loaders are kept per batch size (their workers persist
    across epochs and trials); the order is the caller's (a seeded permutation), so a seed gives the
    same batches as it does in memory."""

    KEPT_LOADERS = 2  # batch sizes whose workers stay alive (training and evaluation)

    def __init__(self, folder, workers: int, pin: bool = False):
        self.folder, self.workers, self.pin = folder, workers, pin
        self.labels = torch.tensor(folder.targets, dtype=torch.int64)
        self._loaders: OrderedDict[int, tuple] = OrderedDict()

    def placed(self, on):
        return self if self.pin == on.is_cuda else FolderSamples(self.folder, self.workers, on.is_cuda)

    def _loader(self, batch_size: int):
        if batch_size in self._loaders:
            self._loaders.move_to_end(batch_size)
            return self._loaders[batch_size]
        order = _Order(len(self))
        loader = torch.utils.data.DataLoader(self.folder, batch_size=batch_size, sampler=order, num_workers=self.workers,
                                             pin_memory=self.pin, persistent_workers=self.workers > 0)
        self._loaders[batch_size] = order, loader
        while len(self._loaders) > self.KEPT_LOADERS:
            self._loaders.popitem(last=False)  # its workers end with it
        return order, loader

    def batches(self, order, batch_size, on=CPU):
        sampler, loader = self._loader(batch_size)
        sampler.order = list(range(len(self))) if order is None else order.tolist()
        index = torch.tensor(sampler.order, dtype=torch.int64)
        try:
            for k, (images, labels) in enumerate(loader):
                yield (images.to(on.device, non_blocking=True), labels.to(on.device, non_blocking=True),
                       index[k * batch_size : (k + 1) * batch_size].to(on.device))
        except DataError as error:  # raised in a worker: the loader wraps it in the worker's traceback
            # End the failed pass's workers now: its iterator is kept by the loader (persistent) and by the
            # frames of the error's traceback (a cycle); ended at some later garbage collection, in whatever
            # process had been forked since, it closed descriptors that were by then another's.
            self._loaders.pop(batch_size, None)
            traceback.clear_frames(error.__traceback__)
            raise DataError(_worker_message(error)) from None

    def take(self, index):
        return torch.stack([self.folder[i][0] for i in torch.as_tensor(index, dtype=torch.int64).tolist()])


def _worker_message(error: Exception) -> str:
    """The original one-line message of an error a DataLoader worker raised (its last traceback line)."""
    last = str(error).strip().splitlines()[-1]
    return last.partition(": ")[2] if last.split(":")[0].endswith("DataError") else last


class Splits:
    """A data set's training and validation splits (:class:`Samples`), its classes and normalisation."""

    name: str
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    streamed = False
    train: Samples
    val: Samples

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def example_input(self, batch: int = 2) -> torch.Tensor:
        return self.val.take(torch.arange(min(batch, len(self.val))))

    def calibration_subset(self, size: int, seed: int = 0) -> torch.Tensor:
        """A fixed random subset of the training images (for int8 calibration)."""
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self.train), generator=generator)[:size]
        return self.train.take(index)

    def val_arrays(self, batch_size: int = 256) -> Iterator[np.ndarray]:
        """The validation images as numpy arrays, in order (a deployed model's evaluation)."""
        for images, _, _ in self.val.batches(None, batch_size):
            yield images.numpy()


@dataclass
class DataSplits(Splits):
    """A data set held in memory."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @cached_property
    def train(self) -> TensorSamples:
        return TensorSamples(self.x_train, self.y_train)

    @cached_property
    def val(self) -> TensorSamples:
        return TensorSamples(self.x_val, self.y_val)

    def example_input(self, batch: int = 2) -> torch.Tensor:
        return self.x_val[:batch].clone()

    def val_arrays(self, batch_size: int = 256) -> Iterator[np.ndarray]:
        yield self.x_val.numpy()  # one array: a deployment batches it as it runs best


@dataclass
class StreamedSplits(Splits):
    """An image folder read from disk batch by batch (see :class:`FolderSamples`)."""

    name: str
    train: FolderSamples
    val: FolderSamples
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    streamed = True

    @property
    def y_val(self) -> torch.Tensor:
        return self.val.labels

    def calibration_subset(self, size: int, seed: int = 0) -> torch.Tensor:
        """As in memory, decoded once per process: every trial that quantizes asks for the same images."""
        key = (size, seed)
        if key not in self._calibration:
            self._calibration[key] = super().calibration_subset(size, seed)
        return self._calibration[key].clone()

    @cached_property
    def _calibration(self) -> dict:
        return {}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)


def default_workers() -> int:
    """Loader processes when ``data.workers = "auto"``: the cores this process may use, less one for
    the training loop itself, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))


def load_data(name: str, data_dir: str | None = None, image_size: int | None = None, download: bool = False,
              val_fraction: float = 0.2, seed: int = 0, in_memory: bool | str = "auto",
              workers: int | str = "auto") -> Splits:
    """The data set's splits. ``in_memory`` (image folders only; the others always are): True, False or
    "auto" (in memory up to :data:`IN_MEMORY_BYTES`); ``workers``: loader processes of a streamed folder."""
    if name == "imagefolder":
        train_folder, val_folder = _image_folders(data_dir, image_size or 32)
        if not _fits_in_memory(len(train_folder) + len(val_folder), image_size or 32, in_memory):
            return _streamed(train_folder, val_folder, image_size or 32,
                             default_workers() if workers == "auto" else int(workers))
    if name == "digits":
        x, y, classes = _digits()
        x_train, y_train, x_val, y_val = _stratified_split(x, y, val_fraction, seed)
    elif name == "cifar10":
        x_train, y_train, x_val, y_val, classes = _cifar10(data_dir, download)
    elif name == "imagefolder":
        x_train, y_train, x_val, y_val, classes = _read_folders(train_folder, val_folder)
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


def _image_folders(data_dir: str | None, size: int):
    """The train/ and val/ ImageFolders, resized to ``size`` and not yet normalised (nothing decoded yet)."""
    if not data_dir:
        raise DataError("data set 'imagefolder' needs data.dir (a folder with train/ and val/ inside)")
    root = Path(data_dir)
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise DataError(f"data directory {root} has no {' or '.join(m + '/' for m in missing)} folder (imagefolder needs train/ and val/)")
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])

    def folder(split: str):
        try:
            return datasets.ImageFolder(str(root / split), transform=transform, loader=_rgb_loader)
        except (FileNotFoundError, RuntimeError) as error:
            raise DataError(f"{root / split}: {error}") from None

    train, val = folder("train"), folder("val")
    if val.classes != train.classes:
        raise DataError(f"{root}: train/ and val/ have different class folders")
    return train, val


def _fits_in_memory(count: int, size: int, in_memory: bool | str) -> bool:
    if in_memory not in (True, False, "auto"):
        raise DataError(f'data.in_memory must be true, false or "auto", got {in_memory!r}')
    return in_memory is True or (in_memory == "auto" and count * 3 * size * size * 4 <= IN_MEMORY_BYTES)


def _read_folders(train, val):
    def read(folder):
        images = torch.stack([folder[i][0] for i in range(len(folder))])
        return images, torch.tensor(folder.targets, dtype=torch.int64)

    return *read(train), *read(val), train.classes


def _streamed(train, val, size: int, workers: int) -> StreamedSplits:
    """Both folders streamed, normalised by the training images' per-channel mean and standard deviation
    (one pass over them, as the in-memory path computes them over its tensors)."""
    from torchvision import transforms

    mean, std = _folder_statistics(train, size, workers)
    normalise = transforms.Normalize(mean.tolist(), std.tolist())
    for folder in (train, val):
        folder.transform = transforms.Compose([folder.transform, normalise])
    return StreamedSplits("imagefolder", FolderSamples(train, workers), FolderSamples(val, workers), train.classes,
                          tuple(mean.tolist()), tuple(std.tolist()), size)


def _folder_statistics(train, size: int, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of the training images at ``size``; kept in the cache
    folder under the folder's listing (paths, sizes, modification times), so that every worker of a
    study and every later run on unchanged files skips the decoding pass."""
    import hashlib
    import json

    listing = hashlib.sha256(json.dumps([size] + [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns)
                                                  for p, _ in train.samples]).encode()).hexdigest()[:16]
    path = cache_dir() / "data-statistics" / f"{listing}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        return torch.tensor(saved["mean"]), torch.tensor(saved["std"])
    total, squares, pixels = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
    for images, _, _ in FolderSamples(train, workers).batches(None, 256):
        images = images.double()
        total += images.sum(dim=(0, 2, 3))
        squares += images.square().sum(dim=(0, 2, 3))
        pixels += images.numel() // 3
    mean = total / pixels
    std = ((squares - pixels * mean.square()) / max(1, pixels - 1)).clamp_min(0).sqrt().float().clamp_min(1e-6)
    mean = mean.float()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps({"folder": str(Path(train.root).resolve()), "size": size,
                                   "mean": mean.tolist(), "std": std.tolist()}))
    partial.replace(path)  # atomic: workers computing it at once write the same numbers
    return mean, std


def _rgb_loader(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:  # corrupt, truncated or unreadable
        reason = ("not an image file Pillow can read" if isinstance(error, UnidentifiedImageError)
                  else first_line(error))
        raise DataError(f"image {path} cannot be read: {reason}") from None
