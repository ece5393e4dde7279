"""The small interface every device adapter implements."""
from __future__ import annotations

import abc
import collections
import contextlib
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from .energy import EnergyCounter, EnergyStats, measure_energy
from .protocol import LatencyProtocol, LatencyStats, measure_fastest, measure_paired_fastest

if TYPE_CHECKING:  # torch stays out of the device agent's imports: it serves ONNX Runtime on boards without it
    import torch


class DeviceError(RuntimeError):
    """A device cannot be used as asked (unavailable, unsupported precision, ...)."""


class DeviceUnavailable(DeviceError):
    """This host lacks the device. :func:`devices.registry.create_device` appends the devices it has
    (of ``kind`` only, when given): an adapter cannot ask the registry, which imports the adapters."""

    def __init__(self, device: str, note: str = "", reason: str = "", kind: str = ""):
        super().__init__(f"device {device!r}{note} is not available on this host{reason}")
        self.kind = kind


@dataclass(frozen=True)
class DeviceInfo:
    """The facts that change a timing; recorded with every measurement."""

    name: str  # the device string, e.g. "openvino:CPU"
    full_name: str  # e.g. "Intel(R) Xeon(R) Platinum 8481C"
    runtime: str  # e.g. "openvino 2026.4.1"
    threads: int
    precisions: tuple[str, ...]  # what this device can execute
    extra: Mapping[str, str] = field(default_factory=dict)
    # Per precision, the multiple of channels at which a layer's width pays off (the kernels work in
    # blocks of this many channels; a width between two multiples costs about the next one up).
    # Measured by bench/granularity.py; 1 where nothing is known.
    channel_granularity: Mapping[str, int] = field(default_factory=dict)
    # Its deployments report their inference memory (Deployment.memory_bytes is not None): a study
    # can target ``memory`` on this device.
    measures_memory: bool = False
    # It has an energy counter (NVML, RAPL: devices.energy): a study can target ``energy``.
    measures_energy: bool = False

    def granularity(self, precision: str) -> int:
        return int(self.channel_granularity.get(precision, 1))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["precisions"] = list(self.precisions)
        data["extra"] = dict(self.extra)
        data["channel_granularity"] = dict(self.channel_granularity)
        return data


def cpu_channel_block() -> int:
    """Channels per SIMD register of float32 on this CPU, as oneDNN's blocked layouts (and ONNX Runtime's
    NCHWc ones) use them: 16 with AVX-512, 8 with AVX2 (and below). PyTorch's public CPU capability says
    which; without PyTorch (the device agent), the CPU's flags in /proc/cpuinfo."""
    try:
        import torch
    except ImportError:
        return 16 if "avx512f" in _cpuinfo("flags").split() else 8
    capability = torch.backends.cpu.get_cpu_capability().upper()
    return 16 if "AVX512" in capability else 8


