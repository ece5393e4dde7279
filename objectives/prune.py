"""Structured channel pruning with NNI, then NNI ``ModelSpeedup`` so the channels are really gone."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from . import nni_compat
from .groups import LayerGroup

nni_compat.apply()
warnings.filterwarnings("ignore", module=r"nni\..*")
warnings.filterwarnings("ignore", message=r".*already registered as pytree node.*")
for _name in ("nni", "nni.compression", "nni.common"):
    logging.getLogger(_name).setLevel(logging.WARNING)

PRUNERS = ("l1", "l2", "fpgm")


class PruneError(RuntimeError):
    """Pruning or speed-up failed for this trial's settings (e.g. a layer would be emptied)."""


@dataclass
class PruneResult:
    model: nn.Module
    sparsity_achieved: dict[str, float]  # per group: share of output channels removed


def _pruner_class(name: str):
    from nni.compression.pruning import FPGMPruner, L1NormPruner, L2NormPruner

    try:
        return {"l1": L1NormPruner, "l2": L2NormPruner, "fpgm": FPGMPruner}[name]
    except KeyError:
        raise PruneError(f"unknown pruner {name!r}; allowed: {', '.join(PRUNERS)}") from None


def config_list(model: nn.Module, groups: list[LayerGroup], sparsity: dict[str, float], example_input) -> list[dict]:
    """One NNI config per group; coupled groups get NNI's channel dependency group ids."""
    configs, coupled = [], []
    for group in groups:
        ratio = float(sparsity.get(group.name, 0.0))
        if ratio <= 0:
            continue
        config = {"op_names": list(group.layers), "op_types": ["Conv2d"], "sparse_ratio": ratio}
        (coupled if group.coupled else configs).append(config)
    if coupled:
        from nni.common.concrete_trace_utils import concrete_trace
        from nni.compression.speedup.dependency import auto_set_denpendency_group_ids

        dummy = example_input if example_input.shape[0] > 1 else example_input.repeat(2, 1, 1, 1)
        was_training = model.training
        graph = concrete_trace(model.eval(), {"x": dummy})
        model.train(was_training)
        configs += [{**c, "op_types": ["Conv2d"]} for c in auto_set_denpendency_group_ids(graph, coupled)]
    return configs


def compute_masks(model: nn.Module, configs: list[dict], pruner: str) -> dict:
    """Masks from NNI's pruner; the model is left unwrapped and unchanged."""
    instance = _pruner_class(pruner)(model, configs)
    _, masks = instance.compress()
    instance.unwrap_model()
    return masks


def speedup(model: nn.Module, masks: dict, example_input: torch.Tensor) -> nn.Module:
    """Physically remove masked channels (NNI ModelSpeedup), in place."""
    from nni.compression.speedup import ModelSpeedup

    dummy = example_input if example_input.shape[0] > 1 else example_input.repeat(2, 1, 1, 1)
    model.eval()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # NNI 3.0 prints debug lines on stdout
            ModelSpeedup(model, dummy, masks, logger=logging.getLogger("nni.speedup")).speedup_model()
    except Exception as error:  # NNI raises bare errors (EmptyLayerError, shape asserts)
        raise PruneError(f"speedup failed: {type(error).__name__}: {error}") from error
    # NNI can finish without error yet leave inconsistent shapes (seen on channel shuffles).
    try:
        with torch.no_grad():
            model(dummy)
    except RuntimeError as error:
        raise PruneError(f"speedup produced a broken model: {str(error).splitlines()[0]}") from error
    return model


def out_channels(model: nn.Module, groups: list[LayerGroup]) -> dict[str, int]:
    modules = dict(model.named_modules())
    return {name: modules[name].out_channels for group in groups for name in group.layers}


def achieved_sparsity(before: dict[str, int], after: dict[str, int], groups: list[LayerGroup]) -> dict[str, float]:
    result = {}
    for group in groups:
        total = sum(before[n] for n in group.layers)
        kept = sum(after[n] for n in group.layers)
        result[group.name] = round(1.0 - kept / total, 4) if total else 0.0
    return result
