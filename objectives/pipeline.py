"""One trial as named steps: prune -> speedup -> fine_tune -> deploy -> evaluate -> measure.

Input: the cached baseline and a :class:`TrialPlan` (what the searcher proposed). Output: a
:class:`TrialOutcome` with the metrics measured on the device and the deployment itself.
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from devices import Deployment, Device

from . import prune as pruning
from .data import DataSplits
from .evaluate import collapsed, topk_accuracy, torch_logits
from .finetune import TrainSettings, train
from .groups import LayerGroup
from .models import count_params, flops_and_params

PHASES = ("prune", "speedup", "fine_tune", "deploy", "evaluate", "measure")


class CollapsedError(RuntimeError):
    """Fine-tuning left the network near chance level; the trial stops before deployment."""

    def __init__(self, top1: float, num_classes: int):
        super().__init__(f"collapsed: Top-1 {top1:.1f}% after fine-tuning (chance is {100 / num_classes:.1f}%)")
        self.top1 = top1


@dataclass
class TrialContext:
    baseline: nn.Module
    data: DataSplits
    groups: list[LayerGroup]
    device: Device
    collapse_margin: float = 1.5


@dataclass
class TrialPlan:
    sparsity: dict[str, float]
    pruner: str = "l1"
    precision: dict[str, str] = field(default_factory=dict)
    finetune: TrainSettings = TrainSettings(epochs=2, lr=0.01)


@dataclass
class TrialOutcome:
    attributes: dict  # the contract of DESIGN.md, minus artifact_id (the searcher stores it)
    deployment: Deployment

    def __getitem__(self, key: str):
        return self.attributes[key]


class _Clock:
    def __init__(self, on_phase: Callable[[str], None] | None):
        self.seconds: dict[str, float] = {}
        self._on_phase = on_phase

    @contextmanager
    def phase(self, name: str):
        if self._on_phase:
            self._on_phase(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 4)


def run_trial(ctx: TrialContext, plan: TrialPlan, on_phase: Callable[[str], None] | None = None) -> TrialOutcome:
    clock = _Clock(on_phase)
    model = copy.deepcopy(ctx.baseline).eval()
    example = ctx.data.example_input(2)
    before = pruning.out_channels(model, ctx.groups)
    with clock.phase("prune"):
        configs = pruning.config_list(model, ctx.groups, plan.sparsity, example)
        masks = pruning.compute_masks(model, configs, plan.pruner) if configs else {}
    with clock.phase("speedup"):
        if masks:
            pruning.speedup(model, masks, example)
    achieved = pruning.achieved_sparsity(before, pruning.out_channels(model, ctx.groups), ctx.groups)
    with clock.phase("fine_tune"):
        torch.manual_seed(plan.finetune.seed)
        train(model, ctx.data.x_train, ctx.data.y_train, plan.finetune)
        check = topk_accuracy(torch_logits(model, ctx.data.x_val), ctx.data.y_val.numpy())
        if collapsed(check, ctx.data.num_classes, ctx.collapse_margin):
            raise CollapsedError(check, ctx.data.num_classes)
    attributes = deploy_and_measure(model, ctx, plan.precision, clock)
    attributes.update(sparsity_achieved=achieved, fine_tune_epochs=plan.finetune.epochs, pruner=plan.pruner,
                      seconds=clock.seconds)
    return TrialOutcome(attributes, attributes.pop("_deployment"))


def deploy_and_measure(model: nn.Module, ctx: TrialContext, precision: dict[str, str],
                       clock: _Clock | None = None) -> dict:
    """Deploy ``model`` on the device; Top-1 on the deployed artifact; latency by the protocol."""
    clock = clock or _Clock(None)
    example = ctx.data.example_input(2)
    flops, _ = flops_and_params(model, example)
    with clock.phase("deploy"):
        deployment = ctx.device.deploy(model, example, precision)
    with clock.phase("evaluate"):
        logits = deployment.predict(ctx.data.x_val.numpy())
        labels = ctx.data.y_val.numpy()
        top1, top5 = topk_accuracy(logits, labels, 1), topk_accuracy(logits, labels, 5)
    with clock.phase("measure"):
        stats = deployment.measure_latency()
    info = ctx.device.info().to_dict()
    info.update(inference_precision=deployment.inference_precision, threads_used=getattr(deployment, "threads", info["threads"]))
    return {
        "latency_ms": stats.median_ms,
        "latency_p90_ms": stats.p90_ms,
        "latency_mean_ms": stats.mean_ms,
        "latency_ci95_rel": stats.ci95_rel,
        "latency_runs": stats.runs,
        "latency_converged": stats.converged,
        "latency_device_ms": stats.device_median_ms,
        "top1": top1,
        "top5": top5,
        "params": count_params(model),
        "flops": flops,
        "size_bytes": deployment.size_bytes,
        "precision_plan": dict(precision) or {"*": "f32"},
        "precision_used": dict(deployment.precision_used),
        "device": info,
        "seconds": clock.seconds,
        "_deployment": deployment,
    }


def evaluate_baseline(ctx: TrialContext) -> dict:
    """The baseline's record, under the same names as a trial's."""
    attributes = deploy_and_measure(copy.deepcopy(ctx.baseline).eval(), ctx, {})
    attributes.pop("_deployment").close()
    return attributes
