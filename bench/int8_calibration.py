"""What NNCF's post-training int8 costs in a trial's deploy, and whether a cheaper calibration keeps Top-1.

    python -m bench.int8_calibration [--model resnet56] [--sparsity 0.5] [--rounds 2]

One pruned, fine-tuned model (as in bench/precision_plans.py), every group int8, quantized with
``nncf.quantize`` on the default study's 128 calibration images four ways, interleaved over
``--rounds``: statistics on single images (what edgetune does) or on batches of 32, each with and
without bias correction. Reports the median time of each and the Top-1 of the compiled int8
model on the validation set.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import parser as make_parser
from bench.precision_plans import pruned_model
from edgetune.devices.onnx_export import export_onnx
from edgetune.objectives.evaluate import topk_accuracy

VARIANTS = {"single images, bias correction (edgetune)": (1, True), "batches of 32, bias correction": (32, True),
            "single images, no bias correction": (1, False), "batches of 32, no bias correction": (32, False)}


def quantize(ov_model, calibration: np.ndarray, batch: int, bias_correction: bool):
    import nncf

    items = [calibration[i:i + batch] for i in range(0, len(calibration), batch)]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return nncf.quantize(ov_model, nncf.Dataset(items), subset_size=len(items), preset=nncf.QuantizationPreset.PERFORMANCE,
                             advanced_parameters=nncf.AdvancedQuantizationParameters(disable_bias_correction=not bias_correction))


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from edgetune.devices.openvino_core import openvino_core

    logging.getLogger("nncf").setLevel(logging.ERROR)
    spec, data, model, groups, source = pruned_model(args.model, args.sparsity)
    calibration = data.calibration_subset(spec["data.calibration_size"]).numpy().astype(np.float32)
    core = openvino_core()
    seconds = {name: [] for name in VARIANTS}
    top1 = {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_onnx(model.eval(), data.example_input(2), Path(tmp) / "model.onnx")
        for _ in range(args.rounds):
            for name, (batch, bias) in VARIANTS.items():
                ov_model = core.read_model(str(onnx))
                start = time.perf_counter()
                quantized = quantize(ov_model, calibration, batch, bias)
                seconds[name].append(time.perf_counter() - start)
                compiled = core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
                logits = np.concatenate([compiled(x[None])[0] for x in data.x_val.numpy()])
                top1[name] = topk_accuracy(logits, data.y_val.numpy())
    print(f"## NNCF int8 calibration: {args.model}, every group {args.sparsity:.0%} pruned and int8, "
          f"{len(calibration)} calibration images, baseline {source}, {args.rounds} rounds\n")
    first = next(iter(VARIANTS))
    print("| calibration | seconds (median) | vs edgetune's | Top-1 % |\n|---|---|---|---|")
    for name in VARIANTS:
        median = float(np.median(seconds[name]))
        print(f"| {name} | {median:.2f} | {median / float(np.median(seconds[first])):.2f}x | {top1[name]:.2f} |")


if __name__ == "__main__":
    main()
