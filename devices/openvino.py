"""OpenVINO adapter: export to ONNX, quantize with NNCF, compile for a device, time it there.

Why ONNX and not ``ov.convert_model(torch_module)``: the TorchScript ONNX exporter keeps the
module paths in node names (``/layer2/layer2.0/conv1/Conv``), so an NNCF ignored scope can keep
exactly the float layer groups float after BatchNorm folding (docs/ARCHITECTURE.md).

On CPUs with AMX/AVX512-BF16, OpenVINO runs bf16 by default, so ``INFERENCE_PRECISION_HINT`` is
always pinned, and the precision each layer really runs in is read back from the compiled model.
"""
from __future__ import annotations

import atexit
import collections
import contextlib
import io
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from . import memory_probe
from .base import Deployment, DeviceInfo, DeviceUnavailable, OnnxDevice, PrecisionPlan, ReadBackLayers
from .energy import EnergyCounter, host_cpu_counter
from .host import channel_block, pinned_note, runs_bf16
from .openvino_core import openvino_core
from .protocol import LatencyProtocol

#: Layer types counted when reading back what really runs.
_COMPUTE_LAYERS = {"Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution"}
_INT8 = {"i8", "u8"}
_PERF_COUNT_RUNS = 50
#: Float precisions by OpenVINO device; int8 comes from NNCF where the device lists INT8.
_FLOAT_PRECISIONS = {"CPU": ("f32", "bf16"), "GPU": ("f16", "f32"), "NPU": ("f16",)}


def _rt_str(info, key: str) -> str:
    return info[key].astype(str) if key in info else ""


def precision_name(ov_type) -> str:
    """OpenVINO element type -> short name ("f32", "bf16", ...)."""
    return ov_type.get_type_name() if hasattr(ov_type, "get_type_name") else str(ov_type)


def _short(precision: str) -> str:
    precision = precision.lower()
    return "int8" if precision in _INT8 else precision


def layer_precisions(compiled) -> list[tuple[str, str]]:
    """(original node names, runtime precision) of each compute layer of a compiled model."""
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if _rt_str(info, "layerType") in _COMPUTE_LAYERS:
            layers.append((_rt_str(info, "originalLayersNames"), _short(_rt_str(info, "runtimePrecision")) or "?"))
    return layers


