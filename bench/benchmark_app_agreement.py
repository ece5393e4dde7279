"""edgetune's latency protocol against OpenVINO's own benchmark_app, on the same IR and device.

    python bench/benchmark_app_agreement.py [--model resnet56] [--rounds 5] [--seconds 10]

Exports the model (random weights: latency does not depend on them) to OpenVINO IR at batch 1,
then alternates, round by round, edgetune's measurement (`OpenVINODevice`, LATENCY hint, f32
pinned, synchronous) and `benchmark_app -hint latency -api sync -infer_precision f32` on that
file. Reports each round's two medians and their ratio, and the spread of edgetune's medians
across rounds (repeatability within one process).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgetune.devices import create_device
from edgetune.devices.protocol import LatencyProtocol
from edgetune.objectives.models import create_model

MEDIAN = re.compile(r"Median:\s+([0-9.]+)\s*ms")


def benchmark_app(xml: Path, seconds: int) -> float:
    tool = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    output = subprocess.run([tool, "-m", str(xml), "-d", "CPU", "-hint", "latency", "-api", "sync",
                             "-infer_precision", "f32", "-shape", "[1,3,32,32]", "-t", str(seconds)], capture_output=True, text=True, check=True).stdout
    match = MEDIAN.search(output)
    if not match:
        raise SystemExit("benchmark_app printed no median:\n" + output[-2000:])
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    device = create_device("openvino:CPU", protocol=LatencyProtocol(max_seconds=args.seconds, target_ci_rel=0.0))
    deployment = device.deploy(create_model(args.model, 10).eval(), torch.rand(2, 3, 32, 32))
    with tempfile.TemporaryDirectory() as tmp:
        xml = deployment.save(Path(tmp))[0]
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(deployment.measure_latency().median_ms)
            theirs.append(benchmark_app(xml, args.seconds))
    deployment.close()
    info = device.info()
    print(f"{args.model}, batch 1, f32 pinned, {info.full_name}, {info.runtime}; {args.seconds} s per measurement\n")
    print("| round | edgetune median ms | benchmark_app median ms | ratio |\n|---|---|---|---|")
    for i, (a, b) in enumerate(zip(ours, theirs), 1):
        print(f"| {i} | {a:.3f} | {b:.3f} | {a / b:.3f} |")
    ratios = np.array(ours) / np.array(theirs)
    print(f"\nmedian ratio edgetune/benchmark_app: {np.median(ratios):.3f}; "
          f"edgetune's medians across rounds: min {min(ours):.3f}, max {max(ours):.3f} ms, "
          f"spread (max-min)/median {(max(ours) - min(ours)) / np.median(ours):.1%}")


if __name__ == "__main__":
    main()
