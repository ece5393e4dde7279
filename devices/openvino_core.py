"""The process's one OpenVINO ``Core``: every Core edgetune opens in a process is this one (the memory
probe's child, a process of its own, opens its own).

Each ``ov.Core`` loads its own instance of the CPU plugin, and that plugin (OpenVINO 2026.4) gives the
thread that creates it a new alternate signal stack; released, it puts back the stack it found and
unmaps its own. Plugins released in any order but last-in-first-out leave the main thread's alternate
stack on unmapped memory, or on memory that is by then someone else's: the next signal Python handles
there (Ctrl-C, the SIGCHLD handler a DataLoader with workers installs) kills the process with SIGSEGV
or silently corrupts its heap. A Core that lives as long as the process never releases its plugin, and
the short-lived Cores libraries open (NNCF's) are then released inside its lifetime, in order.
"""
from __future__ import annotations

import functools


@functools.cache
def openvino_core():
    """The shared ``openvino.Core`` (compile options go per ``compile_model`` call, never on the Core)."""
    import openvino as ov

    return ov.Core()
