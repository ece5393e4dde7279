"""Energy per inference, from the hardware's own cumulative energy counter.

Two counters are read: NVIDIA's total-energy counter through NVML (Volta and later) for a CUDA GPU,
and Linux's RAPL package domains under ``/sys/class/powercap`` for a CPU (readable on bare metal with
Intel or AMD CPUs; virtual machines usually have none). Both count joules since some point; energy
per inference is the counter's rise over a window of back-to-back inferences divided by their number.

A counter moves in steps (NVML updates every few tens of milliseconds, RAPL about every
millisecond), so the window is made long enough that one step is under 1% of the reading: at least
100 of the counter's update periods, measured under load before the window, and a second. The
board's idle power, read over a quiet window before, is recorded beside the figure: what a
battery pays for the model alone is the total minus idle power times the time.
"""
from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

#: Where Linux exposes RAPL (the powercap framework); a parameter so that tests can point elsewhere
POWERCAP = Path("/sys/class/powercap")
_STEPS = 100  # counter steps per window: one step is under 1% of the reading
_MIN_WINDOW_S = 1.0
_MAX_WINDOW_S = 20.0
_IDLE_S = 1.0


class EnergyCounter(Protocol):
    """A monotonic energy reading in millijoules (wraps handled by the reader)."""

    name: str

    def millijoules(self) -> float: ...


@dataclass(frozen=True)
class EnergyStats:
    """Energy of one inference of one batch, and what it was measured over."""

    energy_mj: float  # per inference (one batch), the board's idle draw included
    idle_power_w: float  # the board's power at rest, measured just before
    power_w: float  # mean power over the window
    runs: int
    window_s: float
    update_period_s: float  # the counter's update period, measured under load
    counter: str  # e.g. "nvml:NVIDIA H200" or "rapl:package-0"

    def to_dict(self) -> dict:
        return asdict(self)


class NvmlCounter:
    """NVML's ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded) of one GPU."""

    def __init__(self, handle, name: str):
        self._handle = handle
        self.name = f"nvml:{name}"

    @classmethod
    def for_cuda_device(cls, index: int) -> "NvmlCounter | None":
        """The counter of CUDA device ``index``, found by its PCI bus id (CUDA's and NVML's numbering
        differ under ``CUDA_VISIBLE_DEVICES``); None where NVML or the counter is missing."""
        try:
            import pynvml
            import torch

            pynvml.nvmlInit()
            props = torch.cuda.get_device_properties(index)
            try:
                bus = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
                handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus)
            except Exception:  # an older torch without the PCI ids: NVML's order is CUDA's without masking
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            counter = cls(handle, props.name)
            counter.millijoules()  # NOT_SUPPORTED before Volta
            return counter
        except Exception:
            return None

    def millijoules(self) -> float:
        import pynvml

        return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))


class RaplCounter:
    """The sum of the RAPL package domains (``intel-rapl:N``, one per socket; AMD's kernels expose
    theirs under the same name), in mJ, with each domain's wrap-around at ``max_energy_range_uj``."""

    def __init__(self, domains: list[Path]):
        self._domains = domains
        self._ranges = [int((d / "max_energy_range_uj").read_text()) for d in domains]
        self._last = [self._read(d) for d in domains]
        self._total_uj = 0
        self.name = "rapl:" + "+".join((d / "name").read_text().strip() if (d / "name").exists() else d.name
                                       for d in domains)

    @classmethod
    def find(cls, root: Path = POWERCAP) -> "RaplCounter | None":
        """The package domains under ``root``, or None where there are none or they cannot be read
        (recent kernels make ``energy_uj`` root-only)."""
        domains = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1) if root.is_dir() else []
        try:
            return cls(domains) if domains else None
        except (OSError, ValueError):
            return None

    @staticmethod
    def _read(domain: Path) -> int:
        return int((domain / "energy_uj").read_text())

    def millijoules(self) -> float:
        for i, domain in enumerate(self._domains):
            now = self._read(domain)
            step = now - self._last[i]
            self._total_uj += step if step >= 0 else step + self._ranges[i] + 1
            self._last[i] = now
        return self._total_uj / 1000.0


@functools.cache
def host_cpu_counter() -> RaplCounter | None:
    """This host's CPU energy counter, shared by the adapters that run on the CPU; None where Linux
    exposes no readable RAPL domain (most virtual machines)."""
    return RaplCounter.find()


def update_period(counter: EnergyCounter, run: Callable[[], None], seconds: float = 0.5) -> float:
    """Seconds between the counter's updates while ``run`` keeps the device busy: its resolution in time."""
    changes, start = 0, time.perf_counter()
    last = counter.millijoules()
    while time.perf_counter() - start < seconds:
        run()
        now = counter.millijoules()
        if now != last:
            changes, last = changes + 1, now
    return (time.perf_counter() - start) / max(changes, 1)


def measure_energy(counter: EnergyCounter, run: Callable[[], None], warm_up: int = 10) -> EnergyStats:
    """Energy per call of ``run`` (one synchronous inference of one batch) over a window long enough
    for the counter's resolution to be under 1% of the reading. The device is warmed up first, and the
    idle power read over a quiet second before the load starts."""
    start, idle_start = time.perf_counter(), counter.millijoules()
    time.sleep(_IDLE_S)
    idle_power_w = (counter.millijoules() - idle_start) / (time.perf_counter() - start) / 1000.0
    for _ in range(warm_up):
        run()
    period = update_period(counter, run)
    window = min(max(_MIN_WINDOW_S, _STEPS * period), _MAX_WINDOW_S)
    runs, start, before = 0, time.perf_counter(), counter.millijoules()
    while True:
        run()
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= window:
            break
    used = counter.millijoules() - before
    return EnergyStats(energy_mj=used / runs, idle_power_w=idle_power_w, power_w=used / elapsed / 1000.0, runs=runs,
                       window_s=elapsed, update_period_s=period, counter=counter.name)
