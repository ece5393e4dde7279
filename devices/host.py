"""The host CPU's facts a search space depends on: detected, or pinned to a known host's.

Two facts change what a study searches on a CPU: how many float32 channels one SIMD register holds
(oneDNN's blocked layouts work in blocks of that many, so a layer's width pays off in multiples of
it: 8 with AVX2, 16 with AVX-512) and whether the CPU runs bf16. ``$EDGETUNE_HOST_CPU`` pins both
to a known host's (:data:`KNOWN_HOSTS`), so that the test suite runs as each known host would on
whichever machine it has: the CPU adapters then declare that host's channel granularity and
precisions, and the study, its space and the CLI run for real on them. What runs is still this
machine's: a bf16 plan on a CPU without bf16 runs in f32 (OpenVINO falls back, and reads back f32).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .base import DeviceError, cpu_channel_block

HOST_CPU_ENV = "EDGETUNE_HOST_CPU"


@dataclass(frozen=True)
class HostCPU:
    channel_block: int  # float32 channels per SIMD register: the channel granularity of its kernels
    bf16: bool  # runs bf16 (AVX-512 BF16 or AMX)


#: The hosts the project meets, by instruction set (``tune devices`` shows what this one declares).
KNOWN_HOSTS = {
    "avx2": HostCPU(8, bf16=False),  # e.g. AMD EPYC Zen 3; OpenVINO: f32, int8
    "avx512": HostCPU(16, bf16=False),  # e.g. Intel Xeon Skylake-SP, Cascade Lake
    "avx512_bf16": HostCPU(16, bf16=True),  # e.g. AMD EPYC Zen 4; OpenVINO: f32, bf16, int8
    "amx": HostCPU(16, bf16=True),  # e.g. Intel Xeon Sapphire Rapids; OpenVINO: f32, bf16, int8
}


def pinned_host() -> str | None:
    """The known host ``$EDGETUNE_HOST_CPU`` names, or None when the facts are this machine's own."""
    name = os.environ.get(HOST_CPU_ENV, "").strip().lower()
    if not name:
        return None
    if name not in KNOWN_HOSTS:
        raise DeviceError(f"${HOST_CPU_ENV}={name!r}: not a known host; known: {', '.join(KNOWN_HOSTS)} "
                          "(unset it to use this machine's own facts)")
    return name


def pinned_note() -> dict[str, str]:
    """For a device's ``DeviceInfo.extra``: the pinned host, so that every record made under a pin says so."""
    name = pinned_host()
    return {"host_cpu": f"{name} (${HOST_CPU_ENV})"} if name else {}


def channel_block() -> int:
    """Channels per SIMD register of float32, as oneDNN's blocked layouts use them: 16 with AVX-512,
    8 with AVX2 (and below). PyTorch's public CPU capability says which, unless a host is pinned."""
    name = pinned_host()
    if name:
        return KNOWN_HOSTS[name].channel_block
    return cpu_channel_block()


def runs_bf16(detected: bool) -> bool:
    """Whether the CPU runs bf16: what the runtime ``detected``, unless a host is pinned."""
    name = pinned_host()
    return KNOWN_HOSTS[name].bf16 if name else detected
