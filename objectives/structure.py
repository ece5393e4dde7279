"""Residual stages: the two structural dimensions beyond inner widths, depth and stream width.

A *stage* is a run of residual blocks (``BasicBlock``, ``Bottleneck``, ``InvertedResidual``)
that carry one residual stream of one width: ``layer1``... in ResNets, the blocks of equal output
width in MobileNets.

* **Depth**: a block whose shortcut is the identity (same shape in and out, no projection) can be
  removed; it is replaced by ``nn.Identity`` under its own name, so the deployed graph loses its
  convolutions while every other module keeps its path. Which blocks go first is decided once per
  study by :func:`block_importance` (the rise in loss when each block alone is bypassed).
* **Stream width**: the channels of a stage's residual stream are written by every block's last
  convolution, the projection shortcut (or the stem, or the previous stage) that feeds the stage,
  and read by the next stage and the classifier. They must fall together, so they are pruned with
  Torch-Pruning's dependency graph (DepGraph), which finds that coupled group from the model itself.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .accelerator import CPU, Accelerator
from .errors import first_line

BLOCK_TYPES = ("BasicBlock", "Bottleneck", "InvertedResidual")


class StructureError(RuntimeError):
    """A depth or stream-width change that this model cannot take."""


@dataclass(frozen=True)
class Stage:
    """One residual stage: its blocks (module paths, in order) and the width of its stream."""

    name: str
    blocks: tuple[str, ...]
    removable: tuple[str, ...]  # blocks with an identity shortcut (never the first of a projection)
    stream_width: int
    writer: str  # the last convolution of the stage's first block: the root of the stream's coupled group

    @property
    def min_depth(self) -> int:
        return max(1, len(self.blocks) - len(self.removable))

    def to_dict(self) -> dict:
        return {"name": self.name, "blocks": list(self.blocks), "removable": list(self.removable),
                "stream_width": self.stream_width, "writer": self.writer}


def _is_block(module: nn.Module) -> bool:
    return type(module).__name__ in BLOCK_TYPES


def _last_conv(block: nn.Module, path: str) -> tuple[str, nn.Conv2d]:
    convs = [(f"{path}.{n}", m) for n, m in block.named_modules() if isinstance(m, nn.Conv2d)
             and not n.startswith("downsample")]
    return convs[-1]


def has_identity_shortcut(block: nn.Module) -> bool:
    """True when the block adds its input unchanged to its output (so it can be bypassed)."""
    if type(block).__name__ == "InvertedResidual":
        return bool(getattr(block, "use_res_connect", False))
    if getattr(block, "downsample", None) is not None:
        return False
    stride = getattr(getattr(block, "conv1", None), "stride", (1, 1))
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return tuple(stride) == (1, 1) and convs[0].in_channels == convs[-1].out_channels


def residual_stages(model: nn.Module) -> list[Stage]:
    """The model's residual stages in order; empty for a model without residual blocks."""
    runs: list[tuple[str, list[tuple[str, nn.Module]]]] = []
    for name, module in model.named_modules():
        if not _is_block(module) or any(_is_block(m) for n, m in module.named_modules() if n):
            continue
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        width = _last_conv(module, name)[1].out_channels
        # a new stage where the container changes (ResNet's layerN) or the stream's width does (MobileNet)
        if runs and runs[-1][0] == parent and _last_conv(runs[-1][1][-1][1], runs[-1][1][-1][0])[1].out_channels == width:
            runs[-1][1].append((name, module))
        else:
            runs.append((parent, [(name, module)]))
    stages = []
    for index, (parent, blocks) in enumerate(runs):
        # one stage per container (ResNet's layer1...) takes its name; else stage1, stage2... as layer groups do
        unique = parent and sum(p == parent for p, _ in runs) == 1
        stage_name = parent if unique else f"stage{index + 1}"
        first_path, first = blocks[0]
        writer, conv = _last_conv(first, first_path)
        stages.append(Stage(stage_name, tuple(p for p, _ in blocks),
                            tuple(p for p, b in blocks if has_identity_shortcut(b)), conv.out_channels, writer))
    return stages


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted ``path`` of ``model`` in place of what is there."""
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and child.isdigit():
        parent[int(child)] = module
    else:
        setattr(parent, child, module)


def blocks_to_remove(stage: Stage, depth: int, importance: dict[str, float]) -> list[str]:
    """The least important removable blocks of ``stage`` so that ``depth`` blocks remain."""
    depth = max(stage.min_depth, min(depth, len(stage.blocks)))
    ranked = sorted(stage.removable, key=lambda b: (importance.get(b, 0.0), b))
    return ranked[: len(stage.blocks) - depth]


def remove_blocks(model: nn.Module, blocks: list[str]) -> nn.Module:
    """Replace each block by the identity (in place): its shortcut is all that is left."""
    for path in blocks:
        set_module(model, path, nn.Identity())
    return model


def removed_blocks(model: nn.Module, stages: list[Stage]) -> list[str]:
    return [b for s in stages for b in s.blocks if isinstance(model.get_submodule(b), nn.Identity)]


@torch.no_grad()
def block_importance(model: nn.Module, stages: list[Stage], images: torch.Tensor, labels: torch.Tensor,
                     batch_size: int = 128, on: Accelerator = CPU) -> dict[str, float]:
    """Per removable block: how much the loss rises when that block alone is bypassed (higher: keep).

    Measured on ``images`` (a slice of the validation data) with the trained baseline in eval mode,
    in f32 on ``on``'s device (a copy of ``model`` goes there; ``model`` stays where it is).
    """
    if stages and on.device != next(model.parameters()).device:
        model = copy.deepcopy(model).to(on.device)
    images, labels = images.to(on.device), labels.to(on.device)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")

    def loss_of(candidate: nn.Module) -> float:
        candidate.eval()
        total = sum(loss_fn(candidate(images[i:i + batch_size]), labels[i:i + batch_size]).item()
                    for i in range(0, len(images), batch_size))
        return total / len(images)

    scores = {}
    with on.repeatable():  # the same ranking every run on one GPU, as training and evaluation are
        reference = loss_of(model)
        for stage in stages:
            for path in stage.removable:
                original = model.get_submodule(path)
                set_module(model, path, nn.Identity())
                try:
                    scores[path] = round(loss_of(model) - reference, 6)
                finally:
                    set_module(model, path, original)
    return scores


def _importance(pruner: str):
    import torch_pruning as tp

    if pruner == "fpgm":
        return tp.importance.FPGMImportance(p=2)
    return tp.importance.GroupMagnitudeImportance(p=1 if pruner == "l1" else 2)


def prune_streams(model: nn.Module, stages: list[Stage], widths: dict[str, int], example_input: torch.Tensor,
                  pruner: str = "l1") -> nn.Module:
    """Keep ``widths[stage]`` channels of each stage's residual stream (in place), chosen by the
    pruner's criterion summed over the whole coupled group (every writer and reader of the stream)."""
    import torch_pruning as tp

    todo = [(s, widths[s.name]) for s in stages if s.name in widths and widths[s.name] < s.stream_width]
    if not todo:
        return model
    was_training = model.training
    model.eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input[:1])
    importance = _importance(pruner)
    for stage, keep in todo:
        writer = stream_writer(model, stage)
        channels = writer.out_channels
        if keep < 1:
            raise StructureError(f"stream width of {stage.name}: at least one channel must be kept, got {keep}")
        group = graph.get_pruning_group(writer, tp.prune_conv_out_channels, idxs=list(range(channels)))
        scores = importance(group)
        if scores is None:
            raise StructureError(f"stream width of {stage.name}: no importance for its coupled group")
        drop = torch.argsort(scores)[: channels - keep].tolist()
        group = graph.get_pruning_group(writer, tp.prune_conv_out_channels, idxs=sorted(drop))
        if not graph.check_pruning_group(group):
            raise StructureError(f"stream width of {stage.name}: {keep} channels would empty a layer")
        group.prune()
    model.train(was_training)
    return model


