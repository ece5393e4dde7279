"""Channel granularity: latency of a convolution pair against the number of channels between them.

    python -m bench.granularity [--device openvino:CPU] [--stream 64] [--size 8] [--step 2] [--rounds 3]

Pruning a block's inner convolution changes the channels between two convolutions, so that is
what is timed: ``--pairs`` pairs of 3x3 convolutions ``stream -> c -> stream`` at ``--size`` x
``--size``, for every inner width ``c`` from ``--step`` to ``stream``, at f32 and at int8 (where
the device runs it). Each width is timed paired with the full-width model (the protocol's
alternating segments), ``--rounds`` times in an interleaved order, and the median ratio is
printed: a staircase whose steps are the device's channel granularity. Then, for g in 2..32, the
share of the widths between two multiples of g that are no faster (within ``--tolerance``) than
the multiple above them: keeping such a width instead of that multiple buys nothing. The last
lines give, per precision, the largest g with at least 75% of its in-between widths dominated.
"""
from __future__ import annotations

import math
import sys

import numpy as np
import torch
from torch import nn

from bench.common import parser as make_parser
from edgetune.devices import PrecisionPlan, create_device
from edgetune.devices.protocol import LatencyProtocol


def conv_pairs(stream: int, inner: int, pairs: int) -> nn.Module:
    layers = []
    for _ in range(pairs):
        layers += [nn.Conv2d(stream, inner, 3, padding=1, bias=False), nn.BatchNorm2d(inner), nn.ReLU(),
                   nn.Conv2d(inner, stream, 3, padding=1, bias=False), nn.BatchNorm2d(stream), nn.ReLU()]
    return nn.Sequential(*layers).eval()


def dominated_share(ratios: dict[int, float], g: int, tolerance: float) -> float:
    """Of the widths that are not multiples of ``g``, the share no faster (within ``tolerance``) than
    the next multiple of ``g`` up: keeping such a width instead of that multiple buys nothing."""
    widths = sorted(ratios)
    between = [c for c in widths if c % g and math.ceil(c / g) * g in ratios]
    if not between:
        return math.nan
    return sum(ratios[c] >= ratios[math.ceil(c / g) * g] * (1 - tolerance) for c in between) / len(between)


def implied_granularity(ratios: dict[int, float], tolerance: float, share: float = 0.75) -> int:
    """The largest g in (2, 4, 8, 16, 32) whose in-between widths are at least ``share`` dominated (else 1)."""
    return max([g for g in (2, 4, 8, 16, 32) if dominated_share(ratios, g, tolerance) >= share], default=1)


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--device", default="openvino:CPU")
    parser.add_argument("--stream", type=int, default=64, help="channels in and out of each pair")
    parser.add_argument("--size", type=int, default=8, help="feature map height and width")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--step", type=int, default=2, help="inner widths timed: step, 2*step, ..., stream")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=1.0, help="the protocol's time limit per measurement")
    parser.add_argument("--tolerance", type=float, default=0.03)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = create_device(args.device, threads=args.threads,
                           protocol=LatencyProtocol(target_ci_rel=0.01, max_seconds=args.seconds, min_segments=10))
    info = device.info()
    example = torch.randn(2, args.stream, args.size, args.size)
    calibration = torch.randn(32, args.stream, args.size, args.size).numpy()
    widths = list(range(args.step, args.stream + 1, args.step))
    if widths[-1] != args.stream:
        widths.append(args.stream)
    precisions = [p for p in ("f32", "int8") if p in info.precisions]
    every_layer = tuple(str(i) for i in range(6 * args.pairs))  # int8: the whole model
    plans = {"f32": PrecisionPlan("f32"), "int8": PrecisionPlan("f32", every_layer, calibration)}
    results: dict[str, dict[int, list[float]]] = {p: {c: [] for c in widths} for p in precisions}
    full_ms: dict[str, float] = {}
    for precision in precisions:
        plan = plans[precision]
        reference = device.deploy(conv_pairs(args.stream, args.stream, args.pairs), example, plan)
        full_ms[precision] = reference.measure_latency().median_ms
        deployed = {c: device.deploy(conv_pairs(args.stream, c, args.pairs), example, plan) for c in widths}
        for round_index in range(args.rounds):
            order = widths if round_index % 2 == 0 else widths[::-1]
            for c in order:
                results[precision][c].append(deployed[c].measure_latency(reference).ratio)
            print(f"{precision}: round {round_index + 1}/{args.rounds} done", file=sys.stderr)
        for deployment in deployed.values():
            deployment.close()
        reference.close()
    print(f"## channel granularity: {info.full_name}, {info.runtime}, {args.device}, {info.threads} threads\n")
    print(f"{args.pairs} pairs of 3x3 convolutions {args.stream} -> c -> {args.stream} at {args.size}x{args.size}, "
          f"latency relative to c = {args.stream} (median of {args.rounds} paired rounds); full width: "
          + ", ".join(f"{p} {full_ms[p]:.3f} ms" for p in precisions) + "\n")
    print("| c | " + " | ".join(precisions) + " |\n|---|" + "---|" * len(precisions))
    medians = {p: {c: float(np.median(results[p][c])) for c in widths} for p in precisions}
    for c in widths:
        print(f"| {c} | " + " | ".join(f"{medians[p][c]:.3f}" for p in precisions) + " |")
    print()
    print("| g | " + " | ".join(f"{p}: widths between multiples of g no faster than the next multiple" for p in precisions)
          + " |\n|---|" + "---|" * len(precisions))
    for g in (2, 4, 8, 16, 32):
        if g < args.stream:
            shares = [dominated_share(medians[p], g, args.tolerance) for p in precisions]
            if not any(math.isnan(v) for v in shares):
                print(f"| {g} | " + " | ".join(f"{v:.0%}" for v in shares) + " |")
    print()
    for precision in precisions:
        print(f"granularity {precision}: {implied_granularity(medians[precision], args.tolerance)}")


if __name__ == "__main__":
    main()