def _cpuinfo(field: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_name() -> str:
    """The host CPU's model name."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def count_layers_under(layers: list[tuple[str, str]], prefixes: list[str]) -> dict[str, int]:
    """Compute layers, as (their original ONNX node names, comma-separated; the precision they run in),
    whose nodes lie under the node-name ``prefixes``, counted by precision."""
    return dict(collections.Counter(precision for names, precision in layers
                                    if any(name.startswith(p) for name in _own_names(names) for p in prefixes)))


def _own_names(names: str) -> list[str]:
    # A model's own Q/DQ ops quantize the *next* layer's input but fuse into the layer before them
    # (objectives/qdq.py): their names would count that layer in the next one's scope too.
    return [name for name in names.split(",") if not name.endswith(("/QuantizeLinear", "/DequantizeLinear"))]


@dataclass(frozen=True)
class PrecisionPlan:
    """How a model runs on a device: one float precision, and the modules that run in int8.

    ``int8_modules`` are PyTorch module paths (``"layer2"``, ``"fc"``); everything under them is
    quantized, everything else stays at ``float_precision``. ``calibration`` holds the images
    (N, C, H, W) a post-training quantizer calibrates on. ``int8_scales = "model"``: the model
    carries its own int8 quantize/dequantize ops on those modules (the scales QAT learned,
    :mod:`objectives.qdq`), which a device that can (``Device.runs_model_int8_scales``) deploys as
    they are, calibrating nothing.
    """

    float_precision: str = "f32"
    int8_modules: tuple[str, ...] = ()
    calibration: np.ndarray | None = field(default=None, compare=False, repr=False)
    int8_scales: str = "calibrate"  # or "model"

    @property
    def precisions(self) -> set[str]:
        return {self.float_precision} | ({"int8"} if self.int8_modules else set())


class Deployment(abc.ABC):
    """A model as it runs on a device: the artifact a user would ship.

    Subclasses set ``protocol`` and ``batch`` and implement ``runner``; timing is shared.
    """

    #: compute layers (conv, matmul) counted by the precision they really run in, read back
    precision_used: Mapping[str, int]
    #: effective inference precision of the float parts (e.g. "f32")
    inference_precision: str
    protocol: LatencyProtocol
    batch: int = 1
    #: inference threads it runs at (0: not the adapter's to choose); measure_latency keeps the fastest
    threads: int = 0
    #: what executes the model (e.g. "openvino", "torchscript", "cuda-graph"), recorded per trial
    runtime: str = ""
    #: why it is not the runtime the adapter prefers (a CUDA graph that could not be captured); None when it is
    runtime_fallback: str | None = None
    #: the device's energy counter (devices.energy), None where it has none
    energy_counter: EnergyCounter | None = None

    @abc.abstractmethod
    def predict(self, images: np.ndarray) -> np.ndarray:
        """Logits for a batch of images (N, C, H, W) in float32."""

    @abc.abstractmethod
    def runner(self, threads: int | None = None) -> Callable[[], None]:
        """A callable that runs one synchronous inference of one batch (input already bound), at
        ``threads`` (one of :meth:`thread_options`; None: the deployment's own)."""

    def thread_options(self) -> tuple[int, ...]:
        """The thread counts :meth:`measure_latency` tries, the deployment's own first."""
        return (self.threads,)

    def device_time_ms(self) -> float | None:
        """Median time inside the runtime's graph (performance counters), where it can tell."""
        return None

    def measure_energy(self) -> EnergyStats | None:
        """Energy of one inference of one batch from the device's energy counter (devices.energy), None
        where it has none. Runs inferences for a second or more: not beside a timing."""
        return measure_energy(self.energy_counter, self.runner()) if self.energy_counter is not None else None

    def measure_throughput(self, seconds: float = 2.0, requests: int = 0) -> float | None:
        """Images per second with several requests in flight, where the runtime supports it."""
        return None

    def measure_latency(self, reference: "Deployment | None" = None,
                        reference_ms: Mapping[int, tuple[float, float]] | None = None) -> LatencyStats:
        """Time one batch by the latency protocol at the fastest of :meth:`thread_options`, which the
        deployment keeps (``threads``) for what runs it next: the device-time counters, the memory
        probe, an export's manifest (devices.protocol.measure_fastest).

        Paired with ``reference`` when given, at the same thread count. ``reference_ms``: the
        reference's own ``by_threads`` (its latency at each count); the ratio is then to the reference
        at *its* fastest count. Without it, the two are paired at this deployment's own count only.
        """
        options = self.thread_options()
        if reference is None:
            stats = measure_fastest({t: self.runner(t) for t in options}, self.protocol, self.batch)
        else:
            known = reference_ms or {options[0]: (1.0, 0.0)}
            runs = {t: self.runner(t) for t in options if t in known}
            threads, candidate, ref, ratio, ratio_ci = measure_paired_fastest(
                {t: reference.runner(t) for t in runs}, runs, known, self.protocol, self.batch)
            stats = replace(candidate, reference_median_ms=ref.median_ms, ratio=ratio, ratio_ci95_rel=ratio_ci,
                            threads=threads)
        self.threads = stats.threads
        return replace(stats, device_median_ms=self.device_time_ms())

    @abc.abstractmethod
    def save(self, directory: Path) -> list[Path]:
        """Write the deployable files into ``directory`` and return their paths."""

    @property
    @abc.abstractmethod
    def size_bytes(self) -> int:
        """Size of the deployed artifact on disk."""

    @property
    def weights_bytes(self) -> int:
        """Size of the weights alone (for OpenVINO IR: the .bin, without the graph's .xml)."""
        return self.size_bytes

    def memory_bytes(self) -> int | None:
        """Memory the deployed model needs to run: its weights as loaded, the runtime's compiled form,
        activations and scratch buffers at their peak over a few inferences of one batch, in bytes.
        Each adapter says exactly which figure it measures (``_measure_memory``); None where the runtime
        cannot tell. Measured once, on first ask (a probe runs inferences: seconds)."""
        # Not functools.cached_property: on Python 3.11 it holds one lock for every instance, and a remote
        # deployment waiting on its agent in this process (the tests) would block the agent's own.
        if "_memory" not in vars(self):
            self._memory = self._measure_memory()
        return self._memory

    def _measure_memory(self) -> int | None:
        return None

    def close(self) -> None:
        """Release the runtime's resources and temporary files."""

    def precision_of(self, modules: list[str]) -> dict[str, int]:
        """Compute layers under these PyTorch module paths, counted by the precision they run in."""
        raise NotImplementedError


class FileDeployment(Deployment):
    """A deployment whose artifact is one file, ``_path``, in a working folder of its own (``_workdir``),
    saved as ``artifact_name``."""

    artifact_name: str
    _path: Path
    _workdir: Path

    def save(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / self.artifact_name
        shutil.copyfile(self._path, target)
        return [target]

    @property
    def size_bytes(self) -> int:
        return self._path.stat().st_size

    def close(self) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)


class ReadBackLayers:
    """For a deployment of an exported ONNX graph whose runtime says how it runs each compute layer
    (OpenVINO, ONNX Runtime, an agent serving either): ``precision_of`` from ``layers`` and ``scopes``."""

    #: each compute layer as the runtime runs it: (its original ONNX node names, comma-separated; precision)
    layers: list[tuple[str, str]]
    #: PyTorch module path -> the ONNX node-name prefix its layers carry (devices.onnx_export.module_scopes)
    scopes: dict[str, str]

    def precision_of(self, modules: list[str]) -> dict[str, int]:
        return count_layers_under(self.layers, [self.scopes[m] for m in modules if m in self.scopes])


class Device(abc.ABC):
    """A target that runs models. :mod:`devices.registry` maps device strings to subclasses (a new
    adapter gets a factory there; it does not register itself).

    Example::

        device = create_device("openvino:CPU", threads=2)
        deployment = device.deploy(model, example_input, PrecisionPlan("f32", int8_modules=("layer2",), calibration=x))
        top1 = (deployment.predict(x).argmax(1) == y).mean()
        print(deployment.measure_latency().median_ms)
    """

    #: deploys a model's own int8 quantize/dequantize ops (``PrecisionPlan.int8_scales = "model"``)
    runs_model_int8_scales: bool = False
    #: with a model's own int8 ops, still calibrates the scales of the outputs they leave float (it needs the
    #: plan's calibration images then)
    calibrates_model_int8_outputs: bool = False

    @abc.abstractmethod
    def info(self) -> DeviceInfo:
        """Describe the device (name, runtime, threads, precisions)."""

    @abc.abstractmethod
    def deploy(self, model: torch.nn.Module, example_input: torch.Tensor, plan: PrecisionPlan = PrecisionPlan()) -> Deployment:
        """Compile ``model`` for this device at ``plan``."""

    def energy_counter(self) -> EnergyCounter | None:
        """The counter that measures this device's energy (devices.energy), None where it has none."""
        return None

    def precisions(self) -> tuple[str, ...]:
        """Every precision this device can execute ("int8" per module; float ones model-wide)."""
        return self.info().precisions

    def check_plan(self, plan: PrecisionPlan) -> None:
        unsupported = sorted(plan.precisions - set(self.precisions()))
        if unsupported:
            raise DeviceError(f"precision {unsupported[0]!r} is not supported by {self.info().name}; "
                              f"supported: {', '.join(self.precisions())}")
        if plan.int8_modules and plan.int8_scales == "model":
            if not self.runs_model_int8_scales:
                raise DeviceError(f"{self.info().name} cannot run a model's own int8 quantize/dequantize ops; "
                                  "use search.quantization = \"qat\" or \"ptq\"")
        elif plan.int8_modules and plan.calibration is None:
            raise DeviceError("an int8 plan needs calibration images")


class OnnxDevice(Device):
    """A device whose runtime loads ONNX files (OpenVINO, ONNX Runtime): :meth:`deploy` exports the model
    with module paths in node names (devices/onnx_export.py) and hands the file to :meth:`deploy_onnx`,
    which the device agent calls with a file it received. ``_workdir``: the device's scratch folder."""

    _workdir: Path

    def deploy(self, model: torch.nn.Module, example_input: torch.Tensor, plan: PrecisionPlan = PrecisionPlan()) -> Deployment:
        from .onnx_export import export_onnx, module_scopes  # torch: only where a model is exported, not on an agent

        self.check_plan(plan)
        with tempfile.TemporaryDirectory(prefix="export-", dir=self._workdir, ignore_cleanup_errors=True) as tmp:
            onnx_path = export_onnx(model, example_input, Path(tmp) / "model.onnx")
            scopes = module_scopes(model)
            return self.deploy_onnx(onnx_path, tuple(example_input.shape[1:]), plan,
                                    [scopes[m] for m in plan.int8_modules], scopes)

    @abc.abstractmethod
    def deploy_onnx(self, onnx_path: Path, input_shape: tuple[int, ...], plan: PrecisionPlan,
                    int8_prefixes: list[str], scopes: dict[str, str] | None = None) -> Deployment:
        """Deploy an ONNX file; ``int8_prefixes``: node-name prefixes to quantize (the rest stays float);
        ``scopes``: module path -> node-name prefix, for ``precision_of`` (none from an agent's client)."""

    @contextlib.contextmanager
    def _deploy_folder(self, plan: PrecisionPlan, int8_prefixes: list[str]):
        """A new folder for one deployment, the plan checked with its int8 prefixes; removed if the block
        fails (else the deployment made in it owns it)."""
        self.check_plan(replace(plan, int8_modules=tuple(int8_prefixes)))
        workdir = Path(tempfile.mkdtemp(prefix="deploy-", dir=self._workdir))
        try:
            yield workdir
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
