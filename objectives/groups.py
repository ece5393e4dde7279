"""Layer groups: the units a study assigns one sparsity (and one precision) to.

Derived from the model's structure so that pruning never breaks a shape:

* residual nets (``BasicBlock``/``Bottleneck``): the convolutions *inside* each block — all but
  the last one, whose output is added to the shortcut — one group per stage (``layer1``...);
* MobileNet-style (``InvertedResidual``): the expansion 1x1 conv of each block (pruning it also
  thins the depthwise conv after it), one group per stage of equal output width;
* VGG-style (a ``features`` Sequential of convs and pools): the convs between two pools, one
  group per block, the last conv of the network excluded (it feeds the classifier);
* anything else: one group per top-level child holding convolutions, pruned with NNI's channel
  dependency groups so that coupled channels fall together (``coupled = True``).

A spec may override the groups with name regexes, and exclude sensitive layers or blocks.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn


class GroupError(ValueError):
    """Layer-group patterns that select nothing or overlap."""


OTHER = "other"  # the precision group of every layer outside the groups (stem, head, ...)


@dataclass
class LayerGroup:
    """``layers`` are pruned at the group's sparsity; everything under ``scopes`` runs at its precision."""

    name: str
    layers: list[str]
    coupled: bool = False  # prune with NNI dependency groups (channels shared across layers)
    scopes: list[str] = field(default_factory=list)  # module paths; default: the layers themselves

    def __post_init__(self):
        if not self.scopes:
            self.scopes = list(self.layers)

    def to_dict(self) -> dict:
        return {"name": self.name, "layers": list(self.layers), "coupled": self.coupled, "scopes": list(self.scopes)}

    @classmethod
    def from_dict(cls, data: dict) -> "LayerGroup":
        return cls(data["name"], list(data["layers"]), bool(data.get("coupled", False)), list(data.get("scopes", [])))


def _under(name: str, scope: str) -> bool:
    return name == scope or name.startswith(scope + ".")


def compute_layers(model: nn.Module, scopes: list[str]) -> list[str]:
    """Conv2d and Linear modules under any of ``scopes`` (the layers a precision applies to)."""
    return [name for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and any(_under(name, s) for s in scopes)]


def other_layers(model: nn.Module, groups: list[LayerGroup]) -> list[str]:
    """Conv2d and Linear modules outside every group's scopes: the ``other`` precision group."""
    scopes = [s for g in groups for s in g.scopes]
    return [name for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not any(_under(name, s) for s in scopes)]


@dataclass
class GroupRules:
    overrides: dict[str, list[str]] = field(default_factory=dict)  # group -> regexes (fullmatch)
    exclude: list[str] = field(default_factory=list)  # regexes matched at the start of a name


def derive_groups(model: nn.Module, rules: GroupRules | None = None) -> list[LayerGroup]:
    rules = rules or GroupRules()
    if rules.overrides:
        groups = _from_patterns(model, rules.overrides)
    else:
        groups = (_residual_groups(model) or _inverted_residual_groups(model)
                  or _vgg_groups(model) or _top_level_groups(model))
    excluded = [re.compile(p) for p in rules.exclude]
    kept = []
    for group in groups:
        layers = [name for name in group.layers if not any(p.match(name) for p in excluded)]
        if layers:
            kept.append(LayerGroup(group.name, layers, group.coupled, group.scopes))
    if not kept:
        raise GroupError("no prunable layer is left in any group (check search.groups and search.exclude)")
    return kept


def _convs(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Conv2d]]:
    return [(f"{prefix}{name}" if not prefix or name else prefix.rstrip("."), m)
            for name, m in module.named_modules() if isinstance(m, nn.Conv2d)]


