"""How much repeated measurements of one model vary in one process: unpaired medians against the
paired latency a trial records.

    python -m bench.repeatability [--model resnet56] [--sparsity 0.5] [--repeats 10]

Deploys the baseline (random weights: latency does not depend on them) and a copy with every
layer group's inner width pruned by ``--sparsity`` on the OpenVINO CPU at f32, then measures
the pruned model ``--repeats`` times in turn, two ways, interleaved: unpaired (its own median by
the protocol) and paired with the baseline (what a trial records: the baseline's first median ×
the median ratio). Reports the median of the medians, the largest deviation of one repeat from it,
and the spread (max - min) / median.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from bench.common import parser as make_parser, pruned_inner
from edgetune.devices import PrecisionPlan, create_device
from edgetune.devices.protocol import LatencyProtocol
from edgetune.objectives.models import create_model


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0, help="the protocol's time limit (the default study's)")
    args = parser.parse_args()
    torch.manual_seed(0)
    baseline = create_model(args.model, 10).eval()
    example = torch.randn(2, 3, 32, 32)
    pruned = pruned_inner(copy.deepcopy(baseline), args.sparsity, example)
    device = create_device("openvino:CPU", protocol=LatencyProtocol(target_ci_rel=0.02, max_seconds=args.seconds))
    reference = device.deploy(baseline, example, PrecisionPlan("f32"))
    candidate = device.deploy(pruned.eval(), example, PrecisionPlan("f32"))
    reference_ms = reference.measure_latency().median_ms  # a study's baseline is measured once, like this
    unpaired, paired = [], []
    for _ in range(args.repeats):
        unpaired.append(candidate.measure_latency().median_ms)
        paired.append(reference_ms * candidate.measure_latency(reference).ratio)
    print(f"## repeatability: {args.model}, {args.sparsity:.0%} of each group's first convolutions pruned, "
          f"OpenVINO CPU f32, {args.repeats} repeats in one process\n")
    print("| measurement | median of the medians ms | min | max | largest deviation from it | spread (max-min)/median |\n"
          "|---|---|---|---|---|---|")
    for label, values in (("unpaired median", unpaired), ("paired with the baseline (recorded)", paired)):
        v = np.array(values)
        m = np.median(v)
        print(f"| {label} | {m:.3f} | {v.min():.3f} | {v.max():.3f} | {np.abs(v - m).max() / m:.1%} | {(v.max() - v.min()) / m:.1%} |")
    reference.close()
    candidate.close()


if __name__ == "__main__":
    main()
