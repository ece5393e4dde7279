"""The memory probe fresh and forked, alternately, on one deployed ResNet-56: do the figures agree?

    python -m bench.memory_probe_paths [--device cpu] [--rounds 10]

Deploys ResNet-56 (its cached digits baseline) on ``--device`` at one thread and probes the same file
``--rounds`` times each way, the order alternating between rounds: in a fresh process (the runtime
imported there) and in a child forked from the runtime's server (devices/memory_probe.py). Prints
each way's median ``memory_bytes``, its range and every figure.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import torch

from bench.common import cached_resnet56_digits, probe_target
from edgetune.devices import create_device, memory_probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, openvino:CPU or onnxruntime:CPU")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    model = cached_resnet56_digits()
    device = create_device(args.device, threads=1)
    deployment = device.deploy(model, torch.randn(2, 3, 32, 32))
    saved = Path(tempfile.mkdtemp(prefix="memory-probe-paths-"))
    path, config = probe_target(device, deployment, saved)
    found: dict[bool, list[float]] = {True: [], False: []}
    try:
        for round_ in range(args.rounds):
            for fresh in (True, False) if round_ % 2 else (False, True):
                figure = memory_probe.probe_all(path, (1, 3, 32, 32), config, 1, fresh=fresh)["memory_bytes"]
                found[fresh].append(figure / 1e6)
    finally:
        deployment.close()
        shutil.rmtree(saved, ignore_errors=True)
    for fresh, way in ((True, "fresh"), (False, "forked")):
        mb = found[fresh]
        print(f"{args.device} {way}: median {statistics.median(mb):.2f} MB, range {min(mb):.2f}-{max(mb):.2f},"
              f" {[round(v, 2) for v in mb]}")
    print(f"forked / fresh, medians: {statistics.median(found[False]) / statistics.median(found[True]):.3f}")


if __name__ == "__main__":
    main()
