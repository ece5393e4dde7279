"""Removing the channels NNI's masks select with Torch-Pruning's dependency graph (DepGraph).

NNI 3.0's ``ModelSpeedup`` cannot carry a removal through a depthwise or grouped convolution or a
channel shuffle: on MobileNet, EfficientNet, RegNet and ShuffleNet the channels stay or the shapes
break. DepGraph finds every layer that shares a removed channel (the depthwise convolution after an
expansion, a grouped convolution's inputs, a squeeze-excitation's scale) and removes it there too.
Which channels go is still NNI's decision (its masks), so the pruners' criteria do not change.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .structure import set_module


def needed(model: nn.Module) -> bool:
    """True when NNI's speedup cannot remove this model's channels: it has a depthwise or grouped
    convolution (a channel shuffle only comes with those, as in ShuffleNet v1/v2)."""
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())


def _depthwise(conv: nn.Module) -> bool:
    return isinstance(conv, nn.Conv2d) and conv.groups > 1 and conv.groups == conv.out_channels


def _channel_groups(group) -> int:
    """How many equal parts the group's channels must keep: a grouped (not depthwise) convolution
    reading or writing them needs the same count removed from each of its groups."""
    parts = 1
    for dep, _ in group:
        module = dep.target.module
        if isinstance(module, nn.Conv2d) and module.groups > 1 and not _depthwise(module):
            parts = math.lcm(parts, module.groups)
    return parts


def _to_drop(kept: torch.Tensor, parts: int) -> list[int]:
    """Positions to remove: the masked-out ones; with ``parts`` > 1 the same positions in every part,
    those kept in the fewest parts, and the kept count rounded to the nearest multiple of ``parts``."""
    if parts == 1:
        return (~kept).nonzero().flatten().tolist()
    size = len(kept) // parts
    per_part = min(size, max(1, math.floor(int(kept.sum()) / parts + 0.5)))
    votes = kept.view(parts, size).sum(dim=0)
    order = sorted(range(size), key=lambda j: (-int(votes[j]), j))
    drop = sorted(order[per_part:])
    return [p * size + j for p in range(parts) for j in drop]


def _prune_one(graph, conv: nn.Conv2d, kept: torch.Tensor):
    """Prune ``conv``'s channels that ``kept`` (one flag per current channel) leaves out, with every
    coupled layer; the group that was pruned, or None when nothing had to go."""
    import torch_pruning as tp

    drop = _to_drop(kept, 1)
    if not drop:
        return None
    group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=drop)
    parts = _channel_groups(group)
    if parts > 1:  # the same layers, other positions
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=_to_drop(kept, parts))
    if not graph.check_pruning_group(group):
        raise ValueError("it would empty a layer")
    group.prune()
    return group


def _forget(graph, group, names: dict[nn.Module, str], alive: dict[str, list[int]]) -> None:
    """Drop the removed positions from ``alive`` (original channel ids) of every masked layer the group
    touched: a coupled layer may lose channels before its own turn."""
    for dep, idxs in group:
        name = names.get(dep.target.module)
        if name is not None and graph.is_out_channel_pruning_fn(dep.handler):
            removed = set(idxs)
            alive[name] = [c for i, c in enumerate(alive[name]) if i not in removed]


def _scope_inputs(model: nn.Module, scopes: set[str], example: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensor each module in ``scopes`` receives on ``example`` (single-input modules only)."""
    inputs, hooks = {}, []
    for name in scopes:
        def keep(_module, args, name=name):
            if len(args) == 1 and isinstance(args[0], torch.Tensor):
                inputs.setdefault(name, args[0].detach())
        hooks.append(model.get_submodule(name).register_forward_pre_hook(keep))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return inputs


def _prune_in_scope(model: nn.Module, name: str, kept: torch.Tensor, inputs: dict[str, torch.Tensor],
                    masked: set[str]):
    """Prune ``name`` in the graph of its nearest enclosing module whose output shape that leaves
    unchanged (ShuffleNet: the branch, not the block with its channel shuffle). The scope is pruned
    as a copy and swapped in, so a scope too small costs nothing. Returns the graph, the group pruned
    (or None) and the scope's masked layers by module."""
    import torch_pruning as tp

    parts = name.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        scope = ".".join(parts[:depth])
        if scope not in inputs:
            continue
        x = inputs[scope]
        candidate = copy.deepcopy(model.get_submodule(scope))
        try:
            with torch.no_grad():
                shape = candidate(x).shape
            graph = tp.DependencyGraph().build_dependency(candidate, example_inputs=x, verbose=False)
            group = _prune_one(graph, candidate.get_submodule(".".join(parts[depth:])), kept)
            with torch.no_grad():
                if candidate(x).shape != shape:
                    continue  # the removal reached the scope's output: try the next one up
        except Exception:  # noqa: BLE001 - untraceable here or would empty a layer: try the next one up
            continue
        set_module(model, scope, candidate)
        return graph, group, {m: f"{scope}.{n}" for n, m in candidate.named_modules() if f"{scope}.{n}" in masked}
    raise ValueError("no enclosing module can lose these channels on its own")


def remove_masked(model: nn.Module, masks: dict, example_input: torch.Tensor) -> nn.Module:
    """Remove (in place) every output channel the masks zero, with all layers coupled to it.

    One dependency graph of the whole model; when Torch-Pruning cannot trace it (1.6 divides by
    zero in its reshape index mapping on ShuffleNet's channel shuffle), each layer is pruned in the
    graph of its nearest enclosing module that can lose those channels on its own.
    Raises ``ValueError`` with the layer's name when a removal is impossible.
    """
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    example = example_input[:1]
    kept = {name: entry["weight"].flatten(1).ne(0).any(dim=1) for name, entry in masks.items()
            if entry.get("weight") is not None}
    alive = {name: list(range(len(k))) for name, k in kept.items()}
    try:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    except Exception:  # noqa: BLE001 - a construct Torch-Pruning cannot trace: prune scope by scope below
        graph = None
    inputs = {}
    if graph is None:
        scopes = {".".join(n.split(".")[:d]) for n in kept for d in range(1, n.count(".") + 1)}
        inputs = _scope_inputs(model, scopes, example)
    names = {model.get_submodule(n): n for n in kept}
    for name, flags in kept.items():
        now = flags[alive[name]]  # the mask of the channels still there (a coupled layer may have lost some)
        try:
            if graph is not None:
                here, group, by_module = graph, _prune_one(graph, model.get_submodule(name), now), names
            else:
                here, group, by_module = _prune_in_scope(model, name, now, inputs, set(kept))
            if group is not None:
                _forget(here, group, by_module, alive)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from error
    model.train(was_training)
    return model
