"""CUDA adapter: a model as people ship it from PyTorch on an NVIDIA GPU.

The module is traced on a static input of the study's batch shape, frozen (TorchScript: the
parameters become constants, batch norms fold), in channels-last layout, with cuDNN's autotuner
on; warmed up on a side stream (the autotuner and TorchScript's profiling runs happen there) and
captured as a CUDA graph, which each inference replays: one launch instead of one per kernel. At
batch 1 a small CNN is bound by kernel launches, so timing the eager module would time the Python
launcher (ResNet-56 on an H200: 3.30 ms eager, 0.69 ms replayed). Where tracing or capture fails
(an op a graph cannot hold), the deployment runs the frozen module or the eager one instead and
says why (``runtime``, ``runtime_fallback``).

Latency is end-to-end for one batch (each run synchronises the GPU, so the host clock sees the
whole inference); ``device_time_ms`` times the same runs with CUDA events. f32 (IEEE, not TF32),
f16 and bf16 (where the GPU has it). No int8 here: PyTorch has no real int8 convolution path on
CUDA (TensorRT would be one), so the device does not claim it. Energy per inference comes from the
GPU's NVML energy counter (devices.energy).
"""
from __future__ import annotations

import collections
import copy
from typing import Callable

import numpy as np
import torch
from torch import nn

from .base import Device, DeviceInfo, DeviceUnavailable, PrecisionPlan
from .energy import NvmlCounter
from .protocol import LatencyProtocol
from .torchscript import TorchScriptDeployment, under

_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
_EVENT_RUNS = 50
_MEMORY_RUNS = 10
_WARM_UP_RUNS = 5  # TorchScript's profiling executor settles after two; cuDNN's autotuner runs on the first


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()


