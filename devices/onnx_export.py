"""ONNX export that keeps PyTorch module paths in node names, and the node-name prefix of a module.

The names are what lets a precision plan name layers by module path on a runtime that loads ONNX:
an NNCF ignored scope (OpenVINO adapter), the int8 prefixes sent to a device agent.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.utils import _pair


class WindowedAdaptiveAvgPool2d(nn.Module):
    """Adaptive average pooling as the mean of each output cell's window, with PyTorch's bounds
    (rows floor(i*H/O) to ceil((i+1)*H/O)). ONNX has no adaptive pooling, and the exporter writes one
    only when the output size divides the input: VGG's 7x7 from the 1x1 map of a 32-px image fails.
    The windows are fixed at export, where the image size is (only the batch axis is dynamic)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = _pair(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        oh, ow = (o or size for o, size in zip(self.output_size, (h, w)))
        x = torch.cat([x[..., i * h // oh: -(-(i + 1) * h // oh), :].mean(-2, keepdim=True) for i in range(oh)], -2)
        return torch.cat([x[..., j * w // ow: -(-(j + 1) * w // ow)].mean(-1, keepdim=True) for j in range(ow)], -1)


@contextlib.contextmanager
def _exportable_pooling(model: nn.Module):
    """Swap, for the export only, every adaptive average pooling to a size other than 1x1 for
    :class:`WindowedAdaptiveAvgPool2d` (same module path, so node names keep their scope)."""
    swapped = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.AdaptiveAvgPool2d) and _pair(module.output_size) != (1, 1):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, WindowedAdaptiveAvgPool2d(module.output_size))
            swapped.append((parent, child, module))
    try:
        yield model
    finally:
        for parent, child, module in swapped:
            setattr(parent, child, module)


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: Path) -> Path:
    """TorchScript-based ONNX export with a dynamic batch axis, module paths kept in names."""
    model = model.eval()
    with torch.no_grad(), _exportable_pooling(model):
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


def module_scopes(model: nn.Module) -> dict[str, str]:
    """Every named module's path -> its node-name prefix (:func:`onnx_scope`), for ``precision_of``."""
    return {name: onnx_scope(model, name) for name, _ in model.named_modules() if name}
