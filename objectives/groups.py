"""Layer groups: the units a study assigns one sparsity (and one precision) to.

Derived from the model's structure so that pruning never breaks a shape:

* residual nets (``BasicBlock``/``Bottleneck``): the convolutions *inside* each block — all but
  the last one, whose output is added to the shortcut — one group per stage (``layer1``...);
  RegNet (``ResBottleneckBlock``): the 1x1 and the grouped 3x3 before the last conv, and a
  squeeze-excitation's squeeze, one group per stage (``trunk_output.block1``...);
* MobileNet-style (``InvertedResidual``, EfficientNet's ``MBConv``, ShuffleNetV2's block): the
  1x1 conv that feeds a depthwise conv (pruning it also thins the depthwise conv) and a
  squeeze-excitation's squeeze; one group per stage: a container that holds one stage names it
  (``features.1``, ``stage2``...), else stages of equal output width are ``stage1``...;
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


def _excitations(module: nn.Module, prefix: str) -> list[tuple[str, str]]:
    """(squeeze, excite) conv paths of each squeeze-excitation: the squeeze's output channels are its
    own; the excite's are multiplied into the features, so they follow the conv it scales."""
    return [(f"{prefix}{n}.fc1", f"{prefix}{n}.fc2") for n, m in module.named_modules()
            if type(m).__name__ == "SqueezeExcitation"]


def _residual_groups(model: nn.Module) -> list[LayerGroup]:
    stages: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind in ("BasicBlock", "Bottleneck"):
            inner = [(n, m) for n, m in module.named_children() if isinstance(m, nn.Conv2d)]
            layers = [f"{name}.{n}" for n, m in inner[:-1] if m.groups == 1]
        elif kind == "ResBottleneckBlock":  # RegNet: the grouped 3x3 loses channels evenly per group
            excite = {e for _, e in _excitations(module.f, f"{name}.f.")}
            layers = [n for n, _ in _convs(module.f, f"{name}.f.")[:-1] if n not in excite]
        else:
            continue
        stage = name.rsplit(".", 1)[0] if "." in name else name
        stages.setdefault(stage, []).extend(layers)
    return [LayerGroup(stage, layers, scopes=[stage]) for stage, layers in stages.items() if layers]


def _depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _owned_widths(block: nn.Module, prefix: str) -> list[str]:
    """The block's convs whose output channels no other layer shares: a 1x1 conv that feeds a depthwise
    conv (pruning it thins the depthwise conv too) and a squeeze-excitation's squeeze."""
    convs = _convs(block, prefix)
    expansions = {n for (n, conv), (_, after) in zip(convs, convs[1:]) if conv.groups == 1 and conv.kernel_size == (1, 1)
                  and _depthwise(after) and after.in_channels == conv.out_channels}
    squeezes = {s for s, _ in _excitations(block, prefix)}
    return [n for n, _ in convs if n in expansions or n in squeezes]


def _inverted_residual_groups(model: nn.Module) -> list[LayerGroup]:
    # torchvision's ShuffleNetV2 block is an ``InvertedResidual`` too (branch2: 1x1, depthwise, 1x1)
    blocks = [(n, m) for n, m in model.named_modules() if type(m).__name__ in ("InvertedResidual", "MBConv")]
    runs: list[tuple[str, int, LayerGroup]] = []  # (container, output width, group)
    for name, block in blocks:
        convs = _convs(block, f"{name}.")
        out_width = convs[-1][1].out_channels
        container = name.rsplit(".", 1)[0] if "." in name else ""
        if not runs or runs[-1][:2] != (container, out_width):
            runs.append((container, out_width, LayerGroup(f"stage{len(runs) + 1}", [], scopes=[])))
        group = runs[-1][2]
        group.scopes.append(name)
        group.layers.extend(_owned_widths(block, f"{name}."))
    for container, _, group in runs:
        if container and sum(c == container for c, _, _ in runs) == 1:  # the container is the stage
            group.name, group.scopes = container, [container]
    return [g for _, _, g in runs if g.layers]


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