def stream_pruning_error(model: nn.Module, stages: list[Stage], example_input: torch.Tensor,
                         multiple: int) -> str | None:
    """Why this model's residual streams cannot be pruned, or None when they can: every stage's
    stream narrowed by one multiple, on a copy, must prune and run. Some graphs defeat the tracer
    (Torch-Pruning 1.6 divides by zero on ShuffleNet's channel shuffle): a study learns it once,
    before its first trial, rather than from every trial failing."""
    widths = {s.name: s.stream_width - multiple for s in stages if s.stream_width > multiple}
    if not widths:
        return None
    candidate = copy.deepcopy(model).eval()
    try:
        prune_streams(candidate, stages, widths, example_input)
        with torch.no_grad():
            candidate(example_input)
    except Exception as error:  # noqa: BLE001 - whatever the tracer or the pruned graph raises is the reason
        return first_line(error, typed=True)
    return None


def stream_writer(model: nn.Module, stage: Stage) -> nn.Conv2d:
    """The last convolution of the stage's first block still present (removed blocks are identities)."""
    for path in stage.blocks:
        block = model.get_submodule(path)
        if not isinstance(block, nn.Identity):
            return _last_conv(block, path)[1]
    raise StructureError(f"stage {stage.name} has no block left")


def stream_widths(model: nn.Module, stages: list[Stage]) -> dict[str, int]:
    """The realized width of each stage's stream (read from its writer convolution)."""
    return {s.name: stream_writer(model, s).out_channels for s in stages}


def depths(model: nn.Module, stages: list[Stage]) -> dict[str, int]:
    """Blocks still present in each stage."""
    return {s.name: sum(not isinstance(model.get_submodule(b), nn.Identity) for b in s.blocks) for s in stages}