class OpenVINODeployment(ReadBackLayers, Deployment):
    runtime = "openvino"

    def __init__(self, xml: Path, device: "OpenVINODevice", input_shape: tuple[int, ...], float_precision: str,
                 scopes: dict[str, str]):
        self._device = device
        self.protocol = device.protocol
        self.batch = device.batch
        self._xml = xml
        self._workdir = xml.parent
        self._input_shape = input_shape  # (C, H, W)
        self._float_precision = float_precision
        self.scopes = scopes  # module path -> ONNX node-name prefix, for precision_of
        default = self._compile()
        self._eval_model = self._compile(static=False)
        self.layers = layer_precisions(default)
        self.precision_used = dict(collections.Counter(p for _, p in self.layers))
        if device.target == "CPU":
            self.inference_precision = precision_name(default.get_property("INFERENCE_PRECISION_HINT"))
            self.threads = int(default.get_property("INFERENCE_NUM_THREADS"))
        else:
            self.inference_precision, self.threads = float_precision, 0
        self._latency_models = {self.threads: default}  # by thread count, compiled when first timed
        self.energy_counter = device.energy_counter()

    @property
    def _config(self) -> dict:
        config = self._device.compile_config(self._float_precision)
        if self._device.target == "CPU" and self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config

    def thread_options(self) -> tuple[int, ...]:
        """With the thread count left to the runtime on the CPU: its choice for the latency hint (every
        core), then 1, 2, 4, ... below it. Below a millisecond one thread can beat two (protocol.py)."""
        if self._device.target != "CPU" or self._device.threads:
            return (self.threads,)
        return (self.threads, *(1 << i for i in range(self.threads.bit_length()) if 1 << i < self.threads))

    def _compile(self, static: bool = True, **config):
        """Compile the IR with the deployment's config (at its thread count, once chosen) updated by
        ``config``; ``static``: at the timed batch size. Read afresh each time, since ``reshape``
        changes the model in place."""
        return self._device.core.compile_model(self._read(static), self._device.target, {**self._config, **config})

    def _read(self, static: bool = True):
        model = self._device.core.read_model(str(self._xml))
        if static:
            model.reshape([self.batch, *self._input_shape])
        return model

    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        request = self._eval_model.create_infer_request()
        outputs = []
        for start in range(0, len(images), batch_size):
            chunk = np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
            outputs.append(np.array(request.infer({0: chunk})[0]))
        return np.concatenate(outputs)

    def _input(self) -> np.ndarray:
        return np.random.default_rng(0).standard_normal((self.batch, *self._input_shape)).astype(np.float32)

    def runner(self, threads: int | None = None):
        threads = threads or self.threads
        if threads not in self._latency_models:
            self._latency_models[threads] = self._compile(INFERENCE_NUM_THREADS=threads)
        request = self._latency_models[threads].create_infer_request()
        request.set_input_tensor(_tensor(self._input()))
        return request.infer

    def measure_throughput(self, seconds: float = 2.0, requests: int = 0) -> float:
        """Images per second with several asynchronous requests (THROUGHPUT hint), its own figure."""
        import openvino as ov

        # the runtime's threads for its own hint, unless the spec pinned them: not the latency's choice
        compiled = self._device.core.compile_model(
            self._read(), self._device.target,
            {**self._device.compile_config(self._float_precision), "PERFORMANCE_HINT": "THROUGHPUT"})
        jobs = requests or int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        queue = ov.AsyncInferQueue(compiled, jobs)
        x = _tensor(self._input())
        for _ in range(jobs):  # warm-up
            queue.start_async({0: x})
        queue.wait_all()
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            queue.start_async({0: x})
            done += 1
        queue.wait_all()
        return done * self.batch / (time.perf_counter() - start)

    def device_time_ms(self) -> float | None:
        """Median time the runtime spent in the graph itself (performance counters)."""
        request = self._compile(PERF_COUNT=True).create_infer_request()
        request.set_input_tensor(_tensor(self._input()))
        totals = []
        for _ in range(_PERF_COUNT_RUNS):
            request.infer()
            totals.append(sum(p.real_time.total_seconds() for p in request.profiling_info) * 1000.0)
        return float(np.median(totals)) if totals else None

    def _measure_memory(self) -> int | None:
        """Peak resident memory that reading, compiling (this deployment's config, at the timed batch)
        and running 10 inferences of this IR adds to a fresh process with OpenVINO and its CPU plugin
        already loaded: :mod:`devices.memory_probe` says exactly what counts. CPU only: on a GPU or
        NPU the model's memory is the device's, which a host process's RSS does not show."""
        if not self._device.measures_memory:
            return None
        return memory_probe.probe(self._xml, (self.batch, *self._input_shape), self._config)

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

    @property
    def weights_bytes(self) -> int:
        return self._xml.with_suffix(".bin").stat().st_size

    def close(self) -> None:
        self._latency_models, self._eval_model = {}, None
        shutil.rmtree(self._workdir, ignore_errors=True)


def _tensor(x: np.ndarray):
    import openvino as ov

    return ov.Tensor(x)


CALIBRATION_BATCH = 32


