"""Does pruning lower the inference memory the device measures, and how repeatable is the figure?

    python -m bench.memory [--model resnet56] [--threads 1] [--rounds 5] [--sparsities 0 0.25 0.5 0.75]

One model (random weights: memory depends on the structure and the precisions, not on the
weights' values), pruned uniformly at each sparsity: every residual stream and every layer group's
inner width keeps ``1 - sparsity`` of its channels (in whole multiples of the device's channel
granularity, as a trial's widths), the channels chosen by L1 as a trial's; depth unchanged. Each
model is deployed on openvino:CPU at f32 and with every layer int8 (NNCF, random calibration
images), and its ``memory_bytes`` (devices/memory_probe.py: peak resident memory that reading,
compiling and running it adds to a fresh process) measured ``--rounds`` times in interleaved
rounds (each round measures every variant once, so drift of the host spreads over all of them).

Printed: parameters, IR size on disk, the median memory and its range over the rounds, the median
resident memory once the runs are done (``settled``: below the peak only where something was given
back to the system; what the allocator frees but keeps still counts), the ratio of the median to the
unpruned model's at the same precision, and the probe's wall time (a child process each).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import parser as make_parser
from edgetune.devices import PrecisionPlan, create_device
from edgetune.devices.memory_probe import probe_all
from edgetune.objectives import prune, structure
from edgetune.objectives.groups import OTHER, derive_groups
from edgetune.objectives.models import count_params, create_model
from edgetune.objectives.pipeline import int8_modules

EXAMPLE = torch.rand(2, 3, 32, 32)
SHAPE = (1, 3, 32, 32)


def pruned(name: str, sparsity: float, multiple: int) -> tuple[torch.nn.Module, list]:
    """The model with every stream and inner width at ``1 - sparsity`` (rounded up to ``multiple``)."""
    torch.manual_seed(0)
    model = create_model(name, 10).eval()
    groups = derive_groups(model)
    if sparsity == 0:
        return model, groups
    share = 1 - sparsity
    stages = structure.residual_stages(model)
    structure.prune_streams(model, stages, {s.name: prune.aligned(s.stream_width, share, multiple) for s in stages},
                            EXAMPLE, "l1")
    widths = prune.group_widths(prune.out_channels(model, groups), groups)
    keep = prune.kept_channels(model, groups, {g: prune.aligned(w, share, multiple) for g, w in widths.items()}, multiple)
    masks = prune.compute_masks(model, prune.config_list(model, groups, keep, EXAMPLE), "l1")
    if masks:
        prune.remove_channels(model, masks, EXAMPLE)
    return model, groups


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--threads", type=int, default=1, help="OpenVINO inference threads (0: all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    args = parser.parse_args()
    device = create_device("openvino:CPU", threads=args.threads)
    info = device.info()
    multiple = info.granularity("f32")
    calibration = np.random.default_rng(0).random((64, *SHAPE[1:]), dtype=np.float32)
    print(f"device: {info.name} ({info.full_name}, {info.runtime}), threads {args.threads}, widths in multiples of "
          f"{multiple}, model {args.model} (random weights), {args.rounds} interleaved rounds", flush=True)
    variants = []  # (sparsity, precision, params, size_bytes, xml, config)
    with tempfile.TemporaryDirectory() as tmp:
        for sparsity in args.sparsities:
            model, groups = pruned(args.model, sparsity, multiple)
            every = int8_modules(model, groups, frozenset([g.name for g in groups] + [OTHER]))
            for precision, plan in (("f32", PrecisionPlan("f32")),
                                    ("int8", PrecisionPlan("f32", tuple(every), calibration))):
                deployment = device.deploy(model, EXAMPLE, plan)
                folder = Path(tmp) / f"{sparsity}-{precision}"
                xml = next(p for p in deployment.save(folder) if p.suffix == ".xml")
                variants.append((sparsity, precision, count_params(model), deployment.size_bytes, xml,
                                 device.compile_config("f32")))
                deployment.close()
        found: dict[int, list[dict]] = {i: [] for i in range(len(variants))}
        for _ in range(args.rounds):
            for i, (*_, xml, config) in enumerate(variants):
                start = time.perf_counter()
                result = probe_all(xml, SHAPE, config)
                found[i].append({**result, "wall": time.perf_counter() - start})
    medians = {i: statistics.median(r["memory_bytes"] for r in found[i]) for i in found}
    reference = {v[1]: medians[i] for i, v in enumerate(variants) if v[0] == args.sparsities[0]}
    print("| sparsity | precision | params | IR size | memory MB (median) | range MB | settled MB | × unpruned | probe s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, (sparsity, precision, params, size, *_) in enumerate(variants):
        memory = [r["memory_bytes"] / 1e6 for r in found[i]]
        settled = statistics.median(r["settled_bytes"] for r in found[i]) / 1e6
        wall = statistics.median(r["wall"] for r in found[i])
        print(f"| {sparsity:.2f} | {precision} | {params:,} | {size / 1e6:.2f} MB | {statistics.median(memory):.2f} | "
              f"{min(memory):.2f}–{max(memory):.2f} | {settled:.2f} | {medians[i] / reference[precision]:.3f} | "
              f"{wall:.2f} |", flush=True)


if __name__ == "__main__":
    main()
