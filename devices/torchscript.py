"""What the PyTorch-based adapters (``cpu``, ``cuda``) share: the deployed artifact is a
TorchScript file traced from the module that runs, and layers are found by module path."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from .base import FileDeployment


def under(name: str, prefixes: list[str]) -> bool:
    """``name`` is one of the module paths ``prefixes`` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class TorchScriptDeployment(FileDeployment):
    """A deployment whose artifact is ``model.pt``: the TorchScript program that runs, or one traced from
    the module that runs on ``example``."""

    artifact_name = "model.pt"

    def _write_artifact(self, module: nn.Module | torch.jit.ScriptModule, example: torch.Tensor, prefix: str) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix=prefix))
        self._path = self._workdir / self.artifact_name
        if isinstance(module, torch.jit.ScriptModule):  # already a program: what runs is what ships
            module.save(str(self._path))
            return
        # check_trace off: it traces again on the same input (half the time of this step) and so cannot
        # see a data-dependent branch; the shipped file is tested against what was evaluated (tests/test_devices.py)
        with torch.no_grad():  # where tracing fails, its error says why
            torch.jit.trace(module, example, check_trace=False).save(str(self._path))
