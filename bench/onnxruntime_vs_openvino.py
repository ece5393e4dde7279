"""The same models on ``openvino:CPU`` and ``onnxruntime:CPU``, side by side, f32 and int8.

    python -m bench.onnxruntime_vs_openvino [--models resnet20,resnet56] [--threads 1] [--rounds 3]
    python -m bench.onnxruntime_vs_openvino --exports EXPORTS [--threads 1] [--rounds 3]

For each model (untrained: latency does not depend on the weights' values), at a pinned thread
count, three deployments per runtime: ``f32``; ``int8 qdq``, every convolution and the classifier
with their own quantize/dequantize ops (objectives/qdq.py, what ``quantization = "qat-qdq"`` deploys;
max-abs scales from calibration images stand in for QAT's; ONNX Runtime completes the graph with
output scales from the same images, devices/onnx_qdq.py); ``int8 ptq``, the runtime's own
post-training quantization of every layer group (NNCF on OpenVINO, ``quantize_static`` on ONNX
Runtime). Printed per model and route, medians over ``--rounds`` (and their range): ONNX Runtime's
latency as a multiple of OpenVINO's (the two paired by the protocol's alternating segments, so the
host's drift cancels), each runtime's int8 latency as a multiple of its own f32, and the layers each
runs in int8 (read back from the compiled / optimised graph). Ratios, not milliseconds: the host is shared.

``--exports``: trained models instead, a study's front as ``tune export STUDY --pareto --out EXPORTS``
writes it from a study on ``onnxruntime:CPU``; each trial's ``deployed/model.onnx`` (QAT's scales) and
float ``model.onnx``, the same files on both runtimes, with their Top-1 on each (see compare_front).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

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


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})" if values else "-"


def _int8_layers(deployment) -> str:
    return f"{deployment.precision_used.get('int8', 0)}/{sum(deployment.precision_used.values())}"


def compare_models(devices: dict, rounds: int, protocol: LatencyProtocol, model_names: list[str]) -> None:
    """Untrained models, three routes per runtime (the module's docstring)."""
    data = load_data("digits")
    example, calibration = data.example_input(2), data.calibration_subset(128)
    print("model     route      ORT/OV (min-max)  OV int8/f32 (m-M)  ORT int8/f32 (m-M)  int8 layers OV  int8 layers ORT  "
          "ORT top-1 agrees")
    for model_name in model_names:
        model = create_model(model_name, data.num_classes).eval()
        layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        groups = tuple(n for n, _ in model.named_children() if any(layer.startswith(n) for layer in layers))
        qdq = with_learned_int8(model, max_abs_scales(model, layers, calibration))
        plans = {"f32": (model, PrecisionPlan()),
                 # the calibration images: ONNX Runtime's output scales where QAT has none (devices/onnx_qdq.py)
                 "int8 qdq": (qdq, PrecisionPlan("f32", groups, calibration.numpy(), int8_scales="model")),
                 "int8 ptq": (model, PrecisionPlan("f32", groups, calibration.numpy()))}
        deployed = {(route, name): device.deploy(m, example, plan)
                    for route, (m, plan) in plans.items() for name, device in devices.items()}
        images = data.x_val[:200].numpy()
        for route in plans:
            ov, ort = deployed[(route, "openvino:CPU")], deployed[(route, "onnxruntime:CPU")]
            cross, ov_gain, ort_gain = [], [], []
            for _ in range(rounds):
                cross.append(measure_paired(ov.runner(), ort.runner(), protocol)[2])
                if route != "f32":
                    ov_gain.append(measure_paired(deployed[("f32", "openvino:CPU")].runner(), ov.runner(), protocol)[2])
                    ort_gain.append(measure_paired(deployed[("f32", "onnxruntime:CPU")].runner(), ort.runner(), protocol)[2])
            agree = (ort.predict(images).argmax(1) == ov.predict(images).argmax(1)).mean() * 100
            print(f"{model_name:9s} {route:9s} {_median(cross):>17s}  {_median(ov_gain):>17s}  {_median(ort_gain):>17s}  "
                  f"{_int8_layers(ov):>14s}  {_int8_layers(ort):>15s}  {agree:5.1f}%", flush=True)
        for deployment in deployed.values():
            deployment.close()


def compare_front(devices: dict, rounds: int, protocol: LatencyProtocol, exports: Path) -> None:
    """Each trial folder of ``exports`` (``tune export --pareto`` of a study on ``onnxruntime:CPU``): its
    ``deployed/model.onnx`` (QAT's Q/DQ graph as ONNX Runtime ran it, or float) and its float ``model.onnx``,
    the same files on both runtimes: paired latency, each runtime's deployed/float latency, the layers each
    runs in int8, Top-1 on the study's validation images on each (and as the study recorded it)."""
    import onnx

    folders = sorted(exports.glob("trial-*"), key=lambda f: int(f.name.split("-")[1]))
    if not folders:
        raise SystemExit(f"no trial-* folders in {exports} (tune export STUDY --pareto --out {exports})")
    print("trial  int8 groups            ORT/OV (min-max)  OV dep/f32 (m-M)   ORT dep/f32 (m-M)  int8 OV  int8 ORT  "
          "Top-1 OV  Top-1 ORT  (recorded)")
    for folder in folders:
        manifest = json.loads((folder / "manifest.json").read_text())
        data = load_data(manifest["input"]["name"])
        shape = tuple(data.x_val.shape[1:])
        path = folder / "deployed" / "model.onnx"
        int8 = any(node.op_type == "QuantizeLinear" for node in onnx.load(str(path)).graph.node)
        plan, prefixes = (PrecisionPlan("f32", ("/",), int8_scales="model"), ["/"]) if int8 else (PrecisionPlan(), [])
        deployed = {name: device.deploy_onnx(path, shape, plan, prefixes) for name, device in devices.items()}
        floats = {name: device.deploy_onnx(folder / "model.onnx", shape, PrecisionPlan(), [])
                  for name, device in devices.items()}
        ov, ort = deployed["openvino:CPU"], deployed["onnxruntime:CPU"]
        cross, ov_gain, ort_gain = [], [], []
        for _ in range(rounds):
            cross.append(measure_paired(ov.runner(), ort.runner(), protocol)[2])
            ov_gain.append(measure_paired(floats["openvino:CPU"].runner(), ov.runner(), protocol)[2])
            ort_gain.append(measure_paired(floats["onnxruntime:CPU"].runner(), ort.runner(), protocol)[2])
        images, labels = data.x_val.numpy(), data.y_val.numpy()
        top1 = {name: (d.predict(images).argmax(1) == labels).mean() * 100 for name, d in deployed.items()}
        groups = ",".join(g for g, p in manifest["metrics"].get("precision_plan", {}).items() if p == "int8") or "-"
        print(f"{manifest['trial']:<6d} {groups:20s} {_median(cross):>17s}  {_median(ov_gain):>17s}  "
              f"{_median(ort_gain):>17s}  {_int8_layers(ov):>7s}  {_int8_layers(ort):>8s}  {top1['openvino:CPU']:8.2f}  "
              f"{top1['onnxruntime:CPU']:9.2f}  ({manifest['metrics']['top1']:.2f})", flush=True)
        for deployment in (*deployed.values(), *floats.values()):
            deployment.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet20,resnet56")
    parser.add_argument("--exports", type=Path, help="measure these exported trials instead (tune export --pareto "
                                                          "of a study on onnxruntime:CPU)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    protocol = LatencyProtocol(max_seconds=10.0)
    devices = {name: create_device(name, threads=args.threads, protocol=protocol) for name in RUNTIMES}
    print(f"{devices['onnxruntime:CPU'].info().full_name}; {', '.join(d.info().runtime for d in devices.values())}; "
          f"{args.threads} thread(s); {args.rounds} round(s)")
    if args.exports:
        compare_front(devices, args.rounds, protocol, args.exports)
    else:
        compare_models(devices, args.rounds, protocol, args.models.split(","))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