def freeze(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``module`` traced on ``example`` and frozen: the TorchScript program a PyTorch user ships.
    Without check_trace (a second trace on the same input): Top-1 is measured on this program."""
    with torch.no_grad():
        return torch.jit.freeze(torch.jit.trace(module, example, check_trace=False).eval())


class GraphReplay:
    """``program`` captured as a CUDA graph on ``static_input``: calling it replays the graph, which
    reads the input from that tensor and writes the output to ``output``, both at fixed addresses."""

    def __init__(self, program: Callable[[torch.Tensor], torch.Tensor], static_input: torch.Tensor):
        self.input = static_input
        side = torch.cuda.Stream(static_input.device)
        side.wait_stream(torch.cuda.current_stream(static_input.device))
        # warm-up off the default stream, as capture needs: the autotuner's trials and the profiling
        # executor's first runs must not be what is captured
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(_WARM_UP_RUNS):
                program(static_input)
        torch.cuda.current_stream(static_input.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.output = program(static_input)

    def __call__(self, x: torch.Tensor | None = None) -> torch.Tensor:
        if x is not None:
            self.input.copy_(x)
        self.graph.replay()
        return self.output


def build_runtime(module: nn.Module, static_input: torch.Tensor) -> tuple[Callable, nn.Module | torch.jit.ScriptModule, str, str | None]:
    """The fastest of: the frozen program replayed as a CUDA graph, the frozen program, the eager
    module; returns (run, program, runtime, why it fell back). ``run(x)`` takes a batch of the static
    shape (the graph) or any batch (the others)."""
    try:
        program = freeze(module, static_input)
    except Exception as error:  # a model tracing cannot follow (data-dependent control flow, ...)
        return module, module, "eager", f"tracing failed: {_first_line(error)}"
    if static_input.device.type != "cuda":
        return program, program, "torchscript", f"no CUDA graph on {static_input.device.type}"
    try:
        replay = GraphReplay(program, static_input)
    except Exception as error:  # an op that synchronises with the host or allocates outside the graph's pool
        torch.cuda.synchronize(static_input.device)
        return program, program, "torchscript", f"CUDA graph capture failed: {_first_line(error)}"
    return replay, program, "cuda-graph", None


class CUDADeployment(TorchScriptDeployment):
    def __init__(self, module: nn.Module, device: "CUDADevice", example: torch.Tensor, plan: PrecisionPlan):
        self.protocol = device.protocol
        self.batch = device.batch
        self._device = device
        self._dtype = _DTYPES[plan.float_precision]
        self._weights = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
        self.precision_used = dict(collections.Counter(
            plan.float_precision for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))))
        self._layer_names = [name for name, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        shape = (device.batch, *example.shape[1:])
        self._input = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(
            device.torch_device, self._dtype).contiguous(memory_format=torch.channels_last)
        index = device.torch_device
        torch.cuda.synchronize(index)
        torch.cuda.reset_peak_memory_stats(index)
        before = torch.cuda.memory_allocated(index)
        self._run, program, self.runtime, self.runtime_fallback = build_runtime(module, self._input)
        torch.cuda.synchronize(index)
        self._captured_bytes = torch.cuda.max_memory_allocated(index) - before  # warm-up and the graph's pool
        self._write_artifact(program, self._input, "edgetune-cuda-")  # the frozen program, or eager's trace
        self.inference_precision = plan.float_precision
        self.threads = 0
        self.energy_counter = device.energy_counter()

    def _batches(self, images: np.ndarray, size: int):
        for start in range(0, len(images), size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + size], dtype=np.float32))
            yield x.to(self._device.torch_device, self._dtype).contiguous(memory_format=torch.channels_last)

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits from what is timed: a graph replays at its own batch size (the last batch padded)."""
        outputs = []
        with torch.no_grad():
            if isinstance(self._run, GraphReplay):
                for x in self._batches(images, self.batch):
                    padded = torch.zeros_like(self._input)
                    padded[: len(x)] = x
                    outputs.append(self._run(padded)[: len(x)].float().cpu())
            else:
                for x in self._batches(images, batch_size):
                    outputs.append(self._run(x).float().cpu())
        return torch.cat(outputs).numpy()

    def runner(self, threads: int | None = None):  # one count: the device's (thread_options)
        run, x, sync, index = self._run, self._input, torch.cuda.synchronize, self._device.torch_device

        def run_once() -> None:
            with torch.no_grad():
                run(x)
            sync(index)

        return run_once

    def device_time_ms(self) -> float | None:
        times = []
        with torch.no_grad():
            for _ in range(_EVENT_RUNS):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                self._run(self._input)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
        return float(np.median(times))

    def measure_throughput(self, seconds: float = 2.0, requests: int = 0) -> float | None:
        """Images per second with batches launched back to back (one synchronisation at the end): what a
        server feeding this GPU batches of ``device.batch`` gets."""
        import time

        run, x, index = self._run, self._input, self._device.torch_device
        runs, start = 0, time.perf_counter()
        with torch.no_grad():
            while time.perf_counter() - start < seconds:
                for _ in range(10):
                    run(x)
                runs += 10
                torch.cuda.synchronize(index)
        return runs * self.batch / (time.perf_counter() - start)

    def _measure_memory(self) -> int | None:
        """Bytes PyTorch's CUDA allocator holds for this model at its peak: its weights and buffers, the
        input batch, and the most that inferences allocate above them (activations, cuDNN workspace;
        for a graph, its private pool, sized at capture). Not the CUDA context or cuDNN's own handles,
        nor blocks the caching allocator keeps free: the model's need, not what ``nvidia-smi`` shows."""
        index = self._device.torch_device
        run = self.runner()
        run()
        torch.cuda.reset_peak_memory_stats(index)
        before = torch.cuda.memory_allocated(index)
        for _ in range(_MEMORY_RUNS):
            run()
        activations = max(torch.cuda.max_memory_allocated(index) - before, self._captured_bytes)
        return self._weights + self._input.numel() * self._input.element_size() + activations

    def precision_of(self, modules: list[str]) -> dict[str, int]:
        chosen = [name for name in self._layer_names if under(name, modules)]
        return {self.inference_precision: len(chosen)} if chosen else {}

    def close(self) -> None:
        self._run = None
        super().close()
        torch.cuda.empty_cache()


class CUDADevice(Device):
    """``cuda`` or ``cuda:N``: an NVIDIA GPU through PyTorch (a frozen program replayed as a CUDA graph)."""

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
        self._energy = NvmlCounter.for_cuda_device(index)

    def energy_counter(self) -> NvmlCounter | None:
        return self._energy

    def info(self) -> DeviceInfo:
        props = torch.cuda.get_device_properties(self.index)
        floats = ("f32", "f16", "bf16") if torch.cuda.is_bf16_supported(including_emulation=False) else ("f32", "f16")
        return DeviceInfo(
            name=f"cuda:{self.index}",
            full_name=props.name,
            runtime=f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}",
            threads=self.threads,
            precisions=floats,
            extra={"capability": f"{props.major}.{props.minor}", "memory_gib": f"{props.total_memory / 2**30:.1f}",
                   "cudnn_benchmark": "true", "memory_format": "channels_last", "runtime": "cuda-graph",
                   "energy_counter": self._energy.name if self._energy else ""},
            # Tensor cores take f16/bf16 (and TF32) channels in multiples of 8 (NVIDIA's performance guide)
            channel_granularity={p: 8 for p in floats},
            measures_memory=True,
            measures_energy=self._energy is not None,
        )

    def deploy(self, model, example_input, plan: PrecisionPlan = PrecisionPlan()) -> CUDADeployment:
        self.check_plan(plan)
        # streams, events and graph captures are made on the current device: make it this one (cuda:N)
        torch.cuda.set_device(self.torch_device)
        module = copy.deepcopy(model).eval().to(self.torch_device, _DTYPES[plan.float_precision])
        module = module.to(memory_format=torch.channels_last)
        return CUDADeployment(module, self, example_input, plan)