def _from_patterns(model: nn.Module, overrides: dict[str, list[str]]) -> list[LayerGroup]:
    convs = [name for name, _ in _convs(model)]
    owner: dict[str, str] = {}
    groups = []
    for group, patterns in overrides.items():
        compiled = [re.compile(p) for p in patterns]
        layers = [name for name in convs if any(p.fullmatch(name) for p in compiled)]
        if not layers:
            raise GroupError(f"search.groups.{group}: patterns {patterns} match no Conv2d layer")
        for name in layers:
            if name in owner:
                raise GroupError(f"search.groups: layer {name!r} is in both {owner[name]!r} and {group!r}")
            owner[name] = group
        groups.append(LayerGroup(group, layers, coupled=True))
    return groups


def _residual_groups(model: nn.Module) -> list[LayerGroup]:
    stages: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        if type(module).__name__ not in ("BasicBlock", "Bottleneck"):
            continue
        inner = [(n, m) for n, m in module.named_children() if isinstance(m, nn.Conv2d)]
        stage = name.rsplit(".", 1)[0] if "." in name else name
        stages.setdefault(stage, []).extend(f"{name}.{n}" for n, m in inner[:-1] if m.groups == 1)
    return [LayerGroup(stage, layers, scopes=[stage]) for stage, layers in stages.items() if layers]


def _inverted_residual_groups(model: nn.Module) -> list[LayerGroup]:
    blocks = [(n, m) for n, m in model.named_modules() if type(m).__name__ == "InvertedResidual"]
    groups: list[LayerGroup] = []
    last_width = None
    for name, block in blocks:
        convs = _convs(block, f"{name}.")
        out_width = convs[-1][1].out_channels
        expansion = convs[0] if len(convs) >= 3 and convs[0][1].groups == 1 and convs[0][1].kernel_size == (1, 1) else None
        if out_width != last_width:
            groups.append(LayerGroup(f"stage{len(groups) + 1}", [], scopes=[]))
            last_width = out_width
        groups[-1].scopes.append(name)
        if expansion is not None:
            groups[-1].layers.append(expansion[0])
    return [g for g in groups if g.layers]


def _vgg_groups(model: nn.Module) -> list[LayerGroup]:
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential) or not all(
        isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Dropout)) for m in features
    ):
        return []
    blocks: list[list[str]] = [[]]
    for index, module in enumerate(features):
        if isinstance(module, nn.Conv2d):
            blocks[-1].append(f"features.{index}")
        elif isinstance(module, nn.MaxPool2d) and blocks[-1]:
            blocks.append([])
    all_convs = [name for block in blocks for name in block]
    if len(all_convs) < 2:
        return []
    last = all_convs[-1]
    return [LayerGroup(f"block{i + 1}", [n for n in block if n != last], scopes=block)
            for i, block in enumerate(blocks) if [n for n in block if n != last]]


def _top_level_groups(model: nn.Module) -> list[LayerGroup]:
    all_convs = [name for name, m in _convs(model) if m.groups == 1]
    last = all_convs[-1] if all_convs else None
    groups = []
    for child_name, child in model.named_children():
        layers = [n for n, m in _convs(child, f"{child_name}.") if m.groups == 1 and n != last]
        if layers:
            groups.append(LayerGroup(child_name, layers, coupled=True, scopes=[child_name]))
    return groups


def describe_groups(model: nn.Module, groups: list[LayerGroup], example_input) -> list[dict]:
    """Per group: its layers, parameters and share of the model's parameters and FLOPs."""
    from nni.compression.utils.counter import count_flops_params

    model.eval()
    flops, params, rows = count_flops_params(model, example_input[:1], verbose=False)
    by_name = {row["name"]: row for row in rows}
    total_params = sum(p.numel() for p in model.parameters())
    described = []
    for group in groups:
        g_params = sum(by_name.get(n, {}).get("params", 0) for n in group.layers)
        g_flops = sum(by_name.get(n, {}).get("flops", 0) for n in group.layers)
        described.append({
            "name": group.name,
            "layers": group.layers,
            "params": int(g_params),
            "params_share": g_params / total_params if total_params else 0.0,
            "flops": int(g_flops),
            "flops_share": g_flops / flops if flops else 0.0,
        })
    return described
