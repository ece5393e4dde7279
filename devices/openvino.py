"""OpenVINO adapter: export to ONNX, read into OpenVINO, compile for a device, time it there.

Why ONNX and not ``ov.convert_model(torch_module)``: the TorchScript ONNX exporter keeps the
module paths in node names (``/layer2/layer2.0/conv1/Conv``), which the precision plan relies
on to find a layer group after BatchNorm folding (see DESIGN.md).

On CPUs with AMX/AVX512-BF16, OpenVINO runs bf16 by default, so ``INFERENCE_PRECISION_HINT`` is
always pinned and the precision actually used is read back from the compiled model.
"""
from __future__ import annotations

import collections
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from .base import Deployment, Device, DeviceError, DeviceInfo, LatencyStats
from .protocol import LatencyProtocol, measure

_OV_PRECISION = {"f32": "f32", "bf16": "bf16", "f16": "f16"}
#: Layer types counted when reading back what really runs.
_COMPUTE_LAYERS = {"Convolution", "GroupConvolution", "FullyConnected", "MatMul"}
_PERF_COUNT_RUNS = 50


def _core():
    import openvino as ov

    return ov.Core()


def export_onnx(model: torch.nn.Module, example_input: torch.Tensor, path: Path) -> Path:
    """TorchScript-based ONNX export with a dynamic batch axis, module paths kept in names."""
    model = model.eval()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example_input,),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )
    return path


def _rt_str(info, key: str) -> str:
    return info[key].astype(str) if key in info else ""


def precision_name(ov_type) -> str:
    """OpenVINO element type -> short name ("f32", "bf16", ...)."""
    return ov_type.get_type_name() if hasattr(ov_type, "get_type_name") else str(ov_type)


def runtime_precisions(compiled) -> dict[str, int]:
    """Count compute layers of a compiled model by the precision they really run in."""
    counts: collections.Counter[str] = collections.Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer_type = _rt_str(info, "layerType")
        if layer_type in _COMPUTE_LAYERS:
            counts[_rt_str(info, "runtimePrecision").lower() or "?"] += 1
    return dict(counts)


class OpenVINODeployment(Deployment):
    def __init__(self, ov_model, device: "OpenVINODevice", input_shape: tuple[int, ...], workdir: Path):
        self._device = device
        self._workdir = workdir
        self._input_shape = input_shape  # (C, H, W)
        self._ov_model = ov_model
        self._xml = workdir / "model.xml"
        import openvino as ov

        # f32 weights on disk: save_model would otherwise compress them to f16.
        ov.save_model(ov_model, str(self._xml), compress_to_fp16=False)
        core = device.core
        static = core.read_model(str(self._xml))
        static.reshape([device.batch, *input_shape])
        self._latency_model = core.compile_model(static, device.target, device.compile_config())
        self._eval_model = core.compile_model(core.read_model(str(self._xml)), device.target, device.compile_config())
        self.precision_used = runtime_precisions(self._latency_model)
        self.inference_precision = precision_name(self._latency_model.get_property("INFERENCE_PRECISION_HINT")) if device.target == "CPU" else device.precision_hint
        self.threads = int(self._latency_model.get_property("INFERENCE_NUM_THREADS")) if device.target == "CPU" else 0

    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        request = self._eval_model.create_infer_request()
        outputs = []
        for start in range(0, len(images), batch_size):
            chunk = np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
            outputs.append(np.array(request.infer({0: chunk})[0]))
        return np.concatenate(outputs)

    def measure_latency(self) -> LatencyStats:
        request = self._latency_model.create_infer_request()
        x = np.random.default_rng(0).standard_normal((self._device.batch, *self._input_shape)).astype(np.float32)
        request.set_input_tensor(_tensor(x))
        stats = measure(request.infer, self._device.protocol, batch=self._device.batch)
        device_ms = self._device_time_ms(x)
        return LatencyStats(**{**stats.__dict__, "device_median_ms": device_ms})

    def _device_time_ms(self, x: np.ndarray) -> float | None:
        """Median time the runtime spent in the graph itself (performance counters)."""
        core = self._device.core
        model = core.read_model(str(self._xml))
        model.reshape([self._device.batch, *self._input_shape])
        compiled = core.compile_model(model, self._device.target, {**self._device.compile_config(), "PERF_COUNT": True})
        request = compiled.create_infer_request()
        request.set_input_tensor(_tensor(x))
        totals = []
        for _ in range(_PERF_COUNT_RUNS):
            request.infer()
            totals.append(sum(p.real_time.total_seconds() for p in request.profiling_info) * 1000.0)
        return float(np.median(totals)) if totals else None

    def save(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for suffix in (".xml", ".bin"):
            target = directory / f"model{suffix}"
            shutil.copyfile(self._xml.with_suffix(suffix), target)
            paths.append(target)
        return paths

    @property
    def size_bytes(self) -> int:
        return sum(self._xml.with_suffix(s).stat().st_size for s in (".xml", ".bin"))

    def close(self) -> None:
        self._latency_model = self._eval_model = None
        shutil.rmtree(self._workdir, ignore_errors=True)


def _tensor(x: np.ndarray):
    import openvino as ov

    return ov.Tensor(x)


class OpenVINODevice(Device):
    """``openvino:CPU``, ``openvino:GPU``, ``openvino:NPU``: synchronous latency-mode inference."""

    def __init__(
        self,
        target: str = "CPU",
        threads: int = 0,
        protocol: LatencyProtocol = LatencyProtocol(),
        batch: int = 1,
        precision_hint: str = "f32",
    ):
        self.core = _core()
        available = list(self.core.available_devices)
        if target not in available:
            choices = ", ".join(f"openvino:{d}" for d in available)
            raise DeviceError(f"device 'openvino:{target}' is not available on this host; available: {choices}")
        self.target = target
        self.threads = threads
        self.protocol = protocol
        self.batch = batch
        if precision_hint not in _OV_PRECISION:
            raise DeviceError(f"precision '{precision_hint}' is not supported by openvino:{target}; supported: {', '.join(self.info().precisions)}")
        self.precision_hint = precision_hint
        self._workdir = Path(tempfile.mkdtemp(prefix="edgetune-ov-"))

    def compile_config(self) -> dict:
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": _OV_PRECISION[self.precision_hint]}
        if self.target == "CPU" and self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config

    def info(self) -> DeviceInfo:
        import openvino as ov

        full_name = str(self.core.get_property(self.target, "FULL_DEVICE_NAME"))
        capabilities = [str(c) for c in self.core.get_property(self.target, "OPTIMIZATION_CAPABILITIES")]
        return DeviceInfo(
            name=f"openvino:{self.target}",
            full_name=full_name,
            runtime=f"openvino {ov.get_version()}",
            threads=self.threads,
            precisions=("f32",),
            extra={"capabilities": ",".join(capabilities), "performance_hint": "LATENCY", "inference_precision": self.precision_hint},
        )

    def deploy(self, model, example_input, precision_plan: Mapping[str, str] | None = None) -> OpenVINODeployment:
        plan = dict(precision_plan or {})
        unsupported = sorted({p for p in plan.values() if p not in self.precisions()})
        if unsupported:
            raise DeviceError(f"precision {unsupported[0]!r} is not supported by openvino:{self.target}; supported: {', '.join(self.precisions())}")
        workdir = Path(tempfile.mkdtemp(prefix="deploy-", dir=self._workdir))
        onnx_path = export_onnx(model, example_input, workdir / "model.onnx")
        ov_model = self.core.read_model(str(onnx_path))
        return OpenVINODeployment(ov_model, self, tuple(example_input.shape[1:]), workdir)
