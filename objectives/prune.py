"""Structured channel pruning with NNI, then NNI ``ModelSpeedup`` (or Torch-Pruning's dependency
graph, where NNI cannot follow the channels) so the channels are really gone."""
from __future__ import annotations

import contextlib
import inspect
import io
import math
import logging
from dataclasses import dataclass

import torch
from torch import nn

from . import nni_compat
from .choices import PRUNERS
from .errors import first_line
from .groups import LayerGroup

nni_compat.apply()


class _IdentityNeedsNoReplacer(logging.Filter):
    """NNI logs an error for each module it has no replacer for; a removed block (``nn.Identity``)
    has no weights, so there is nothing to replace and nothing to tell the user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "replacing module with type: Identity," not in record.getMessage()


SPEEDUP_LOG = logging.getLogger("nni.speedup")


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


def present_layers(model: nn.Module, group: LayerGroup) -> list[str]:
    """The group's layers still in the model (a removed block's layers are gone with it)."""
    modules = dict(model.named_modules())
    return [name for name in group.layers if isinstance(modules.get(name), nn.Conv2d)]


def aligned(channels: int, fraction: float, multiple: int) -> int:
    """``fraction`` of ``channels``, rounded up to a whole multiple (never more than ``channels``)."""
    if fraction >= 1.0:
        return channels
    return min(channels, max(multiple, math.ceil(channels * fraction / multiple - 1e-9) * multiple))


def kept_channels(model: nn.Module, groups: list[LayerGroup], inner: dict[str, int], multiple: int = 1) -> dict[str, int]:
    """Per layer, the output channels to keep: ``inner[group]`` for the group's widest layer, the same
    share (aligned to ``multiple``) for narrower ones. Groups absent from ``inner`` keep every channel."""
    modules = dict(model.named_modules())
    keep = {}
    for group in groups:
        layers = present_layers(model, group)
        if group.name not in inner or not layers:
            continue
        widest = max(modules[n].out_channels for n in layers)
        fraction = inner[group.name] / widest
        for name in layers:
            keep[name] = aligned(modules[name].out_channels, fraction, multiple)
    return keep


def config_list(model: nn.Module, groups: list[LayerGroup], keep: dict[str, int], example_input) -> list[dict]:
    """One NNI config per pruned layer, removing exactly the channels ``keep`` says; coupled groups
    get NNI's channel dependency group ids."""
    modules = dict(model.named_modules())
    configs, coupled = [], []
    for group in groups:
        for name in group.layers:
            if name not in keep or keep[name] >= modules[name].out_channels:
                continue
            channels = modules[name].out_channels
            # NNI prunes int(channels * ratio) channels: the half channel makes that exact
            ratio = (channels - keep[name] + 0.5) / channels
            config = {"op_names": [name], "op_types": ["Conv2d"], "sparse_ratio": ratio}
            (coupled if group.coupled else configs).append(config)
    if coupled:
        from nni.common.concrete_trace_utils import concrete_trace
        from nni.compression.speedup.dependency import auto_set_denpendency_group_ids

        dummy = _batch_of_two(example_input)
        was_training = model.training
        # the tracer takes the input by the name of forward's first parameter (``x``, ``input``, ...)
        first = next(iter(inspect.signature(model.forward).parameters))
        try:
            graph = concrete_trace(model.eval(), {first: dummy})
            grouped = auto_set_denpendency_group_ids(graph, coupled)
        except Exception as error:  # noqa: BLE001 - NNI's tracer raises whatever the traced code raises
            raise PruneError(f"NNI's tracer cannot follow the model: {first_line(error, typed=True)}") from error
        finally:
            model.train(was_training)
        configs += [{**c, "op_types": ["Conv2d"]} for c in grouped]
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

    dummy = _batch_of_two(example_input)
    model.eval()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # NNI 3.0 prints debug lines on stdout
            with _filtered(SPEEDUP_LOG, _IdentityNeedsNoReplacer()):
                ModelSpeedup(model, dummy, masks, logger=SPEEDUP_LOG).speedup_model()
    except Exception as error:  # NNI raises bare errors (EmptyLayerError, shape asserts)
        raise PruneError(f"speedup failed: {type(error).__name__}: {error}") from error
    # NNI can finish without error yet leave inconsistent shapes (seen on channel shuffles).
    _check_runs(model, dummy, "speedup")
    return model


@contextlib.contextmanager
def _filtered(logger: logging.Logger, log_filter: logging.Filter):
    """The filter on the logger for the block only: importing this module changes no logging set-up."""
    logger.addFilter(log_filter)
    try:
        yield
    finally:
        logger.removeFilter(log_filter)


def _batch_of_two(example_input: torch.Tensor) -> torch.Tensor:
    """The example input as a batch of at least two: what NNI's tracer, its speedup and the forward
    check after either engine all run the model on."""
    return example_input if example_input.shape[0] > 1 else example_input.repeat(2, 1, 1, 1)


def _check_runs(model: nn.Module, dummy: torch.Tensor, engine: str) -> None:
    """The pruned model still runs forward, or a PruneError naming the engine that broke it."""
    try:
        with torch.no_grad():
            model(dummy)
    except RuntimeError as error:
        raise PruneError(f"{engine} produced a broken model: {first_line(error)}") from error


def remove_channels(model: nn.Module, masks: dict, example_input: torch.Tensor) -> str:
    """Physically remove the masked channels (in place); returns the engine that did.

    NNI's ModelSpeedup where it works (plain and residual convolutions: exact, and what every ResNet
    and VGG study recorded before); Torch-Pruning's dependency graph for a model with a depthwise or
    grouped convolution or a channel shuffle, where speedup leaves the channels in place or breaks
    the shapes. Either way NNI's masks decide which channels go."""
    from . import depgraph

    if not depgraph.needed(model):
        speedup(model, masks, example_input)
        return "nni"
    try:
        depgraph.remove_masked(model, masks, example_input)
    except Exception as error:  # noqa: BLE001 - Torch-Pruning, like NNI, raises bare errors (index asserts)
        raise PruneError(f"torch-pruning failed: {type(error).__name__}: {error}") from error
    _check_runs(model, _batch_of_two(example_input), "torch-pruning")
    return "torch-pruning"


def out_channels(model: nn.Module, groups: list[LayerGroup]) -> dict[str, int]:
    """Output channels of every group layer still in the model."""
    modules = dict(model.named_modules())
    return {name: modules[name].out_channels for group in groups for name in present_layers(model, group)}


def group_widths(channels: dict[str, int], groups: list[LayerGroup]) -> dict[str, int]:
    """Per group, the output channels of its widest remaining layer (what a trial's inner width sets)."""
    return {g.name: max(channels[n] for n in g.layers if n in channels) for g in groups
            if any(n in channels for n in g.layers)}


def achieved_sparsity(before: dict[str, int], after: dict[str, int], groups: list[LayerGroup]) -> dict[str, float]:
    """Per group: the share of its (remaining) layers' output channels removed."""
    result = {}
    for group in groups:
        layers = [n for n in group.layers if n in before and n in after]
        total = sum(before[n] for n in layers)
        kept = sum(after[n] for n in layers)
        result[group.name] = round(1.0 - kept / total, 4) if total else 0.0
    return result
