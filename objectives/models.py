"""Model registry (the shape of timm's): CIFAR ResNets here, every torchvision classifier by name.

    >>> model = create_model("resnet56", num_classes=10)
    >>> "resnet18" in list_models()
    True
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .cifar_resnet import CifarResNet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class ModelError(ValueError):
    """Unknown model name or a model that cannot be built as asked."""


def register_model(name: str):
    def wrap(factory):
        _REGISTRY[name] = factory
        return factory

    return wrap


for _depth in (20, 32, 44, 56):
    register_model(f"resnet{_depth}")(lambda num_classes=10, _d=_depth: CifarResNet(_d, num_classes))


def _torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def list_models() -> list[str]:
    return sorted(set(_REGISTRY) | set(_torchvision_names()))


def create_model(name: str, num_classes: int) -> nn.Module:
    """A freshly initialised (untrained) classifier; weights never come from a hub."""
    if name in _REGISTRY:
        return _REGISTRY[name](num_classes=num_classes)
    if name in _torchvision_names():
        import torchvision

        try:
            return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        except (TypeError, ValueError) as error:
            raise ModelError(f"model {name!r} cannot be built with {num_classes} classes: {error}") from None
    raise ModelError(f"unknown model {name!r}; CIFAR ResNets: {', '.join(sorted(_REGISTRY))}; "
                     "or any torchvision classifier (`tune models` lists them)")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_and_params(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """FLOPs (multiply-accumulates of conv/linear, per sample) and parameters, by NNI's counter."""
    from nni.compression.utils.counter import count_flops_params

    was_training = model.training
    model.eval()
    flops, params, _ = count_flops_params(model, example_input[:1], verbose=False)
    model.train(was_training)
    return int(flops), int(params)
