"""Model registry (the shape of timm's): CIFAR ResNets here, every torchvision classifier by name,
and the user's own model by reference.

    >>> model = create_model("resnet56", num_classes=10)
    >>> "resnet18" in list_models()
    True

A reference names a factory the way uvicorn and entry points do: ``package.module:factory``
(imported from the current folder or the installed packages) or ``path/to/file.py:factory``.
The factory is called with ``num_classes`` when it accepts it (else with nothing) and must
return an ``nn.Module``. :func:`source_sha256` fingerprints the code, so a study can tell when
the file behind its model changed.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .cifar_resnet import CifarResNet
from .errors import first_line

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


#: torchvision families ``tune models`` does not offer: vit and swin are attention and Linear layers with no
#: convolution group to prune (``tune groups``: no prunable layer); maxvit's 7×7 window grid rejects
#: any input below 224 px (studies run at 32 px unless data.image_size says otherwise).
NOT_COMPRESSIBLE = ("vit_", "swin_", "maxvit_")


def list_models() -> list[str]:
    """The names ``--model`` takes that edgetune can compress (:data:`NOT_COMPRESSIBLE` left out)."""
    return sorted(set(_REGISTRY) | {n for n in _torchvision_names() if not n.startswith(NOT_COMPRESSIBLE)})


def is_reference(name: str) -> bool:
    """``module:factory`` or ``file.py:factory`` (a registry name has no colon)."""
    module, sep, factory = name.rpartition(":")
    return bool(sep and module and factory)


def _module_of(reference: str):
    """The module of ``source:factory``, or of ``source`` alone."""
    source = reference.rpartition(":")[0] or reference
    try:
        if not source.endswith(".py"):
            if os.getcwd() not in sys.path:  # as uvicorn: a module in the current folder is found
                sys.path.insert(0, os.getcwd())
            return importlib.import_module(source)
        path = Path(source)
        if not path.is_file():
            raise ModelError(f"model {reference!r}: file {source} does not exist")
        name = f"edgetune_user_model_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up by name
        spec.loader.exec_module(module)
        return module
    except ModelError:
        raise
    except Exception as error:  # noqa: BLE001 - the user's code: any failure is one line
        raise ModelError(f"model {reference!r}: {source} does not import: {first_line(error, typed=True)}") from None


def _from_reference(reference: str, num_classes: int) -> nn.Module:
    module = _module_of(reference)
    factory_name = reference.rpartition(":")[2]
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        source = reference.rpartition(':')[0]
        offered = list_factories(source)
        raise ModelError(f"model {reference!r}: {source} has no factory {factory_name!r}"
                         + (f"; it has {', '.join(offered)}" if offered else "; it defines none (a function or nn.Module "
                                                                               "class called with num_classes or nothing)"))
    try:
        parameters = inspect.signature(factory).parameters
        takes_classes = "num_classes" in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    except (TypeError, ValueError):
        takes_classes = True
    try:
        model = factory(num_classes=num_classes) if takes_classes else factory()
    except Exception as error:  # noqa: BLE001 - the user's code
        raise ModelError(f"model {reference!r}: {factory_name}(num_classes={num_classes}) failed: "
                         f"{first_line(error, typed=True)}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {reference!r}: {factory_name} returned {type(model).__name__}, not a torch nn.Module")
    return model


def list_factories(source: str) -> list[str]:
    """The references a user's file or module offers (``path/to/file.py`` or ``package.module``): its
    public functions and ``nn.Module`` classes defined there that can be called as a factory is (with
    ``num_classes`` or nothing), each as ``source:name``; a building block that needs other arguments
    (``Block(channels)``) is left out. Whether one builds a model is known only by calling it, as
    ``tune groups --model REF`` does."""
    module = _module_of(source)
    names = [name for name, value in vars(module).items()
             if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
             and (inspect.isfunction(value) or inspect.isclass(value) and issubclass(value, nn.Module))
             and _callable_as_factory(value)]
    return [f"{source}:{name}" for name in names]


def _callable_as_factory(factory) -> bool:
    """Every required argument is ``num_classes`` (as :func:`_from_reference` calls it)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return True
    return all(p.name == "num_classes" or p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in parameters)


def source_sha256(name: str) -> str | None:
    """SHA-256 of the file that defines a referenced model (None for registry models)."""
    if not is_reference(name):
        return None
    source = name.rpartition(":")[0]
    path = Path(source) if source.endswith(".py") else Path(getattr(_module_of(name), "__file__", "") or "")
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def create_model(name: str, num_classes: int) -> nn.Module:
    """A freshly initialised (untrained) classifier; weights never come from a hub."""
    if is_reference(name):
        return _from_reference(name, num_classes)
    if name in _REGISTRY:
        return _REGISTRY[name](num_classes=num_classes)
    if name in _torchvision_names():
        import torchvision

        try:
            return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        except (TypeError, ValueError) as error:
            raise ModelError(f"model {name!r} cannot be built with {num_classes} classes: {error}") from None
    if name.endswith(".py") or name.endswith(":"):  # a file or module without its factory
        source = name.rstrip(":")
        if source.endswith(".py") and not Path(source).is_file():
            raise ModelError(f"model {name!r}: file {source} does not exist")
        offered = list_factories(source)
        if offered:
            raise ModelError(f"model {name!r}: name its factory, e.g. --model {offered[0]} (`tune models {source}` lists "
                             f"{'them' if len(offered) > 1 else 'it'})")
    raise ModelError(f"unknown model {name!r}; CIFAR ResNets: {', '.join(sorted(_REGISTRY))}; "
                     "or any torchvision classifier (`tune models` lists them); or your own, as "
                     "package.module:factory or path/to/file.py:factory")


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