@contextlib.contextmanager
def _logger_level(name: str, level: int):
    """The logger at ``level`` for the block only: a library call leaves the process's logging as it was."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def quantize_int8(ov_model, int8_prefixes: list[str], calibration: np.ndarray):
    """NNCF post-training int8 of the nodes under ``int8_prefixes``; everything else stays float."""
    import nncf

    keep_float = "(?!" + "|".join(re.escape(p) for p in int8_prefixes) + ").*"
    # Statistics on batches of 32, not single images: 0.75x the time at the same Top-1
    # (bench/int8_calibration.py), where the model's batch axis is dynamic (ours always is).
    calibration = calibration.astype(np.float32)
    step = CALIBRATION_BATCH if ov_model.input(0).get_partial_shape()[0].is_dynamic else 1
    batches = [calibration[i:i + step] for i in range(0, len(calibration), step)]
    # NNCF draws its own progress bars, and its import sets its logger to INFO: both quiet for this call only
    with contextlib.redirect_stdout(io.StringIO()), _logger_level("nncf", logging.ERROR):
        return nncf.quantize(ov_model, nncf.Dataset(batches), subset_size=len(batches),
                             preset=nncf.QuantizationPreset.PERFORMANCE,
                             ignored_scope=nncf.IgnoredScope(patterns=[keep_float], validate=False))


class OpenVINODevice(OnnxDevice):
    """``openvino:CPU``, ``openvino:GPU``, ``openvino:NPU``: synchronous latency-mode inference."""

    runs_model_int8_scales = True  # its ONNX frontend reads QuantizeLinear/DequantizeLinear as int8

    def __init__(self, target: str = "CPU", threads: int = 0, protocol: LatencyProtocol = LatencyProtocol(), batch: int = 1):
        self.core = openvino_core()
        available = list(self.core.available_devices)
        if target == "VPU":
            # The MYRIAD plugin (Neural Compute Stick 2) left OpenVINO in 2023.0; Intel's NPU succeeds it.
            target = next((d for d in ("NPU", "MYRIAD") if d in available), "VPU")
            if target == "VPU":
                raise DeviceUnavailable("openvino:VPU", note=" (the NPU today, MYRIAD on runtimes before 2023.0)",
                                        kind="openvino")
        if target not in available:
            raise DeviceUnavailable(f"openvino:{target}", kind="openvino")
        self.target = target
        self.threads = threads
        self.protocol = protocol
        self.batch = batch
        self._workdir = Path(tempfile.mkdtemp(prefix="edgetune-ov-"))
        atexit.register(shutil.rmtree, self._workdir, True)  # deployments not closed by their owner

    def compile_config(self, float_precision: str = "f32") -> dict:
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": float_precision}
        if self.target == "CPU" and self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config

    def _capabilities(self) -> list[str]:
        return [str(c) for c in self.core.get_property(self.target, "OPTIMIZATION_CAPABILITIES")]

    def info(self) -> DeviceInfo:
        import openvino as ov

        capabilities = self._capabilities()
        kind = self.target.split(".")[0]
        floats = [p for p in _FLOAT_PRECISIONS.get(kind, ("f32",)) if p.upper() in capabilities or p == "f32"]
        int8 = ["int8"] if "INT8" in capabilities else []
        pinned = {}
        if kind == "CPU":  # bf16 as this CPU runs it, or as on the host $EDGETUNE_HOST_CPU pins (devices.host)
            floats = [p for p in floats if p != "bf16"] + (["bf16"] if runs_bf16("BF16" in capabilities) else [])
            pinned = pinned_note()
        return DeviceInfo(
            name=f"openvino:{self.target}",
            full_name=str(self.core.get_property(self.target, "FULL_DEVICE_NAME")),
            runtime=f"openvino {ov.get_version()}",
            threads=self.threads,
            precisions=tuple(floats + int8),
            extra={"capabilities": ",".join(capabilities), "performance_hint": "LATENCY", **pinned},
            channel_granularity={p: self._granularity(kind) for p in floats + int8},
            measures_memory=self.measures_memory,
            measures_energy=self.energy_counter() is not None,
        )

    def energy_counter(self) -> EnergyCounter | None:
        """The CPU's RAPL counter for openvino:CPU; a GPU's or NPU's energy is not the host's to read."""
        return host_cpu_counter() if self.target == "CPU" else None

    @property
    def measures_memory(self) -> bool:
        """On the CPU only (a GPU's or NPU's memory is the device's, not the host process's RSS), where
        this host can read a process's peak resident memory."""
        return self.target == "CPU" and memory_probe.supported()

    @staticmethod
    def _granularity(kind: str) -> int:
        # CPU: oneDNN's blocked layouts (8 channels with AVX2, 16 with AVX-512; bench/granularity.py
        # measured it at f32 and int8). Intel GPUs and NPUs work in SIMD16 lanes.
        return channel_block() if kind == "CPU" else 16

    def deploy_onnx(self, onnx_path: Path, input_shape: tuple[int, ...], plan: PrecisionPlan,
                    int8_prefixes: list[str], scopes: dict[str, str] | None = None) -> OpenVINODeployment:
        import openvino as ov

        with self._deploy_folder(plan, int8_prefixes) as workdir:
            if plan.int8_scales == "model":
                # The converter, unlike read_model, stores the weights' own Q/DQ as int8 constants (OpenVINO's
                # CompressQuantizeWeights): the file a quarter of f32's, as NNCF's; the graph and names the same.
                ov_model = ov.convert_model(str(onnx_path))
            else:
                ov_model = self.core.read_model(str(onnx_path))
            if int8_prefixes and plan.int8_scales == "calibrate":  # else the graph's own Q/DQ ops make it int8
                ov_model = quantize_int8(ov_model, int8_prefixes, plan.calibration)
            xml = workdir / "model.xml"
            ov.save_model(ov_model, str(xml), compress_to_fp16=False)  # f32 weights stay f32 on disk
            return OpenVINODeployment(xml, self, tuple(input_shape), plan.float_precision, scopes or {})
