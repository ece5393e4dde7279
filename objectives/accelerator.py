"""Where PyTorch trains and evaluates (spec ``[train]``): the device, and autocast on it.

This is the training side only. The model a trial deploys and measures goes to the target device
(``device.name``) from the CPU as before: training on ``cuda:0`` changes how fast a trial's weights
are found, not what is deployed or how it is timed.

- ``device``: ``"auto"`` (the first CUDA GPU when there is one, else the CPU), ``"cpu"``, ``"cuda"``
  (``cuda:0``) or ``"cuda:N"``.
- ``amp``: ``"auto"`` (bf16 autocast on a GPU that has it, else f16 with a gradient scaler; off on the
  CPU), ``"bf16"``, ``"f16"`` or ``"off"``. On the CPU an explicit ``"bf16"`` is allowed (PyTorch's CPU
  autocast; worth it only where the processor has bf16 units) and ``"f16"`` is refused: CPU autocast
  in f16 is slower than f32 and needs a gradient scaler for no gain.

A seed gives the same weights on the same device: on CUDA, cuDNN is held to its deterministic
algorithms and cuBLAS to a fixed workspace (README, "Training on a GPU").
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from .choices import TRAIN_AMP as AMP
from .choices import TRAIN_DEVICES as DEVICES
from .choices import train_device_ok as device_ok

_DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}
# A training set is held on the GPU when it takes at most this share of the memory free there; a larger
# one stays in pinned host memory and each batch is copied over.
GPU_DATA_SHARE = 0.25


class AcceleratorError(ValueError):
    """A training device or autocast choice this host cannot honour (one line, names the spec key)."""


@dataclass(frozen=True)
class Accelerator:
    """A resolved training device and the autocast precision on it (None: f32)."""

    device: torch.device
    amp: str | None = None

    @property
    def name(self) -> str:
        """As trials record it (``train_device``): ``cpu`` or ``cuda:0``."""
        return str(self.device)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """Autocast for a forward pass and its loss (nothing when amp is off)."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.amp])

    @contextlib.contextmanager
    def repeatable(self):
        """Same seed, same GPU, same weights: cuDNN's deterministic algorithms and no autotuning while
        this trains or evaluates. A context, not a global switch: the CUDA target device (devices/cuda.py)
        autotunes the deployed model for speed in the same process."""
        if not self.is_cuda:
            yield
            return
        cudnn = torch.backends.cudnn
        saved = cudnn.benchmark, cudnn.deterministic
        cudnn.benchmark, cudnn.deterministic = False, True
        try:
            yield
        finally:
            cudnn.benchmark, cudnn.deterministic = saved

    def scaler(self) -> "torch.amp.GradScaler | None":
        """f16 gradients need loss scaling to not underflow; bf16 has f32's range and needs none."""
        return torch.amp.GradScaler(self.device.type) if self.amp == "f16" else None

    def place(self, tensor: torch.Tensor) -> torch.Tensor:
        """A data tensor where batches are drawn from: on the GPU when it fits there (see GPU_DATA_SHARE),
        else in pinned host memory (copied over batch by batch); unchanged on the CPU."""
        if not self.is_cuda or tensor.device == self.device:
            return tensor
        free, _ = torch.cuda.mem_get_info(self.device)
        if tensor.numel() * tensor.element_size() <= GPU_DATA_SHARE * free:
            return tensor.to(self.device)
        return tensor.pin_memory()

    def batch(self, tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``tensor[index]`` on the training device, wherever ``tensor`` is held."""
        if tensor.device == self.device:
            return tensor[index.to(self.device)]
        # gathered into pinned memory (torch's caching host allocator: reused, safe while a copy is in
        # flight), so the copy is asynchronous; a plain tensor[index] of a pinned tensor is pageable
        index = index.to(tensor.device)
        staged = torch.empty((len(index), *tensor.shape[1:]), dtype=tensor.dtype, pin_memory=True)
        return torch.index_select(tensor, 0, index, out=staged).to(self.device, non_blocking=True)


CPU = Accelerator(torch.device("cpu"))


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve(device: str = "auto", amp: str = "auto", gpus: int | None = None) -> Accelerator:
    """The accelerator ``[train]`` asks for on this host; :class:`AcceleratorError` (one line) when the
    host has no such device or the device cannot autocast as asked. ``gpus``: CUDA GPUs (default: this host's)."""
    gpus = gpu_count() if gpus is None else gpus
    if not device_ok(device):
        raise AcceleratorError(f"spec key 'train.device': must be one of: {', '.join(DEVICES)}, got {device!r}")
    if amp not in AMP:
        raise AcceleratorError(f"spec key 'train.amp': must be one of: {', '.join(AMP)}, got {amp!r}")
    if device == "auto":
        device = "cuda:0" if gpus else "cpu"
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if index >= gpus:
            have = f"its GPUs are cuda:0..cuda:{gpus - 1}" if gpus else "it has no CUDA GPU"
            raise AcceleratorError(f"spec key 'train.device': {device!r} is not available on this host ({have}); "
                                   'use "auto" or "cpu"')
        # cuBLAS reads its workspace setting when it starts: a fixed one makes its sums repeatable
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        return Accelerator(torch.device("cuda", index), _gpu_amp(amp, index))
    if amp == "f16":
        raise AcceleratorError('spec key \'train.amp\': "f16" trains on a GPU only (the CPU has no gain from it); '
                               'use "off" or "bf16" on the CPU')
    return Accelerator(torch.device("cpu"), "bf16" if amp == "bf16" else None)


def _gpu_amp(amp: str, index: int) -> str | None:
    if amp == "off":
        return None
    if amp == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "f16"
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise AcceleratorError(f"spec key 'train.amp': cuda:{index} has no bf16 ({torch.cuda.get_device_name(index)}); "
                               'use "f16", "auto" or "off"')
    return amp


def worker_devices(device: str, workers: int, gpus: int) -> list[str | None]:
    """The training device of each of ``workers`` local workers on a host with ``gpus`` CUDA GPUs: with
    ``"auto"`` or ``"cuda"`` and several GPUs, round robin (worker i on ``cuda:i % gpus``; several workers
    may share one); otherwise None (each worker keeps the study's ``train.device``)."""
    if device not in ("auto", "cuda") or gpus < 2:
        return [None] * workers
    return [f"cuda:{i % gpus}" for i in range(workers)]
