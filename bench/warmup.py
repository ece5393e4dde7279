"""Does a freshly deployed candidate need the protocol's full second of warm-up before it is timed?

    python -m bench.warmup [--device cpu] [--model resnet20] [--warmups 1.0 0.25] [--rounds 6]

Once training is fast, measurement is the largest fixed phase of a trial, and half of it is the
candidate's warm-up (``LatencyProtocol.warmup_seconds``, 1 s; the reference is warm already). This
deploys the baseline once (random weights: latency does not depend on them) as the reference, as a
study does, then for ``--rounds`` rounds deploys fresh copies of it pruned to 0%, 30% and 60% of each
group's inner width and measures each paired with the reference, once per ``--warmups`` value,
the order of the values alternating between rounds. Prints, for each model and warm-up, the median of
the recorded ratios, their spread, the ratio of medians to the first warm-up's, and the measurement's
mean seconds.
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import replace

import torch

from bench.common import parser as make_parser, pruned_inner
from edgetune.devices import PrecisionPlan, create_device
from edgetune.devices.protocol import LatencyProtocol
from edgetune.objectives.models import create_model

SPARSITIES = (0.0, 0.3, 0.6)


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--warmups", type=float, nargs="+", default=[1.0, 0.25])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=1.0, help="the protocol's time limit (the GPU check's)")
    args = parser.parse_args()
    torch.manual_seed(0)
    baseline = create_model(args.model, 10).eval()
    example = torch.randn(2, 3, 32, 32)
    models = {s: pruned_inner(copy.deepcopy(baseline), s, example) for s in SPARSITIES}
    protocol = LatencyProtocol(max_seconds=args.seconds)
    devices = {w: create_device(args.device, threads=args.threads, protocol=replace(protocol, warmup_seconds=w))
               for w in args.warmups}
    reference = devices[args.warmups[0]].deploy(baseline, example, PrecisionPlan("f32"))
    reference.measure_latency()  # the study's baseline measurement: the reference is warm from here on
    ratios = {(s, w): [] for s in SPARSITIES for w in args.warmups}
    seconds = {key: [] for key in ratios}
    for round_ in range(args.rounds):
        order = args.warmups if round_ % 2 == 0 else args.warmups[::-1]
        for sparsity in SPARSITIES:
            for warmup in order:
                candidate = devices[warmup].deploy(models[sparsity], example, PrecisionPlan("f32"))
                start = time.perf_counter()
                stats = candidate.measure_latency(reference)
                seconds[sparsity, warmup].append(time.perf_counter() - start)
                ratios[sparsity, warmup].append(stats.ratio)
                candidate.close()
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    reference.close()
    first = args.warmups[0]
    print(f"\n## warm-up: {args.model} on {args.device}, {args.threads} threads, limit {args.seconds} s, "
          f"{args.rounds} rounds\n")
    print("| pruned | warm-up s | median ratio | min | max | spread (max-min)/median | ÷ the first warm-up's median | "
          "measurement s (mean) |\n|---|---|---|---|---|---|---|---|")
    for sparsity in SPARSITIES:
        base = statistics.median(ratios[sparsity, first])
        for warmup in args.warmups:
            r = ratios[sparsity, warmup]
            m = statistics.median(r)
            print(f"| {sparsity:.0%} | {warmup} | {m:.3f} | {min(r):.3f} | {max(r):.3f} | {(max(r) - min(r)) / m:.1%} | "
                  f"{m / base:.3f} | {statistics.mean(seconds[sparsity, warmup]):.2f} |")


if __name__ == "__main__":
    main()
