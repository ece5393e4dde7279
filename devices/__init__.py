"""Device adapters: deploy a model on a target, run it there, and time it.

A device adapter knows nothing of Optuna or of how a model was compressed: it receives a
PyTorch module and a precision plan and hands back a :class:`Deployment`.
"""
from .base import Deployment, Device, DeviceError, DeviceInfo, PrecisionPlan
from .protocol import LatencyStats
from .registry import available_devices, create_device, list_device_kinds, register_device

__all__ = [
    "Deployment",
    "Device",
    "DeviceError",
    "DeviceInfo",
    "LatencyStats",
    "PrecisionPlan",
    "available_devices",
    "create_device",
    "list_device_kinds",
    "register_device",
]
