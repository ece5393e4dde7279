"""Files that describe a trial's model outside edgetune: ONNX, and PyTorch weights in safetensors.

The pruned architecture is the original model with blocks removed (replaced by the identity) and
narrower layers; ``widths.json`` names the model, the removed blocks and every Conv2d's output
channels, and :func:`load_pruned` rebuilds it: the original model, the blocks removed, every
layer resized to the shapes in the weights file, then the weights loaded. That works whichever
engine pruned the model (NNI, Torch-Pruning).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from edgetune.devices.onnx_export import export_onnx

from .models import create_model
from .structure import remove_blocks


def conv_widths(model: nn.Module) -> dict[str, int]:
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def removed_blocks(model: nn.Module) -> list[str]:
    """Module paths replaced by the identity (a removed residual block)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Identity) and name]


def write_model_files(model: nn.Module, model_name: str, num_classes: int, example: torch.Tensor,
                      directory: Path) -> list[Path]:
    """``model.onnx`` (float), ``weights.safetensors`` and ``widths.json`` into ``directory``."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(model, example, directory / "model.onnx")
    weights = directory / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    widths = directory / "widths.json"
    widths.write_text(json.dumps({"model": model_name, "num_classes": num_classes, "input_shape": list(example.shape[1:]),
                                  "removed_blocks": removed_blocks(model), "conv_out_channels": conv_widths(model)},
                                 indent=1))
    return [onnx_path, weights, widths]


def resize_to(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Give every parameter and buffer the shape it has in ``state`` (in place), and keep the layers'
    own size attributes (channels, features, groups) consistent with them."""
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        depthwise = isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels == module.out_channels
        for table in (module._parameters, module._buffers):
            for key, tensor in table.items():
                saved = state.get(prefix + key)
                if tensor is not None and saved is not None and saved.shape != tensor.shape:
                    empty = torch.empty(saved.shape, dtype=tensor.dtype)
                    table[key] = nn.Parameter(empty, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty
        if isinstance(module, nn.Conv2d):
            module.out_channels = module.weight.shape[0]
            if depthwise:
                module.groups = module.out_channels
            module.in_channels = module.weight.shape[1] * module.groups
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and module.weight is not None:
            module.num_features = module.weight.shape[0]
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
    return model


def load_pruned(directory: Path) -> nn.Module:
    """Rebuild a trial's pruned PyTorch model from ``widths.json`` and ``weights.safetensors``."""
    from safetensors.torch import load_file

    spec = json.loads((Path(directory) / "widths.json").read_text())
    model = create_model(spec["model"], spec["num_classes"]).eval()
    remove_blocks(model, spec.get("removed_blocks", []))
    state = load_file(str(Path(directory) / "weights.safetensors"))
    resize_to(model, state)
    model.load_state_dict(state)
    return model.eval()
