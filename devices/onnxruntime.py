"""ONNX Runtime adapter (``onnxruntime:CPU``): the runtime shipped on ARM and x86 CPUs that are not Intel's.

The model is the ONNX export with module paths in node names (devices/onnx_export.py), run by an
``InferenceSession`` on the CPU execution provider with every graph optimisation on
(``ORT_ENABLE_ALL``). int8 comes either from the model's own QuantizeLinear/DequantizeLinear ops (the
scales QAT learned, objectives/qdq.py; completed by devices/onnx_qdq.py where ONNX Runtime needs an
output scale QAT does not have) or from ONNX Runtime's static quantisation
(``onnxruntime.quantization.quantize_static``, QDQ format, calibrated on the plan's images) of the
nodes under the plan's int8 modules.

What runs in int8 is read back from the optimised graph: ONNX Runtime fuses a DequantizeLinear ->
Conv -> QuantizeLinear pattern into ``QLinearConv`` (and MatMul/Gemm into ``QLinearMatMul``/``QGemm``);
a layer left as ``Conv`` behind a DequantizeLinear runs in f32 on dequantised weights. The node types
are read at ``ORT_ENABLE_EXTENDED``, where those fusions happen and a fused node keeps its layer's
name; ``ORT_ENABLE_ALL`` then only rewrites layouts (NCHWc, NHWC), renaming nodes after their outputs,
so the deployment's totals (``precision_used``) are counted on that graph, the one that runs.
"""
from __future__ import annotations

import atexit
import collections
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from . import memory_probe
from .base import (DeviceError, DeviceInfo, DeviceUnavailable, FileDeployment, OnnxDevice, PrecisionPlan,
                   ReadBackLayers, cpu_name)
from .host import channel_block
from .onnx_qdq import complete_for_onnxruntime
from .protocol import LatencyProtocol

#: Compute node types of an optimised graph by the precision they run in (ONNX and com.microsoft domains).
_INT8_OPS = {"QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat",
             "DynamicQuantizeMatMul", "QLinearConvTranspose"}
_FLOAT_OPS = {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "ConvTranspose"}
PROVIDERS = ["CPUExecutionProvider"]
INPUT, OUTPUT = "input", "logits"  # the names onnx_export gives
CALIBRATION_BATCH = 32


def _ort():
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # its warnings (e.g. on saving an NCHWc graph) are not the user's
    return onnxruntime


def session_options(threads: int, optimized_path: Path | None = None, level: str = "ORT_ENABLE_ALL"):
    """The session options every deployment runs with (and the memory probe, and the manifest's recipe)."""
    ort = _ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def _session(path: Path, threads: int, optimized_path: Path | None = None, level: str = "ORT_ENABLE_ALL"):
    try:
        return _ort().InferenceSession(str(path), session_options(threads, optimized_path, level), providers=PROVIDERS)
    except Exception as error:  # noqa: BLE001 - ONNX Runtime raises its own types (Fail, InvalidGraph, ...)
        message = str(error).strip().splitlines()
        raise DeviceError(f"ONNX Runtime cannot load the model: {message[-1] if message else type(error).__name__}") from None


def _precision(op_type: str) -> str | None:
    return "int8" if op_type in _INT8_OPS else "f32" if op_type in _FLOAT_OPS else None


def optimised_layers(path: Path, level: str) -> list[tuple[str, str]]:
    """(node name, precision) of each compute node of ``path`` as ONNX Runtime optimises it at ``level``."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="edgetune-ort-") as tmp:
        optimised = Path(tmp) / "optimised.onnx"
        _session(path, 1, optimised, level)
        graph = onnx.load(str(optimised)).graph
    return [(node.name, precision) for node in graph.node if (precision := _precision(node.op_type))]


class OnnxRuntimeDeployment(ReadBackLayers, FileDeployment):
    artifact_name = "model.onnx"
    runtime = "onnxruntime"

    def __init__(self, path: Path, device: "OnnxRuntimeDevice", input_shape: tuple[int, ...], scopes: dict[str, str]):
        self._device = device
        self.protocol = device.protocol
        self.batch = device.batch
        self._path = path
        self._workdir = path.parent
        self._input_shape = input_shape  # (C, H, W)
        self.scopes = scopes  # module path -> ONNX node-name prefix, for precision_of
        self.threads = device.threads or device.cores
        self._sessions = {self.threads: _session(path, self.threads)}  # by thread count, made when first timed
        self.layers = optimised_layers(path, "ORT_ENABLE_EXTENDED")  # names kept: per group
        self.precision_used = dict(collections.Counter(p for _, p in optimised_layers(path, "ORT_ENABLE_ALL")))
        self.inference_precision = "f32"

    def thread_options(self) -> tuple[int, ...]:
        """As OpenVINO's: every core first, then 1, 2, 4, ... below it; one count where the spec pinned it."""
        if self._device.threads:
            return (self.threads,)
        cores = self._device.cores
        return (cores, *(1 << i for i in range(cores.bit_length()) if 1 << i < cores))

    def _session_at(self, threads: int):
        if threads not in self._sessions:
            self._sessions[threads] = _session(self._path, threads)
        return self._sessions[threads]

    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        session = self._session_at(self.threads)
        return np.concatenate([session.run([OUTPUT], {INPUT: np.ascontiguousarray(images[i:i + batch_size], np.float32)})[0]
                               for i in range(0, len(images), batch_size)])

    def runner(self, threads: int | None = None):
        session = self._session_at(threads or self.threads)
        feed = {INPUT: np.random.default_rng(0).standard_normal((self.batch, *self._input_shape)).astype(np.float32)}
        outputs = [OUTPUT]

        def run_once() -> None:
            session.run(outputs, feed)

        return run_once

    def _measure_memory(self) -> int | None:
        """Peak resident memory that creating this deployment's session (its options, at its thread count)
        and running 10 inferences of one batch adds to a fresh process with ONNX Runtime loaded and warmed
        up: :mod:`devices.memory_probe` says exactly what counts."""
        if not memory_probe.supported():
            return None
        return memory_probe.probe(self._path, (self.batch, *self._input_shape), threads=self.threads)

    def close(self) -> None:
        self._sessions = {}
        super().close()


