"""int8 with the scales QAT learned: quantize/dequantize ops in the model itself (``quantization = "qat-qdq"``).

NNI's ``QATQuantizer`` returns, for each quantized layer, the per-tensor symmetric int8 scale of its
input and of its weight that its fake quantization trained with. :func:`with_learned_int8` puts that
same fake quantization back into a copy of the model with PyTorch's own ops, which the ONNX exporter
writes as QuantizeLinear/DequantizeLinear pairs; OpenVINO runs such a graph in int8 as it is, so the
device calibrates nothing a second time (NNCF's post-training pass: most of an int8 deployment's
seconds) and the deployed model uses the scales its weights were trained for.

An input QAT never saw below zero (its tracked minimum, e.g. after a ReLU) is quantized as uint8 with
the same scale, as NNCF quantizes such activations: OpenVINO then runs the convolution on u8 with zero
point 0, where a signed int8 input costs it a zero-point compensation (about 10% of a ResNet's time,
BENCHMARKS.md). Values up to the int8 range are unchanged; the uint8 range only extends past it.

Each layer's weight is first rounded to the int8 grid its QAT forward used. A batch norm that
follows a layer is then folded into it, as OpenVINO would fold it anyway: scaling an output channel
by gamma/sigma scales its int8 grid by the same factor, so the folded weight is exactly per-channel
int8 with scale s*|gamma/sigma| and nothing changes numerically (an unfolded batch norm makes
OpenVINO rename the fused layer, and the per-group read-back of what runs in int8 loses it).
Conv/batch-norm pairs are found with ``torch.fx``; a model it cannot trace keeps its batch norms.
Module paths of the quantized layers are unchanged (a weight parametrization and an input
pre-hook), so ONNX scopes and read-back precisions are those of the plain model.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_eval

# ONNX's int8 QuantizeLinear saturates to [-128, 127]; NNI's symmetric int8 uses [-127, 127]: weights are
# rounded to NNI's grid first (exact), inputs beyond the tracked range are the only values that can differ.
QMIN, QMAX = -128, 127
NNI_QMAX = 127


class _FakeQuantize(nn.Module):
    def __init__(self, scale: float, unsigned: bool = False):
        super().__init__()
        self.scale = float(scale)  # a constant of the exported graph, not a buffer (no state-dict entry)
        self.range = (0, 255) if unsigned else (QMIN, QMAX)  # exported as a uint8 or int8 QuantizeLinear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, self.scale, 0, *self.range)


class _FakeQuantizePerChannel(nn.Module):
    def __init__(self, scales: torch.Tensor):
        super().__init__()
        self.register_buffer("scales", scales.detach().float())
        self.register_buffer("zero_points", torch.zeros(len(scales), dtype=torch.int32))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_channel_affine(weight, self.scales, self.zero_points, 0, QMIN, QMAX)


def _quantize_input(module: nn.Module, args: tuple) -> tuple:
    return (module.input_quantizer(args[0]), *args[1:])


def learned_scales(calibration_config: dict) -> dict[str, dict[str, float]]:
    """``{layer: {"input": scale, "weight": scale, "unsigned": bool}}`` from NNI's calibration config
    (JSON-safe); ``unsigned``: the input's tracked minimum was never below zero."""
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
            if target.startswith("_input_"):
                found["unsigned"] = bool(torch.as_tensor(config.get("tracked_min", -1.0)).min() >= 0)
        targets = sorted(set(found) - {"unsigned"})
        if targets != ["input", "weight"]:
            raise ValueError(f"{layer}: expected an input and a weight scale, got {targets}")
        scales[layer] = found
    return scales


def with_learned_int8(model: nn.Module, scales: dict[str, dict[str, float]]) -> nn.Module:
    """A copy of ``model`` in eval mode whose layers in ``scales`` fake-quantize their input and weight to int8
    as QAT did (batch norms after them folded in, see the module's docstring)."""
    model = copy.deepcopy(model).eval()
    norms = _following_batch_norms(model, set(scales))
    with torch.no_grad():
        for layer, scale in scales.items():
            module = model.get_submodule(layer)
            step = scale["weight"]
            module.weight.copy_(torch.clamp(torch.round(module.weight / step), -NNI_QMAX, NNI_QMAX) * step)
            if layer in norms:
                norm = model.get_submodule(norms[layer])
                gain = (norm.weight / torch.sqrt(norm.running_var + norm.eps)).abs().clamp_min(1e-12)
                module = fuse_conv_bn_eval(module, norm)
                _replace(model, layer, module)
                _replace(model, norms[layer], nn.Identity())
                quantizer = _FakeQuantizePerChannel(step * gain)
            else:
                quantizer = _FakeQuantize(step)
            parametrize.register_parametrization(module, "weight", quantizer, unsafe=True)
            module.input_quantizer = _FakeQuantize(scale["input"], scale.get("unsigned", False))  # not given: signed
            module.register_forward_pre_hook(_quantize_input)
    return model


def _following_batch_norms(model: nn.Module, layers: set[str]) -> dict[str, str]:
    """Layer -> the BatchNorm2d that alone consumes its output (by torch.fx; none if it cannot trace)."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any tracing failure: keep the batch norms (still exact, see above)
        return {}
    modules = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op == "call_module" and node.target in layers and isinstance(modules[node.target], nn.Conv2d) \
                and len(node.users) == 1:
            user = next(iter(node.users))
            if user.op == "call_module" and isinstance(modules.get(user.target), nn.BatchNorm2d):
                pairs[node.target] = user.target
    return pairs


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
