"""Does this OpenVINO still break signal delivery when two Cores are released out of order?

    python -m bench.openvino_altstack

Plain OpenVINO, no edgetune: each of two child processes makes two ``ov.Core`` objects, compiles a
convolution on each Core's CPU plugin, releases them either first-in-first-out or last-in-first-out,
then sends itself SIGUSR1 with a Python handler installed (Python's handlers run on the thread's
alternate signal stack, as Ctrl-C's does). Prints each order's exit status and the verdict.
OpenVINO 2026.4.1's CPU plugin, released FIFO, leaves the main thread's alternate stack unmapped:
the child dies with SIGSEGV. While that holds, edgetune keeps one Core per process
(devices/openvino_core.py; docs/ARCHITECTURE.md, "Facts").
"""
from __future__ import annotations

import signal
import subprocess
import sys

from bench.common import parser as make_parser

CHILD = """
import gc, os, signal, sys
import numpy as np
import openvino as ov
import openvino.opset13 as ops

def compiled(core):
    x = ops.parameter([1, 3, 8, 8], np.float32)
    conv = ops.convolution(x, ops.constant(np.ones((4, 3, 3, 3), np.float32)), [1, 1], [1, 1], [1, 1], [1, 1])
    return core.compile_model(ov.Model([conv], [x]), "CPU")

first = [ov.Core()]; first.append(compiled(first[0]))
second = [ov.Core()]; second.append(compiled(second[0]))
for released in ((first, second) if sys.argv[1] == "fifo" else (second, first)):
    released.clear(); gc.collect()
handled = []
signal.signal(signal.SIGUSR1, lambda *_: handled.append(True))
os.kill(os.getpid(), signal.SIGUSR1)
sys.exit(0 if handled else 3)
"""


def _status(returncode: int) -> str:
    return "handled" if returncode == 0 else (
        f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exit {returncode}")


def main() -> None:
    make_parser(__doc__).parse_args()
    import openvino as ov

    results = {order: subprocess.run([sys.executable, "-c", CHILD, order], capture_output=True, timeout=300).returncode
               for order in ("lifo", "fifo")}
    print(f"OpenVINO {ov.get_version()}")
    for order, returncode in results.items():
        print(f"  two Cores released {order.upper()}, then a Python-handled signal: {_status(returncode)}")
    broken = results["fifo"] != 0 and results["lifo"] == 0
    print("verdict: " + ("out-of-order release still breaks signal delivery; keep one Core per process" if broken else
                         "no difference between the orders here" if results["fifo"] == results["lifo"] == 0 else
                         "unexpected: see the statuses above"))


if __name__ == "__main__":
    main()
