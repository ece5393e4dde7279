"""ONNX export that keeps PyTorch module paths in node names, and the node-name prefix of a module.

The names are what lets a precision plan name layers by module path on a runtime that loads ONNX:
an NNCF ignored scope (OpenVINO adapter), the int8 prefixes sent to a device agent.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: Path) -> Path:
    """TorchScript-based ONNX export with a dynamic batch axis, module paths kept in names."""
    model = model.eval()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example_input,),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )
    return path


def onnx_scope(model: nn.Module, module_path: str) -> str:
    """The node-name prefix the TorchScript exporter gives to everything inside ``module_path``.

    Each level is named relative to its nearest ancestor that is not a container (Sequential,
    ModuleList): ``layer1.0.conv1`` -> ``/layer1/layer1.0/conv1/``.
    """
    parts = module_path.split(".")
    names, anchor, module = [], 0, model
    for i, part in enumerate(parts):
        if not isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            anchor = i
        names.append(".".join(parts[anchor : i + 1]))
        module = getattr(module, part) if not part.isdigit() else module[int(part)]
    return "/" + "/".join(names) + "/"
