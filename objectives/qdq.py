"""int8 with the scales QAT learned: quantize/dequantize ops in the model itself (``quantization = "qat-qdq"``).

NNI's ``QATQuantizer`` returns, for each quantized layer, the per-tensor symmetric int8 scale of its
input and of its weight that its fake quantization trained with. :func:`with_learned_int8` puts that
same fake quantization back into a copy of the model with PyTorch's own ops, which the ONNX exporter
writes as QuantizeLinear/DequantizeLinear pairs; OpenVINO runs such a graph in int8 as it is, so the
device calibrates nothing a second time (NNCF's post-training pass: most of an int8 deployment's
seconds) and the deployed model uses the scales its weights were trained for.

The module tree is unchanged (a weight parametrization and a forward pre-hook per layer), so module
paths, ONNX scopes and read-back precisions are those of the plain model.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

# ONNX's int8 QuantizeLinear saturates to [-128, 127]; NNI's symmetric int8 uses [-127, 127]. With
# NNI's scale (the tracked absolute maximum / 127) only values beyond the tracked range can differ.
QMIN, QMAX = -128, 127


class _FakeQuantize(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = float(scale)  # a constant of the exported graph, not a buffer (no state-dict entry)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, self.scale, 0, QMIN, QMAX)


def _quantize_input(module: nn.Module, args: tuple) -> tuple:
    return (module.input_quantizer(args[0]), *args[1:])


def learned_scales(calibration_config: dict) -> dict[str, dict[str, float]]:
    """``{layer: {"input": scale, "weight": scale}}`` from NNI's calibration config (JSON-safe)."""
    scales = {}
    for layer, targets in calibration_config.items():
        found = {}
        for target, config in targets.items():
            if config.get("quant_dtype") != "int8" or config.get("quant_scheme") != "symmetric":
                raise ValueError(f"{layer}.{target}: only symmetric int8 is exported, not {config.get('quant_scheme')} "
                                 f"{config.get('quant_dtype')}")
            scale = config["scale"]
            if torch.is_tensor(scale) and scale.numel() != 1:
                raise ValueError(f"{layer}.{target}: only per-tensor scales are exported")
            found["weight" if target == "weight" else "input" if target.startswith("_input_") else target] = float(scale)
        if set(found) != {"input", "weight"}:
            raise ValueError(f"{layer}: expected an input and a weight scale, got {sorted(found)}")
        scales[layer] = found
    return scales


def with_learned_int8(model: nn.Module, scales: dict[str, dict[str, float]]) -> nn.Module:
    """A copy of ``model`` whose layers in ``scales`` fake-quantize their input and weight to int8."""
    model = copy.deepcopy(model).eval()
    for layer, scale in scales.items():
        module = model.get_submodule(layer)
        parametrize.register_parametrization(module, "weight", _FakeQuantize(scale["weight"]), unsafe=True)
        module.input_quantizer = _FakeQuantize(scale["input"])
        module.register_forward_pre_hook(_quantize_input)
    return model
