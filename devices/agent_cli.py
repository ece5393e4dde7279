"""``tune`` of the device agent's slim install (``agent/``): ``tune device-agent`` and ``tune devices``
only, with the standard library's argparse, on a board that has ONNX Runtime and no PyTorch.

The full install's ``tune`` (searcher/cli.py) has the same two commands with the same options.
"""
from __future__ import annotations

import argparse
import sys

from .base import DeviceError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tune", description="edgetune's device agent (slim install: ONNX Runtime, "
                                                              "no PyTorch). The full install: pip install edgetune.")
    commands = parser.add_subparsers(dest="command", required=True)
    agent = commands.add_parser("device-agent", help="Serve a device over HTTP for studies on other hosts "
                                                     "(token: $EDGETUNE_AGENT_TOKEN).")
    agent.add_argument("--device", default="onnxruntime:CPU", help="The local device to serve.")
    agent.add_argument("--host", default="127.0.0.1", help="Address to bind; 127.0.0.1 unless other hosts must reach it.")
    agent.add_argument("--port", type=int, default=8765)
    agent.add_argument("--threads", type=int, default=0, help="Inference threads (0: each model at its fastest count).")
    agent.add_argument("--max-upload-mb", type=int, default=256, help="Largest model or array accepted, in MiB.")
    agent.add_argument("--latency-ci", type=float, default=0.02,
                       help="Stop timing once the 95%% CI of the median is this tight.")
    agent.add_argument("--latency-max-seconds", type=float, default=5.0, help="Time limit of one measurement.")
    commands.add_parser("devices", help="List the devices available on this host.")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "devices":
            from .registry import available_devices, create_device

            for name in available_devices():
                info = create_device(name).info()
                print(f"{info.name}\t{info.full_name}\t{info.runtime}\t{', '.join(info.precisions)}")
            return
        from .agent import serve

        serve(args.device, args.host, args.port, args.threads, args.max_upload_mb, args.latency_ci,
              args.latency_max_seconds)
    except DeviceError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
