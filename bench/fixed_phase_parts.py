"""The parts of a trial's fixed phases, each timed on its own (ResNet-56 on digits, its cached baseline).

    python -m bench.fixed_phase_parts [--repeats 2]

Deployment (OpenVINO: export, conversion, two compilations; plain PyTorch: trace), the compilations
and performance counters alone, the memory probe's child process beside the import of its runtime
in a bare child, the artifact's ONNX export and its zip deflated against stored: each repeated in
one process, so each pair is side by side under the same load.

The memory probe both ways, on the same file in turn: a fresh process (before: it imports the
runtime) and a child forked from the runtime's fork server (after; the first one also waits for the
server's own import), each with its figure, so that the two can be compared as well as timed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from bench.common import cached_resnet56_digits, probe_target
from edgetune.devices import memory_probe
from edgetune.devices.registry import create_device
from edgetune.objectives.model_files import write_model_files


def timed(label: str, work) -> object:
    start = time.perf_counter()
    result = work()
    print(f"{label}: {time.perf_counter() - start:.3f} s")
    return result


def child(code: str) -> None:
    subprocess.run([sys.executable, "-P", "-c", code], check=True)


def probe_both(label: str, path: Path, config: dict | None = None, threads: int = 0) -> None:
    """The probe fresh (before) and forked (after), side by side: seconds and figure of each."""
    for way, fresh in (("fresh process", True), ("forked from its server", False)):
        start = time.perf_counter()
        found = memory_probe.probe_all(path, (1, 3, 32, 32), config, threads, fresh=fresh)
        print(f"memory probe, {label}, {way}: {time.perf_counter() - start:.3f} s, memory_bytes {found['memory_bytes']}"
              f" (RSS before {found['rss_before_bytes']}, {found['process']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model = cached_resnet56_digits()
    example, folder = torch.randn(2, 3, 32, 32), Path(tempfile.mkdtemp())
    openvino, cpu = create_device("openvino:CPU"), create_device("cpu", threads=1)
    onnx_device = create_device("onnxruntime:CPU", threads=1)
    onnx = onnx_device.deploy(model, example)
    deployed = timed("openvino deploy (first)", lambda: openvino.deploy(model, example))
    deployed.save(folder / "deployed")
    timed("model files: ONNX export + safetensors (first)", lambda: write_model_files(model, "resnet56", 10, example, folder))
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    print({str(p.relative_to(folder)): p.stat().st_size for p in files})
    ways = {"deflated": {"compression": zipfile.ZIP_DEFLATED}, "stored": {"compression": zipfile.ZIP_STORED}}
    for _ in range(args.repeats):
        for label, options in ways.items():
            def pack(options=options):
                with zipfile.ZipFile(folder / "a.zip", "w", **options) as zf:
                    for path in files:
                        zf.write(path, path.relative_to(folder))
            timed(f"zip {label}", pack)
            print(f"  {(folder / 'a.zip').stat().st_size} bytes")
        timed("openvino deploy", lambda: openvino.deploy(model, example).close())
        timed("openvino compile, static batch", deployed._compile)
        timed("openvino compile, dynamic batch (evaluation)", lambda: deployed._compile(static=False))
        timed("openvino device_time_ms (compile + 50 counted runs)", deployed.device_time_ms)
        probe_both("OpenVINO IR", *probe_target(openvino, deployed, folder / "probed-ir"))
        timed("  a child importing numpy and openvino", lambda: child("import numpy, openvino"))
        timed("  a bare child", lambda: child("pass"))
        traced = timed("cpu deploy (trace)", lambda: cpu.deploy(model, example))
        probe_both("TorchScript", *probe_target(cpu, traced, folder / "probed-pt"), threads=1)
        timed("  a child importing torch", lambda: child("import torch"))
        traced.close()
        probe_both("ONNX Runtime", *probe_target(onnx_device, onnx, folder / "probed-onnx"), threads=1)
    onnx.close()


if __name__ == "__main__":
    main()
