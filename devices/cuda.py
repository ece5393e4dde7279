"""CUDA adapter: PyTorch on an NVIDIA GPU, f32 or f16, channels-last, cuDNN benchmark mode.

Latency is end-to-end for one batch (the run synchronises the GPU, so the host clock sees the
whole inference); ``device_time_ms`` times the same runs with CUDA events. No int8 here: PyTorch
has no real int8 convolution path on CUDA (TensorRT would be one), so the device does not claim it.
"""
from __future__ import annotations

import collections
import copy

import numpy as np
import torch
from torch import nn

from .base import Device, DeviceInfo, DeviceUnavailable, PrecisionPlan
from .protocol import LatencyProtocol
from .torchscript import TorchScriptDeployment, under

_DTYPES = {"f32": torch.float32, "f16": torch.float16}
_EVENT_RUNS = 50
_MEMORY_RUNS = 10


class CUDADeployment(TorchScriptDeployment):
    def __init__(self, module: nn.Module, device: "CUDADevice", example: torch.Tensor, plan: PrecisionPlan):
        self.protocol = device.protocol
        self.batch = device.batch
        self._device = device
        self._dtype = _DTYPES[plan.float_precision]
        self._module = module
        shape = (device.batch, *example.shape[1:])
        self._input = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(
            device.torch_device, self._dtype).contiguous(memory_format=torch.channels_last)
        self._write_artifact(module, self._input, "edgetune-cuda-")
        precision = plan.float_precision
        self.precision_used = dict(collections.Counter(
            precision for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))))
        self.inference_precision = precision
        self.threads = 0

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        outputs = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32))
                x = x.to(self._device.torch_device, self._dtype).contiguous(memory_format=torch.channels_last)
                outputs.append(self._module(x).float().cpu())
        return torch.cat(outputs).numpy()

    def runner(self, threads: int | None = None):  # one count: the device's (thread_options)
        module, x, sync = self._module, self._input, torch.cuda.synchronize

        def run_once() -> None:
            with torch.no_grad():
                module(x)
            sync()

        return run_once

    def device_time_ms(self) -> float | None:
        times = []
        with torch.no_grad():
            for _ in range(_EVENT_RUNS):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                self._module(self._input)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
        return float(np.median(times))

    def _measure_memory(self) -> int | None:
        """Bytes PyTorch's CUDA allocator holds for this model at its peak: its weights and buffers,
        the input batch, and the most that 10 inferences allocate above them (activations, cuDNN
        workspace). Not the CUDA context or cuDNN's own handles, nor blocks the caching allocator keeps
        free: the model's need, not what ``nvidia-smi`` shows. Measured in this process, which is
        honest here (unlike host RSS): the allocator counts tensors, and the peak is reset first."""
        index = self._device.torch_device
        run = self.runner()
        run()  # cuDNN's benchmark mode tries algorithms (and their workspaces) on the first run only
        torch.cuda.reset_peak_memory_stats(index)
        before = torch.cuda.memory_allocated(index)
        for _ in range(_MEMORY_RUNS):
            run()
        held = sum(t.numel() * t.element_size() for t in [*self._module.parameters(), *self._module.buffers()])
        return held + self._input.numel() * self._input.element_size() + torch.cuda.max_memory_allocated(index) - before

    def precision_of(self, modules: list[str]) -> dict[str, int]:
        chosen = [m for name, m in self._module.named_modules()
                  if isinstance(m, (nn.Conv2d, nn.Linear)) and under(name, modules)]
        return {self.inference_precision: len(chosen)} if chosen else {}

    def close(self) -> None:
        self._module = None
        super().close()
        torch.cuda.empty_cache()


class CUDADevice(Device):
    """``cuda`` or ``cuda:N``: PyTorch eager on an NVIDIA GPU."""

    def __init__(self, index: int = 0, threads: int = 0, protocol: LatencyProtocol = LatencyProtocol(), batch: int = 1):
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise DeviceUnavailable(f"cuda:{index}", reason=" (no such CUDA GPU)")
        self.index = index
        self.torch_device = torch.device("cuda", index)
        self.threads = threads
        self.protocol = protocol
        self.batch = batch
        torch.backends.cudnn.benchmark = True  # picks the fastest kernels for the fixed input shape
        # f32 means IEEE f32: PyTorch lets cuDNN round convolutions to TF32 on Ampere and later, which
        # moved ResNet-20's logits by 1e-3 on an H100 (an eleventh precision nobody asked for)
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"

    def info(self) -> DeviceInfo:
        props = torch.cuda.get_device_properties(self.index)
        return DeviceInfo(
            name=f"cuda:{self.index}",
            full_name=props.name,
            runtime=f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}",
            threads=self.threads,
            precisions=("f32", "f16"),
            extra={"capability": f"{props.major}.{props.minor}", "memory_gib": f"{props.total_memory / 2**30:.1f}",
                   "cudnn_benchmark": "true", "memory_format": "channels_last"},
            # Tensor cores take f16 (and TF32) channels in multiples of 8 (NVIDIA's performance guide)
            channel_granularity={"f32": 8, "f16": 8},
            measures_memory=True,
        )

    def deploy(self, model, example_input, plan: PrecisionPlan = PrecisionPlan()) -> CUDADeployment:
        self.check_plan(plan)
        module = copy.deepcopy(model).eval().to(self.torch_device, _DTYPES[plan.float_precision])
        module = module.to(memory_format=torch.channels_last)
        return CUDADeployment(module, self, example_input, plan)
