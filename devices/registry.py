"""Device strings -> adapters, in the shape of timm's model registry.

A device string is ``kind`` or ``kind:target``: ``openvino:CPU``, ``openvino:GPU``, ``onnxruntime:CPU``, ``cpu``.
"""
from __future__ import annotations

from typing import Callable

from .base import Device, DeviceError, DeviceUnavailable

_FACTORIES: dict[str, Callable[..., Device]] = {}


def register_device(kind: str):
    """Decorator: register a factory ``factory(target: str | None, **options) -> Device``."""

    def wrap(factory):
        _FACTORIES[kind] = factory
        return factory

    return wrap


def list_device_kinds() -> list[str]:
    return sorted(_FACTORIES)


def parse_device_string(device: str) -> tuple[str, str | None]:
    kind, _, target = device.partition(":")  # remote:http://host:port/openvino:NPU keeps its URL whole
    if not kind or kind not in _FACTORIES:
        raise DeviceError(f"unknown device {device!r}; device kinds: {', '.join(list_device_kinds())} (e.g. openvino:CPU)")
    return kind, (target or None)


def create_device(device: str, **options) -> Device:
    """Build the adapter for ``device`` (e.g. ``"openvino:CPU"``) with its options."""
    kind, target = parse_device_string(device)
    try:
        return _FACTORIES[kind](target, **options)
    except ModuleNotFoundError as error:  # the device agent's slim install: ONNX Runtime only
        raise DeviceError(f"device {device!r} needs {error.name}, which this installation lacks "
                          "(the full one: pip install edgetune)") from None
    except DeviceUnavailable as error:
        raise DeviceError(f"{error}; available: {', '.join(available_devices())}") from None  # as `tune devices`


def available_devices() -> list[str]:
    """Device strings that can be used on this host."""
    names = []
    try:
        import torch

        names.append("cpu")
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except Exception:  # a broken CUDA install: just not available
        pass
    try:
        from .openvino_core import openvino_core

        names += [f"openvino:{d}" for d in openvino_core().available_devices]
    except Exception:  # openvino missing or broken: just not available
        pass
    try:
        import onnxruntime

        names += ["onnxruntime:CPU"] if "CPUExecutionProvider" in onnxruntime.get_available_providers() else []
    except Exception:  # onnxruntime missing or broken: just not available
        pass
    return names


@register_device("cpu")
def _cpu(target: str | None, **options) -> Device:
    from .cpu import CPUDevice

    if target:
        raise DeviceError(f"device 'cpu' takes no target, got 'cpu:{target}'")
    return CPUDevice(**options)


@register_device("cuda")
def _cuda(target: str | None, **options) -> Device:
    from .cuda import CUDADevice

    if target is not None and not target.isdigit():
        raise DeviceError(f"device 'cuda:{target}': the target is a GPU index, e.g. cuda:0")
    return CUDADevice(int(target or 0), **options)


@register_device("remote")
def _remote(target: str | None, **options) -> Device:
    from .remote import RemoteDevice

    return RemoteDevice(target or "", **options)


@register_device("openvino")
def _openvino(target: str | None, **options) -> Device:
    from .openvino import OpenVINODevice

    return OpenVINODevice(target or "CPU", **options)


@register_device("onnxruntime")
def _onnxruntime(target: str | None, **options) -> Device:
    from .onnxruntime import OnnxRuntimeDevice

    return OnnxRuntimeDevice(target or "CPU", **options)
