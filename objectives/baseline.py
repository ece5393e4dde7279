"""The uncompressed baseline: trained once (or loaded from a checkpoint) and cached on disk.

The cache key covers everything that changes the weights: model, data set (name, folder, image
size), training settings and seed, and where it trained when that was not the CPU in f32 (a baseline
trained on a GPU, or under autocast, is another model; CPU-trained keys are those of before
``[train]``). Checkpoints are read with ``weights_only=True``: a file that would run code when
unpickled is refused.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock
from torch import nn

from .accelerator import CPU, Accelerator
from .cache import cache_dir
from .data import Splits
from .errors import first_line
from .finetune import TrainSettings, train
from .models import create_model, source_sha256


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely or does not fit the model."""


def cache_key(model_name: str, data: Splits, data_id: dict, settings: TrainSettings, on: Accelerator = CPU) -> str:
    train = {k: v for k, v in settings.__dict__.items() if k not in ("distill", "temperature")}  # a baseline never distills
    payload = {"model": model_name, "data": data_id, "classes": data.num_classes,
               "shape": list(data.image_shape), "train": train}
    if on != CPU:  # the kind of device, not its index: cuda:0 and cuda:1 of one host train the same model
        payload["train_on"] = {"device": on.device.type, "amp": on.amp}
    source = source_sha256(model_name)
    if source:  # the user's own model: a changed file is another model
        payload["source"] = source
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle refusing globals, truncated file, not a torch file...
        raise CheckpointError(f"checkpoint {path} cannot be loaded safely (weights only): {first_line(error)}") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds no state dict")
    misfit = _misfit(model, state)
    if misfit:
        raise CheckpointError(f"checkpoint {path} does not fit the model: {misfit}")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # what _misfit does not look at (a module's own load hook)
        raise CheckpointError(f"checkpoint {path} does not fit the model: {first_line(error)}") from None
    return model


def _misfit(model: nn.Module, state: dict) -> str:
    """What keeps ``state`` from loading into ``model``, in one line ("" when nothing): the first tensor
    of another shape, keys missing and unexpected (torch's own message puts each on a line of its own)."""
    own = model.state_dict()
    shapes = [key for key, value in state.items()
              if key in own and isinstance(value, torch.Tensor) and value.shape != own[key].shape]
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]

    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    parts = []
    if shapes:
        key = shapes[0]
        shape = lambda tensor: "×".join(map(str, tensor.shape)) or "scalar"  # noqa: E731
        part = f"{key} is {shape(state[key])} in the checkpoint, {shape(own[key])} in the model"
        classifier = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1:]
        if classifier and key == f"{classifier[0]}.weight" and state[key].shape[1:] == own[key].shape[1:]:
            part += f" (the checkpoint classifies {state[key].shape[0]} classes, the data has {own[key].shape[0]})"
        more = len(shapes) - 1
        parts.append(part + (f"; {more} more tensor{'s' * (more > 1)} of another shape" if more else ""))
    if missing:
        parts.append(f"missing {listed(missing)}")
    if unexpected:
        parts.append(f"unexpected {listed(unexpected)}")
    return "; ".join(parts)


def get_baseline(model_name: str, data: Splits, data_id: dict, settings: TrainSettings,
                 checkpoint: str | None = None,
                 on_epoch: Callable[[int, float], None] | None = None,
                 on: Accelerator = CPU) -> tuple[nn.Module, str]:
    """The trained baseline, on the CPU, and where it came from ("checkpoint", "cache" or "trained");
    a baseline to train trains on ``on``'s device."""
    model = create_model(model_name, data.num_classes)
    if checkpoint:
        return load_checkpoint(model, checkpoint).eval(), "checkpoint"
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name.rpartition("/")[2])  # a reference holds / and :
    path = cache_dir() / "baselines" / f"{label}-{data.name}-{cache_key(model_name, data, data_id, settings, on)}.pt"
    if path.is_file():
        return load_checkpoint(model, path).eval(), "cache"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Workers starting together on a fresh cache: one trains, the others wait for its checkpoint.
    with FileLock(path.with_suffix(".lock")):
        if path.is_file():
            return load_checkpoint(model, path).eval(), "cache"
        torch.manual_seed(settings.seed)
        model = create_model(model_name, data.num_classes)  # initialised on the CPU: the same on every device
        train(model, data.train, None, settings, on_epoch, on=on)
        model.cpu()
        partial = path.with_suffix(".tmp")
        torch.save(model.state_dict(), partial)
        partial.replace(path)  # atomic: a killed run never leaves half a checkpoint
    return model.eval(), "trained"
