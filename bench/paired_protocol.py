"""Does the paired latency protocol time a candidate as fast as it runs on its own?

    python -m bench.paired_protocol [--rounds 3] [--threads 1]

Every trial is timed against the deployed baseline, paired, so that the host's drift cancels
(devices/protocol.py). This compares, side by side in one run, three ways to get the ratio
candidate / reference on the OpenVINO CPU, for candidates of several sizes and precisions against
an f32 ResNet-56 (the default study's baseline architecture; random weights, which do not change
latency; int8 by NNCF on random calibration images):

- ``single runs``: alternate one reference run and one candidate run (edgetune's protocol before);
- ``segments``: alternate short segments of each, untimed while the caches settle (edgetune now);
- ``on its own``: each model alone for a second, four times, interleaved (ABAB...): the ratio
  of the models as each runs by itself, the figure the paired protocols should reproduce.

Printed per candidate: the median ratio over the rounds for each way, its deviation from "on its
own", and the seconds the two paired protocols took (limit 5 s, 2% target interval, as a trial).
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace

import numpy as np
import torch

from bench.common import parser as make_parser
from edgetune.devices.base import PrecisionPlan
from edgetune.devices.protocol import LatencyProtocol, _sample_until_tight, _timed, exclusive, measure_paired, warm_up
from edgetune.devices.registry import create_device
from edgetune.objectives.models import create_model

PROTOCOL = LatencyProtocol(target_ci_rel=0.02, max_seconds=5.0)


def single_runs(run_reference, run_candidate, protocol: LatencyProtocol) -> tuple[float, float]:
    """edgetune's paired protocol before segments: the median of per-pair ratios of single runs."""
    start = time.perf_counter()
    warm_up(run_reference, replace(protocol, warmup_seconds=0.0))  # as measure_paired warms them
    warm_up(run_candidate, protocol)
    pairs = [0]

    def pair() -> float:
        pairs[0] += 1
        if pairs[0] % 2:
            reference = _timed(run_reference)
            return _timed(run_candidate) / reference
        candidate = _timed(run_candidate)
        return candidate / _timed(run_reference)

    ratios, _, _ = _sample_until_tight(pair, protocol)
    return float(np.median(ratios)), time.perf_counter() - start


def on_its_own(run_reference, run_candidate, seconds: float = 1.0, blocks: int = 4) -> float:
    medians = {"reference": [], "candidate": []}
    for block in range(blocks):
        for name, run in (("reference", run_reference), ("candidate", run_candidate))[:: 1 if block % 2 == 0 else -1]:
            warm_up(run, LatencyProtocol(warmup_runs=10, warmup_seconds=0.2))
            samples, start = [], time.perf_counter()
            while time.perf_counter() - start < seconds:
                samples.append(_timed(run))
            medians[name].append(np.median(samples))
    return float(np.median(medians["candidate"]) / np.median(medians["reference"]))


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="OpenVINO inference threads (0: all cores)")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = create_device("openvino:CPU", threads=args.threads, protocol=PROTOCOL)
    example = torch.rand(2, 3, 32, 32)
    calibration = np.random.default_rng(0).random((128, 3, 32, 32), dtype=np.float32)

    def deploy(name: str, precision: str):
        model = create_model(name, 10).eval()
        modules = tuple(n for n, _ in model.named_children()) if precision == "int8" else ()
        return device.deploy(model, example, PrecisionPlan("f32", modules, calibration if modules else None))

    reference = deploy("resnet56", "f32")
    candidates = {"ResNet-56 f32 (itself)": deploy("resnet56", "f32"), "ResNet-20 f32": deploy("resnet20", "f32"),
                  "ResNet-56 int8": deploy("resnet56", "int8"), "ResNet-20 int8": deploy("resnet20", "int8")}
    results = {name: {"single runs": [], "segments": [], "on its own": [], "s single": [], "s segments": []}
               for name in candidates}
    for round_ in range(args.rounds):
        for name, candidate in candidates.items():
            run_reference, run_candidate = reference.runner(), candidate.runner()
            row = results[name]
            with exclusive(device.info().name):  # as a trial: no other measurement on this host meanwhile
                ratio, seconds = single_runs(run_reference, run_candidate, PROTOCOL)
                row["single runs"].append(ratio)
                row["s single"].append(seconds)
                start = time.perf_counter()
                row["segments"].append(measure_paired(run_reference, run_candidate, PROTOCOL)[2])
                row["s segments"].append(time.perf_counter() - start)
                row["on its own"].append(on_its_own(run_reference, run_candidate))
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"## paired protocols, OpenVINO CPU, {args.threads or 'all'} thread(s), reference ResNet-56 f32, "
          f"{args.rounds} rounds (medians)\n")
    print("| candidate | on its own | single runs (before) | deviation | seconds | segments (now) | deviation | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in results.items():
        alone, single, segments = (float(np.median(row[k])) for k in ("on its own", "single runs", "segments"))
        print(f"| {name} | {alone:.3f} | {single:.3f} | {single / alone - 1:+.1%} | {np.median(row['s single']):.1f} | "
              f"{segments:.3f} | {segments / alone - 1:+.1%} | {np.median(row['s segments']):.1f} |")


if __name__ == "__main__":
    main()