def quantize_static_int8(source: Path, target: Path, int8_prefixes: list[str], calibration: np.ndarray) -> Path:
    """ONNX Runtime's static int8 (QDQ format: u8 activations, s8 per-channel weights, as its docs advise
    for x86 and ARM CPUs) of the nodes under ``int8_prefixes``, calibrated on ``calibration``. Its
    pre-processing (shape inference, graph clean-up) first: without it a Conv followed by a Relu keeps
    float activations between them, and ONNX Runtime cannot fuse it into an int8 QLinearConv."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name("prepared.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    nodes = [node.name for node in onnx.load(str(prepared)).graph.node
             if any(node.name.startswith(p) for p in int8_prefixes)]
    calibration = calibration.astype(np.float32)
    batches = [{INPUT: calibration[i:i + CALIBRATION_BATCH]} for i in range(0, len(calibration), CALIBRATION_BATCH)]

    class Images(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(batches)

        def get_next(self):
            return next(self._batches, None)

    quantize_static(str(prepared), str(target), Images(), quant_format=QuantFormat.QDQ, nodes_to_quantize=nodes,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    prepared.unlink(missing_ok=True)
    return target


class OnnxRuntimeDevice(OnnxDevice):
    """``onnxruntime:CPU``: ONNX Runtime's CPU execution provider, f32 and int8, synchronous inference."""

    runs_model_int8_scales = True  # QuantizeLinear/DequantizeLinear pairs are ONNX Runtime's own int8 format
    calibrates_model_int8_outputs = True  # where QAT's scales leave a convolution's output float (onnx_qdq.py)

    def __init__(self, target: str = "CPU", threads: int = 0, protocol: LatencyProtocol = LatencyProtocol(), batch: int = 1):
        ort = _ort()
        if target != "CPU" or "CPUExecutionProvider" not in ort.get_available_providers():
            raise DeviceUnavailable(f"onnxruntime:{target}", note=" (edgetune runs ONNX Runtime's CPU execution provider)",
                                    kind="onnxruntime")
        self.target = target
        self.threads = threads
        self.protocol = protocol
        self.batch = batch
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self._workdir = Path(tempfile.mkdtemp(prefix="edgetune-ort-"))
        atexit.register(shutil.rmtree, self._workdir, True)  # deployments not closed by their owner

    def info(self) -> DeviceInfo:
        ort = _ort()
        precisions = ("f32", "int8")
        return DeviceInfo(
            name="onnxruntime:CPU",
            full_name=cpu_name(),
            runtime=f"onnxruntime {ort.__version__}",
            threads=self.threads,
            precisions=precisions,
            # how to run an exported deployed/model.onnx as it was measured (README, "tune export")
            extra={"providers": ",".join(PROVIDERS), "graph_optimization_level": "ORT_ENABLE_ALL",
                   "intra_op_num_threads": "threads_used", "input_name": INPUT, "output_name": OUTPUT},
            # MLAS's NCHWc convolutions work in blocks of the SIMD width, as oneDNN's (bench/granularity.py)
            channel_granularity={p: channel_block() for p in precisions},
            measures_memory=memory_probe.supported(),
        )

    def deploy_onnx(self, onnx_path: Path, input_shape: tuple[int, ...], plan: PrecisionPlan,
                    int8_prefixes: list[str], scopes: dict[str, str] | None = None) -> OnnxRuntimeDeployment:
        with self._deploy_folder(plan, int8_prefixes) as workdir:
            path = workdir / "model.onnx"
            if int8_prefixes and plan.int8_scales == "calibrate":  # else the graph's own Q/DQ ops make it int8
                _session(onnx_path, 1)  # a model it cannot load is one line, not the quantiser's traceback
                try:
                    quantize_static_int8(onnx_path, path, int8_prefixes, plan.calibration)
                except Exception as error:  # noqa: BLE001 - the quantiser cannot take every graph
                    raise DeviceError(f"ONNX Runtime static quantization failed: {type(error).__name__}: {error}") from error
            elif int8_prefixes:  # the graph's own Q/DQ ops, completed where ONNX Runtime needs an output scale
                _session(onnx_path, 1)
                complete_for_onnxruntime(onnx_path, path, plan.calibration, INPUT)
            else:
                shutil.copyfile(onnx_path, path)
            return OnnxRuntimeDeployment(path, self, tuple(input_shape), scopes or {})
