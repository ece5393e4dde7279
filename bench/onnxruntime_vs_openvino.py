"""The same models on ``openvino:CPU`` and ``onnxruntime:CPU``, side by side, f32 and int8.

    python -m bench.onnxruntime_vs_openvino [--models resnet20,resnet56] [--threads 1] [--rounds 3]

For each model (untrained: latency does not depend on the weights' values), at a pinned thread
count, four deployments per runtime: ``f32``; ``int8 qdq``, every convolution and the classifier
with their own quantize/dequantize ops (objectives/qdq.py, what ``quantization = "qat-qdq"`` deploys;
max-abs scales from calibration images stand in for QAT's); ``int8 ptq``, the runtime's own
post-training quantization of every layer group (NNCF on OpenVINO, ``quantize_static`` on ONNX
Runtime). Printed per model and route, medians over ``--rounds``: ONNX Runtime's latency as a
multiple of OpenVINO's (the two paired by the protocol's alternating segments, so the host's drift
cancels), each runtime's int8 latency as a multiple of its own f32, and the layers each runs in int8
(read back from the compiled / optimised graph). Ratios, not milliseconds: the host is shared.
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from torch import nn

from edgetune.devices import PrecisionPlan, create_device
from edgetune.devices.protocol import LatencyProtocol, measure_paired
from edgetune.objectives.data import load_data
from edgetune.objectives.models import create_model
from edgetune.objectives.qdq import with_learned_int8

RUNTIMES = ("openvino:CPU", "onnxruntime:CPU")


def max_abs_scales(model: nn.Module, layers: list[str], images: torch.Tensor) -> dict[str, dict]:
    """Per layer, the symmetric int8 scales of its input and weight from their largest magnitude."""
    seen: dict[str, list[float]] = {name: [0.0, 0.0] for name in layers}  # max |x|, min x
    hooks = [model.get_submodule(name).register_forward_pre_hook(
        lambda m, args, name=name: seen[name].__setitem__(slice(None), [max(seen[name][0], args[0].abs().max().item()),
                                                                          min(seen[name][1], args[0].min().item())]))
        for name in layers]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return {name: {"input": max(seen[name][0], 1e-6) / 127, "weight": model.get_submodule(name).weight.abs().max().item() / 127,
                   "unsigned": seen[name][1] >= 0} for name in layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet20,resnet56")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    protocol = LatencyProtocol(max_seconds=10.0)
    data = load_data("digits")
    example, calibration = data.example_input(2), data.calibration_subset(128)
    devices = {name: create_device(name, threads=args.threads, protocol=protocol) for name in RUNTIMES}
    print(f"{devices['onnxruntime:CPU'].info().full_name}; {', '.join(d.info().runtime for d in devices.values())}; "
          f"{args.threads} thread(s)")
    print("model     route     ORT/OV   OV int8/f32  ORT int8/f32  int8 layers OV  int8 layers ORT  ORT top-1 agrees")
    for model_name in args.models.split(","):
        model = create_model(model_name, data.num_classes).eval()
        layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        groups = tuple(n for n, _ in model.named_children() if any(layer.startswith(n) for layer in layers))
        qdq = with_learned_int8(model, max_abs_scales(model, layers, calibration))
        plans = {"f32": (model, PrecisionPlan()),
                 "int8 qdq": (qdq, PrecisionPlan("f32", groups, int8_scales="model")),
                 "int8 ptq": (model, PrecisionPlan("f32", groups, calibration.numpy()))}
        deployed = {(route, name): device.deploy(m, example, plan)
                    for route, (m, plan) in plans.items() for name, device in devices.items()}
        images = data.x_val[:200].numpy()
        for route in plans:
            ov, ort = deployed[(route, "openvino:CPU")], deployed[(route, "onnxruntime:CPU")]
            cross, ov_gain, ort_gain = [], [], []
            for _ in range(args.rounds):
                cross.append(measure_paired(ov.runner(), ort.runner(), protocol)[2])
                if route != "f32":
                    ov_gain.append(measure_paired(deployed[("f32", "openvino:CPU")].runner(), ov.runner(), protocol)[2])
                    ort_gain.append(measure_paired(deployed[("f32", "onnxruntime:CPU")].runner(), ort.runner(), protocol)[2])
            agree = (ort.predict(images).argmax(1) == ov.predict(images).argmax(1)).mean() * 100
            median = lambda v: f"{statistics.median(v):.2f}" if v else "-"  # noqa: E731
            print(f"{model_name:9s} {route:9s} {median(cross):>6s}   {median(ov_gain):>11s}  {median(ort_gain):>12s}  "
                  f"{ov.precision_used.get('int8', 0):>3d}/{sum(ov.precision_used.values()):<10d}  "
                  f"{ort.precision_used.get('int8', 0):>3d}/{sum(ort.precision_used.values()):<12d}  {agree:5.1f}%",
                  flush=True)
        for deployment in deployed.values():
            deployment.close()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
