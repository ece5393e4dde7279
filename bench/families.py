"""Do the depthwise, grouped and shuffled families come out smaller and faster when pruned?

    python -m bench.families [--share 0.5] [--families mobilenet_v2 ...]

For each torchvision family at the digits task's shape (10 classes, 32 px): every layer group's
inner width kept at ``--share`` (in whole multiples of the device's channel granularity, as a
trial's), the channels chosen by NNI's L1 criterion and removed by the engine a trial would use
(``prune_engine``); both models deployed on the device at f32. Printed per family: parameters,
FLOPs, the convolutions' output channels in the deployed OpenVINO IR, and the pruned model's
latency as a ratio to the unpruned one's, timed in pairs by edgetune's protocol (weights are not
trained: latency depends on the structure, not on the weights' values).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from bench.common import parser as make_parser
from edgetune.devices import create_device
from edgetune.devices.openvino_core import openvino_core
from edgetune.objectives import prune
from edgetune.objectives.groups import derive_groups
from edgetune.objectives.models import count_params, create_model, flops_and_params

FAMILIES = ("mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "shufflenet_v2_x1_0")
EXAMPLE = torch.rand(2, 3, 32, 32)


def ir_conv_channels(deployment) -> int:
    """Output channels of every convolution in the deployed IR (as saved for export)."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = next(p for p in deployment.save(Path(tmp)) if p.suffix == ".xml")
        model = openvino_core().read_model(xml)
        return sum(op.get_output_partial_shape(0)[1].get_length() for op in model.get_ops()
                   if op.get_type_name() in ("Convolution", "GroupConvolution"))


def pruned(name: str, share: float, multiple: int):
    model = create_model(name, 10).eval()
    groups = derive_groups(model)
    widths = prune.group_widths(prune.out_channels(model, groups), groups)
    asked = {g: max(multiple, round(w * share / multiple) * multiple) for g, w in widths.items()}
    keep = prune.kept_channels(model, groups, asked, multiple)
    masks = prune.compute_masks(model, prune.config_list(model, groups, keep, EXAMPLE), "l1")
    engine = prune.remove_channels(model, masks, EXAMPLE) if masks else None
    return model, engine


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--share", type=float, default=0.5, help="share of every group's inner width kept")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--device", default="openvino:CPU")
    args = parser.parse_args()
    device = create_device(args.device)
    info = device.info()
    multiple = info.granularity("f32")
    print(f"device: {info.name} ({info.full_name}, {info.runtime}), widths in multiples of {multiple}, "
          f"share kept {args.share}")
    print("| family | engine | params | FLOPs | IR conv channels | latency × unpruned (±95%) |")
    print("|---|---|---|---|---|---|")
    for name in args.families:
        base = create_model(name, 10).eval()
        model, engine = pruned(name, args.share, multiple)
        base_dep, model_dep = device.deploy(base, EXAMPLE), device.deploy(model, EXAMPLE)
        try:
            stats = model_dep.measure_latency(base_dep)
            channels = (ir_conv_channels(base_dep), ir_conv_channels(model_dep))
        finally:
            base_dep.close()
            model_dep.close()
        flops = (flops_and_params(base, EXAMPLE)[0], flops_and_params(model, EXAMPLE)[0])
        print(f"| {name} | {engine} | {count_params(base):,} → {count_params(model):,} | {flops[0] / 1e6:.1f} M → "
              f"{flops[1] / 1e6:.1f} M | {channels[0]:,} → {channels[1]:,} | {stats.ratio:.3f} "
              f"(±{stats.ratio_ci95_rel * 100:.1f}%) |", flush=True)


if __name__ == "__main__":
    main()
