"""Plain PyTorch on the host CPU: the reference a user would otherwise ship.

f32 runs the eager module; int8 uses PyTorch's own quantization (FX graph mode, x86 backend,
post-training static quantization calibrated on the plan's images) on the plan's int8 modules
only. The deployable artifact is TorchScript (``model.pt``).
"""
from __future__ import annotations

import collections
import copy
import os

import numpy as np
import torch
from torch import nn

from . import memory_probe
from .base import Device, DeviceError, DeviceInfo, PrecisionPlan, cpu_name
from .energy import EnergyCounter, host_cpu_counter
from .host import channel_block, pinned_note
from .protocol import LatencyProtocol
from .torchscript import TorchScriptDeployment, under

_INT8_TYPES = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")


def _is_int8(module: nn.Module) -> bool:
    return type(module).__module__.startswith(_INT8_TYPES) and hasattr(module, "weight")


def _is_float_compute(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv2d, nn.Linear)) and not _is_int8(module)


def quantize_fx(model: nn.Module, modules: tuple[str, ...], calibration: np.ndarray, example: torch.Tensor) -> nn.Module:
    """Post-training static int8 of ``modules`` (and everything under them) with PyTorch's FX flow."""
    from torch.ao.quantization import QConfigMapping, get_default_qconfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    qconfig = get_default_qconfig("x86")
    mapping = QConfigMapping()
    for name in modules:
        mapping = mapping.set_module_name(name, qconfig)
    prepared = prepare_fx(copy.deepcopy(model).eval(), mapping, (example,))
    with torch.no_grad():
        for start in range(0, len(calibration), 32):
            prepared(torch.from_numpy(calibration[start : start + 32]))
    return convert_fx(prepared)


class CPUDeployment(TorchScriptDeployment):
    runtime = "torchscript"

    def __init__(self, module: nn.Module, device: "CPUDevice", example: torch.Tensor, plan: PrecisionPlan):
        self.protocol = device.protocol
        self.batch = device.batch
        self._device = device
        self._module = module.eval()
        self._input = torch.randn(device.batch, *example.shape[1:], generator=torch.Generator().manual_seed(0))
        self._write_artifact(self._module, example, "edgetune-cpu-")
        self._modules = dict(self._module.named_modules())
        self.precision_used = self._count(self._modules.values())
        self.inference_precision = plan.float_precision
        self.threads = torch.get_num_threads()
        self.energy_counter = device.energy_counter()

    @staticmethod
    def _count(modules) -> dict[str, int]:
        counts: collections.Counter[str] = collections.Counter()
        for module in modules:
            if _is_int8(module):
                counts["int8"] += 1
            elif _is_float_compute(module):
                counts["f32"] += 1
        return dict(counts)

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
            return torch.cat([self._module(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()

    def runner(self, threads: int | None = None):  # one count: the device's (thread_options)
        module, x = self._module, self._input

        def run_once() -> None:
            with torch.no_grad():
                module(x)

        return run_once

    def _measure_memory(self) -> int | None:
        """Peak resident memory that loading the deployed TorchScript file (``model.pt``, traced from
        the module that is timed) and running 10 inferences of one batch adds to a fresh process with
        torch already loaded and warmed up: :mod:`devices.memory_probe` says exactly what counts."""
        if not memory_probe.supported():
            return None
        return memory_probe.probe(self._path, tuple(self._input.shape), threads=self.threads)

    def precision_of(self, modules: list[str]) -> dict[str, int]:
        return self._count([m for name, m in self._modules.items() if under(name, modules)])


class CPUDevice(Device):
    """``cpu``: PyTorch eager on the host CPU, f32 or int8 (x86 quantized kernels)."""

    def __init__(self, threads: int = 0, protocol: LatencyProtocol = LatencyProtocol(), batch: int = 1):
        self.threads = threads or os.cpu_count() or 1
        self.protocol = protocol
        self.batch = batch

    def info(self) -> DeviceInfo:
        int8 = ["int8"] if "x86" in torch.backends.quantized.supported_engines else []
        return DeviceInfo(
            name="cpu",
            full_name=cpu_name(),
            runtime=f"torch {torch.__version__}",
            threads=self.threads,
            precisions=tuple(["f32"] + int8),
            extra={"engine": "eager", "quantized_engine": "x86" if int8 else "", **pinned_note()},
            channel_granularity={p: channel_block() for p in ["f32"] + int8},  # oneDNN kernels, as OpenVINO's
            measures_memory=memory_probe.supported(),
            measures_energy=self.energy_counter() is not None,
        )

    def energy_counter(self) -> EnergyCounter | None:
        return host_cpu_counter()

    def deploy(self, model, example_input, plan: PrecisionPlan = PrecisionPlan()) -> CPUDeployment:
        self.check_plan(plan)
        torch.set_num_threads(self.threads)
        module = copy.deepcopy(model).eval()
        if plan.int8_modules:
            try:
                module = quantize_fx(module, plan.int8_modules, plan.calibration, example_input)
            except Exception as error:  # FX cannot trace every model
                raise DeviceError(f"PyTorch int8 quantization failed: {type(error).__name__}: {error}") from error
        return CPUDeployment(module, self, example_input, plan)

