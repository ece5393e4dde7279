"""Files that describe a trial's model outside edgetune: ONNX, and PyTorch weights in safetensors.

The pruned architecture is the original model with narrower convolutions; ``widths.json``
records every Conv2d's output channels so :func:`load_pruned` can rebuild it (NNI ModelSpeedup
on masks that keep the first channels) and load the weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from devices.openvino import export_onnx

from .models import create_model


def conv_widths(model: nn.Module) -> dict[str, int]:
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


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
                                  "conv_out_channels": conv_widths(model)}, indent=1))
    return [onnx_path, weights, widths]


def load_pruned(directory: Path) -> nn.Module:
    """Rebuild a trial's pruned PyTorch model from ``widths.json`` and ``weights.safetensors``."""
    from safetensors.torch import load_file

    from . import prune

    spec = json.loads((Path(directory) / "widths.json").read_text())
    model = create_model(spec["model"], spec["num_classes"]).eval()
    masks = {}
    for name, module in model.named_modules():
        width = spec["conv_out_channels"].get(name)
        if isinstance(module, nn.Conv2d) and width is not None and width < module.out_channels:
            mask = torch.zeros_like(module.weight)
            mask[:width] = 1
            masks[name] = {"weight": mask}
    if masks:
        prune.speedup(model, masks, torch.zeros(2, *spec["input_shape"]))
    model.load_state_dict(load_file(str(Path(directory) / "weights.safetensors")))
    return model.eval()
