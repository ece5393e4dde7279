"""The small interface every device adapter implements."""
from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch


class DeviceError(RuntimeError):
    """A device cannot be used as asked (unavailable, unsupported precision, ...)."""


@dataclass(frozen=True)
class DeviceInfo:
    """The facts that change a timing; recorded with every measurement."""

    name: str  # the device string, e.g. "openvino:CPU"
    full_name: str  # e.g. "Intel(R) Xeon(R) Platinum 8481C"
    runtime: str  # e.g. "openvino 2026.4.1"
    threads: int
    precisions: tuple[str, ...]  # what this device can execute
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["precisions"] = list(self.precisions)
        data["extra"] = dict(self.extra)
        return data


@dataclass(frozen=True)
class LatencyStats:
    """One latency measurement by the protocol in :mod:`devices.protocol` (milliseconds)."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    ci95_low_ms: float
    ci95_high_ms: float
    runs: int
    seconds: float  # wall time spent timing, warm-up excluded
    converged: bool  # the interval reached the target before the time limit
    batch: int = 1
    device_median_ms: float | None = None  # device time from the runtime's counters, if any

    @property
    def ci95_rel(self) -> float:
        """Half-width of the 95% interval of the median, relative to the median."""
        return (self.ci95_high_ms - self.ci95_low_ms) / 2.0 / self.median_ms

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ci95_rel"] = self.ci95_rel
        return data


class Deployment(abc.ABC):
    """A model as it runs on a device: the artifact a user would ship."""

    #: precision actually used by each kind of layer, read back from the runtime
    precision_used: Mapping[str, int]
    #: effective inference precision of the float parts (e.g. "f32")
    inference_precision: str

    @abc.abstractmethod
    def predict(self, images: np.ndarray) -> np.ndarray:
        """Logits for a batch of images (N, C, H, W) in float32."""

    @abc.abstractmethod
    def measure_latency(self) -> LatencyStats:
        """Time inference of one batch by the latency protocol."""

    @abc.abstractmethod
    def save(self, directory: Path) -> list[Path]:
        """Write the deployable files into ``directory`` and return their paths."""

    @property
    @abc.abstractmethod
    def size_bytes(self) -> int:
        """Size of the deployed artifact on disk."""

    def close(self) -> None:
        """Release the runtime's resources and temporary files."""


class Device(abc.ABC):
    """A target that runs models. Subclasses register themselves in :mod:`devices.registry`.

    Example::

        device = create_device("openvino:CPU", threads=2)
        deployment = device.deploy(model, example_input, {"stage1": "f32"})
        top1 = (deployment.predict(x).argmax(1) == y).mean()
        print(deployment.measure_latency().median_ms)
    """

    @abc.abstractmethod
    def info(self) -> DeviceInfo:
        """Describe the device (name, runtime, threads, precisions)."""

    @abc.abstractmethod
    def deploy(
        self,
        model: torch.nn.Module,
        example_input: torch.Tensor,
        precision_plan: Mapping[str, str] | None = None,
    ) -> Deployment:
        """Compile ``model`` for this device at ``precision_plan`` (layer group -> precision)."""

    def precisions(self) -> tuple[str, ...]:
        return self.info().precisions
