"""One trial as named steps: prune -> speedup -> [screen] -> fine_tune -> deploy -> evaluate -> measure.

Input: the cached baseline and a :class:`TrialPlan` (what the searcher proposed). Output: a
:class:`TrialOutcome` with the metrics measured on the device and the deployment itself.
"""
from __future__ import annotations

import copy
import functools
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgetune.devices import Deployment, Device, LatencyStats, PrecisionPlan
from edgetune.devices.protocol import exclusive, thread_table

from . import prune as pruning
from . import structure
from .accelerator import CPU, Accelerator
from .data import Samples, Splits
from .evaluate import collapsed, per_class_accuracy, topk_accuracy, torch_logits
from .finetune import TrainSettings, logits_of, train
from .groups import OTHER, LayerGroup, compute_layers, other_layers
from .models import count_params, flops_and_params
from .qdq import with_learned_int8
from .quantize import qat_finetune
from .structure import Stage
from .trial_record import PHASES, TrialRecord, at


class TooSlowError(RuntimeError):
    """The pruned model, timed before fine-tuning, misses the study's latency limit: fine-tuning is skipped."""

    def __init__(self, latency_ms: float, limit_ms: float, seconds: dict[str, float]):
        super().__init__(f"too slow: {latency_ms:.3f} ms before fine-tuning, limit {limit_ms:.3f} ms")
        self.latency_ms, self.limit_ms, self.seconds = latency_ms, limit_ms, seconds


class CollapsedError(RuntimeError):
    """Fine-tuning left the network near chance level; the trial stops before deployment."""

    def __init__(self, top1: float, num_classes: int):
        super().__init__(f"collapsed: Top-1 {top1:.1f}% after fine-tuning (chance is {100 / num_classes:.1f}%)")
        self.top1 = top1


@dataclass(frozen=True)
class Reference:
    """The baseline deployed on a device, and its recorded latency there: every trial is timed paired
    with it, so drift of the host between trials cancels out (see devices.protocol.measure_paired)."""

    deployment: Deployment
    latency_ms: float
    # Its latency at each thread count it was measured at (the record's ``latency_by_threads``): a
    # trial is paired with it at the count where the trial's model runs fastest. Empty: one count.
    by_threads: dict[int, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, deployment: Deployment, baseline: dict, device: str | None = None) -> "Reference":
        """From the study's baseline record (``device``: a further device's name, whose fields it reads)."""
        def name(key: str) -> str:
            return at(key, device) if device else key

        by_threads = baseline.get(name("latency_by_threads"))
        return cls(deployment, baseline[name("latency_ms")], thread_table(by_threads) if by_threads else {})

    def latency_at(self, threads: int | None) -> float:
        return self.by_threads[threads][0] if threads in self.by_threads else self.latency_ms


@dataclass(frozen=True)
class OtherDevice:
    """A further device each model is timed on (spec ``device.also``), paired with its own baseline."""

    name: str  # as the spec names it: the attributes are ``latency_ms@<name>``, ...
    device: Device
    reference: Reference | None = None

    def plan_for(self, plan: PrecisionPlan) -> PrecisionPlan:
        """The same model within what this device runs: a float precision it lacks becomes f32,
        int8 modules stay float where it has no int8."""
        supported = self.device.precisions()
        float_precision = plan.float_precision if plan.float_precision in supported else "f32"
        int8 = plan.int8_modules if "int8" in supported else ()
        return PrecisionPlan(float_precision, int8, plan.calibration if int8 else None)


@dataclass
class TrialContext:
    baseline: nn.Module
    data: Splits
    groups: list[LayerGroup]
    device: Device
    collapse_margin: float = 1.5
    calibration_size: int = 300
    reference: Reference | None = None  # None only while the baseline itself is measured (see paired_with)
    throughput: bool = False  # also measure images/s with asynchronous requests
    energy: bool = False  # also measure energy per inference (the device's counter: devices.energy)
    also: list[OtherDevice] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)  # residual stages: depth and stream width
    block_importance: dict[str, float] = field(default_factory=dict)  # computed once per study
    # Where fine-tuning and its checks run (spec [train]); the baseline, pruning, speedup and deployment
    # stay on the CPU, and a model moves to this device to train and back after.
    train_on: Accelerator = CPU

    @functools.cached_property
    def baseline_flops(self) -> int:
        return flops_and_params(self.baseline, self.data.example_input(2))[0]

    @functools.cached_property
    def train_set(self) -> Samples:
        """The training split where batches are drawn from (tensors on the GPU when they fit; a streamed
        folder's loader, its workers kept), placed once per worker, not once per trial."""
        return self.data.train.placed(self.train_on)

    @functools.cached_property
    def val_images(self) -> Samples:
        return self.data.val.placed(self.train_on)

    @functools.cached_property
    def teacher_logits(self) -> torch.Tensor:
        """The baseline's logits on the training images, computed on the training device and kept there:
        what a distilled fine-tune learns from."""
        teacher = copy.deepcopy(self.baseline).to(self.train_on.device)
        return self.train_on.place(logits_of(teacher, self.train_set, on=self.train_on))


@dataclass
class TrialPlan:
    """What the searcher proposed. ``int8_groups`` may include ``"other"`` (stem, head, ...).

    Widths are output channels kept; a group or stage absent from ``inner``, ``stream`` or
    ``depth`` is left as it is in the baseline."""

    inner: dict[str, int] = field(default_factory=dict)  # group -> channels kept by its widest layer
    stream: dict[str, int] = field(default_factory=dict)  # stage -> channels of its residual stream
    depth: dict[str, int] = field(default_factory=dict)  # stage -> blocks kept
    channel_multiple: int = 1  # narrower layers of a group keep a share of their width rounded to this
    pruner: str = "l1"
    float_precision: str = "f32"
    int8_groups: frozenset[str] = frozenset()
    # "qat": NNI QAT while fine-tuning int8 groups, then the device calibrates; "qat-qdq": deployed with the
    # scales QAT learned (objectives/qdq.py); "ptq": calibration only
    quantization: str = "qat"
    finetune: TrainSettings = TrainSettings(epochs=2, lr=0.01)
    # A model that removed compute fine-tunes longer at about the same cost: epochs x baseline
    # FLOPs / its FLOPs, up to this (None: always finetune.epochs). Shallow models need it (BENCHMARKS.md).
    max_epochs: int | None = None

    def precision_plan(self, groups: list[LayerGroup]) -> dict[str, str]:
        """Group -> precision, as recorded on the trial."""
        names = [g.name for g in groups] + [OTHER]
        return {name: "int8" if name in self.int8_groups else self.float_precision for name in names}


def int8_modules(model: nn.Module, groups: list[LayerGroup], int8_groups: frozenset[str]) -> list[str]:
    """Module paths that run in int8 for this plan (group scopes, and the loose layers of "other")."""
    modules = [scope for g in groups if g.name in int8_groups for scope in g.scopes]
    if OTHER in int8_groups:
        modules += other_layers(model, groups)
    return modules


@dataclass
class TrialOutcome:
    attributes: TrialRecord  # what the searcher stores, less what it adds itself (objectives/trial_record.py)
    deployment: Deployment
    model: nn.Module  # the pruned, fine-tuned PyTorch model that was deployed
    predictions: np.ndarray  # the deployed model's class for each validation image


class PhaseClock:
    """Seconds spent in each named phase of a trial (``with clock.phase("deploy"):``, one of
    trial_record.PHASES), announced to ``on_phase`` as each starts."""

    def __init__(self, on_phase: Callable[[str], None] | None):
        self.seconds: dict[str, float] = {}
        self._on_phase = on_phase

    @contextmanager
    def phase(self, name: str):
        if name not in PHASES:
            raise ValueError(f"phase {name!r} is not in trial_record.PHASES")
        if self._on_phase:
            self._on_phase(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 4)


def shrink(model: nn.Module, ctx: TrialContext, plan: TrialPlan, clock: "PhaseClock") -> str | None:
    """Remove blocks, prune residual streams, prune inner widths (in place); returns the engine that
    removed the inner widths' channels ("nni", "torch-pruning"; None when none were pruned)."""
    example = ctx.data.example_input(2)
    with clock.phase("prune"):
        removed = [b for s in ctx.stages if s.name in plan.depth
                   for b in structure.blocks_to_remove(s, plan.depth[s.name], ctx.block_importance)]
        structure.remove_blocks(model, removed)
        structure.prune_streams(model, ctx.stages, plan.stream, example, plan.pruner)
        keep = pruning.kept_channels(model, ctx.groups, plan.inner, plan.channel_multiple)
        configs = pruning.config_list(model, ctx.groups, keep, example)
        masks = pruning.compute_masks(model, configs, plan.pruner) if configs else {}
    with clock.phase("speedup"):
        return pruning.remove_channels(model, masks, example) if masks else None


def screen_latency(model: nn.Module, ctx: TrialContext, plan: PrecisionPlan, clock: "PhaseClock") -> float:
    """The latency of the pruned model before fine-tuning: latency depends on the structure and the
    precisions, not on the weights' values, so a candidate that misses a limit is known in seconds."""
    with clock.phase("screen"):
        deployment = ctx.device.deploy(model, ctx.data.example_input(2), plan)
        try:
            return timed(deployment, ctx.device, ctx.reference)[1]
        finally:
            deployment.close()


def timed(deployment: Deployment, device: Device, reference: Reference | None) -> tuple[LatencyStats, float]:
    """Measure by the protocol, holding the device host-wide; paired with ``reference`` when there is
    one, the latency is put on the baseline's scale: its recorded latency x the paired ratio, so
    drift of the host between trials cancels out (see devices.protocol.measure_paired)."""
    with exclusive(device.info().name):
        if reference is None:
            stats = deployment.measure_latency()
        else:  # an empty by_threads: the baseline was timed at one count, the trial is paired there
            stats = deployment.measure_latency(reference.deployment, reference.by_threads)
    return stats, (reference.latency_ms * stats.ratio if reference else stats.median_ms)


def trial_epochs(model: nn.Module, ctx: TrialContext, plan: TrialPlan) -> int:
    """How long this pruned model fine-tunes: ``finetune.epochs``, scaled by the compute it removed (the
    baseline's FLOPs over its own), up to ``max_epochs``; its FLOPs are counted only when the cap allows more."""
    epochs = plan.finetune.epochs
    if not plan.max_epochs or plan.max_epochs <= epochs:
        return epochs
    flops = flops_and_params(model, ctx.data.example_input(2))[0]
    if flops <= 0:
        return epochs
    return max(epochs, min(plan.max_epochs, round(epochs * ctx.baseline_flops / flops)))


def run_trial(ctx: TrialContext, plan: TrialPlan, on_phase: Callable[[str], None] | None = None,
              latency_limit_ms: float | None = None) -> TrialOutcome:
    """The trial's steps; with ``latency_limit_ms``, the pruned model is timed before fine-tuning and
    a model slower than the limit stops there (:class:`TooSlowError`)."""
    clock = PhaseClock(on_phase)
    model = copy.deepcopy(ctx.baseline).eval()
    engine = shrink(model, ctx, plan, clock)
    device_plan = device_plan_for(model, ctx, plan)
    untrained_ms = None
    if latency_limit_ms is not None:
        untrained_ms = screen_latency(model, ctx, device_plan, clock)
        if untrained_ms > latency_limit_ms:
            raise TooSlowError(untrained_ms, latency_limit_ms, clock.seconds)
    epochs = trial_epochs(model, ctx, plan)
    outcome = fine_tune_and_measure(model, ctx, plan, replace(plan.finetune, epochs=epochs), device_plan, clock)
    outcome.attributes["prune_engine"] = engine
    if untrained_ms is not None:
        outcome.attributes["latency_untrained_ms"] = untrained_ms  # the screen's timing, to compare with latency_ms
    return outcome


def device_plan_for(model: nn.Module, ctx: TrialContext, plan: TrialPlan) -> PrecisionPlan:
    """How the pruned model runs on the device: its float precision, its int8 modules, calibration images."""
    quantized = int8_modules(model, ctx.groups, plan.int8_groups)
    calibration = ctx.data.calibration_subset(ctx.calibration_size).numpy() if quantized else None
    return PrecisionPlan(plan.float_precision, tuple(quantized), calibration)


def fine_tune_and_measure(model: nn.Module, ctx: TrialContext, plan: TrialPlan, settings: TrainSettings,
                          device_plan: PrecisionPlan, clock: "PhaseClock") -> TrialOutcome:
    """Fine-tune a pruned model (in place; quantization-aware for its int8 modules), deploy it, evaluate
    it on the device and measure it; the outcome records its structure as realized."""
    quantized = list(device_plan.int8_modules)
    on = ctx.train_on
    qat = bool(quantized) and plan.quantization in ("qat", "qat-qdq")
    with clock.phase("fine_tune"):
        torch.manual_seed(settings.seed)
        teacher = ctx.teacher_logits if settings.distill > 0 else None
        scales = {}
        model.to(on.device)
        try:
            if qat:
                _, scales = qat_finetune(model, compute_layers(model, quantized), ctx.train_set, None, settings, teacher, on)
            else:
                train(model, ctx.train_set, None, settings, teacher_logits=teacher, on=on)
            check = topk_accuracy(torch_logits(model, ctx.val_images, on=on), ctx.data.y_val.numpy())
        finally:
            model.cpu()  # deployment, counting and the artifact start from the CPU, wherever it trained
        if collapsed(check, ctx.data.num_classes, ctx.collapse_margin):
            raise CollapsedError(check, ctx.data.num_classes)
    on_device, device_plan_used = model, device_plan
    if scales and plan.quantization == "qat-qdq":  # the scales QAT trained with, deployed as they are
        on_device = with_learned_int8(model, scales)
        device_plan_used = replace(device_plan, int8_scales="model",
                                   calibration=device_plan.calibration if ctx.device.calibrates_model_int8_outputs else None)
    measured = deploy_and_measure(on_device, ctx, device_plan_used, clock, counted=model)
    attributes = measured.attributes
    channels = pruning.out_channels(model, ctx.groups)
    attributes.update(sparsity_achieved=pruning.achieved_sparsity(pruning.out_channels(ctx.baseline, ctx.groups), channels,
                                                                  ctx.groups),
                      channels=channels, inner_width=pruning.group_widths(channels, ctx.groups),
                      fine_tune_epochs=settings.epochs, distill=settings.distill, pruner=plan.pruner,
                      train_device=on.name, train_amp="off" if qat or on.amp is None else on.amp,
                      precision_plan=plan.precision_plan(ctx.groups), quantization=plan.quantization if quantized else None,
                      calibration_size=0 if device_plan_used.calibration is None else len(device_plan_used.calibration),
                      seconds=clock.seconds,
                      channel_multiple=plan.channel_multiple)
    if ctx.stages:
        attributes.update(depth=structure.depths(model, ctx.stages), stream_width=structure.stream_widths(model, ctx.stages),
                          blocks_removed=structure.removed_blocks(model, ctx.stages))
    for other in ctx.also:
        attributes.update(measure_on(other, model, ctx, device_plan, clock))
    attributes["precision_used_by_group"] = precision_by_group(measured.deployment, model, ctx.groups)
    return TrialOutcome(attributes, measured.deployment, model, measured.predictions)


def precision_by_group(deployment: Deployment, model: nn.Module, groups: list[LayerGroup]) -> dict[str, dict[str, int]]:
    """What each group really runs in, read back from the deployed model."""
    result = {g.name: deployment.precision_of(list(g.scopes)) for g in groups}
    result[OTHER] = deployment.precision_of(other_layers(model, groups))
    return result


@dataclass
class Measured:
    """A deployed model's record (JSON-safe attributes) and the live objects beside it."""

    attributes: TrialRecord
    deployment: Deployment
    predictions: np.ndarray  # the deployed model's class for each validation image


def deploy_and_measure(model: nn.Module, ctx: TrialContext, plan: PrecisionPlan = PrecisionPlan(),
                       clock: PhaseClock | None = None, counted: nn.Module | None = None) -> Measured:
    """Deploy ``model`` on the device; Top-1 on the deployed artifact; latency by the protocol.
    ``counted``: the model whose FLOPs and parameters are recorded, where ``model`` is a copy with its
    int8 ops written in (objectives/qdq.py: folded batch norms, layers NNI's counter does not know)."""
    clock = clock or PhaseClock(None)
    example = ctx.data.example_input(2)
    counted = model if counted is None else counted
    flops, _ = flops_and_params(counted, example)
    with clock.phase("deploy"):
        deployment = ctx.device.deploy(model, example, plan)
    with clock.phase("evaluate"):
        logits = np.concatenate([deployment.predict(images) for images in ctx.data.val_arrays()])
        labels = ctx.data.y_val.numpy()
        top1, top5 = topk_accuracy(logits, labels, 1), topk_accuracy(logits, labels, 5)
        class_top1 = per_class_accuracy(logits.argmax(axis=1), labels, ctx.data.num_classes)
    with clock.phase("measure"):
        stats, latency_ms = timed(deployment, ctx.device, ctx.reference)
        with exclusive(ctx.device.info().name):
            throughput = deployment.measure_throughput() if ctx.throughput else None
    with clock.phase("memory"), exclusive(ctx.device.info().name):  # the probe runs inferences: not beside a timing
        memory = deployment.memory_bytes()
    energy = None
    if ctx.energy:
        with clock.phase("energy"), exclusive(ctx.device.info().name):  # inferences for a second or more
            energy = deployment.measure_energy()
    drift = stats.reference_median_ms / ctx.reference.latency_at(stats.threads) if stats.ratio is not None else 1.0
    info = ctx.device.info().to_dict()
    info.update(inference_precision=deployment.inference_precision, threads_used=deployment.threads)
    attributes: TrialRecord = {
        "latency_ms": latency_ms,
        "latency_p90_ms": stats.p90_ms / drift,
        "latency_mean_ms": stats.mean_ms / drift,
        "latency_ci95_rel": stats.ci95_rel,
        "latency_runs": stats.runs,
        "latency_converged": stats.converged,
        "latency_raw_ms": stats.median_ms,
        "latency_vs_baseline": stats.ratio,
        "latency_drift": drift,
        "latency_device_ms": stats.device_median_ms,
        "throughput_fps": throughput,
        "top1": top1,
        "top5": top5,
        "class_top1": [round(v, 3) for v in class_top1],
        "params": count_params(counted),
        "flops": flops,
        "size_bytes": deployment.size_bytes,
        "weights_bytes": deployment.weights_bytes,
        "memory_bytes": memory,  # None where the device cannot tell (devices.base.Deployment.memory_bytes)
        "energy_mj": energy.energy_mj if energy else None,  # per inference of one batch, idle draw included
        "energy": energy.to_dict() if energy else None,  # idle power, window, counter (devices.energy.EnergyStats)
        "runtime": deployment.runtime,  # what executed the model (e.g. cuda-graph)
        "runtime_fallback": deployment.runtime_fallback,  # why not the adapter's preferred runtime, if not
        "precision_plan": {"*": plan.float_precision} if not plan.int8_modules else {},
        "precision_used": dict(deployment.precision_used),
        "device": info,
        "seconds": clock.seconds,
    }
    if stats.by_threads:  # measured at several thread counts: the baseline (a trial is paired at one)
        attributes["latency_by_threads"] = stats.by_threads
    return Measured(attributes, deployment, logits.argmax(axis=1).astype(np.int16))


def measure_on(other: OtherDevice, model: nn.Module, ctx: TrialContext, plan: PrecisionPlan,
               clock: PhaseClock) -> dict:
    """Latency of the same model on a further device (paired with that device's baseline)."""
    with clock.phase("deploy"):
        deployment = other.device.deploy(model, ctx.data.example_input(2), other.plan_for(plan))
    try:
        with clock.phase("measure"):
            stats, latency_ms = timed(deployment, other.device, other.reference)
    finally:
        deployment.close()
    return further_device_fields(other.name, stats, latency_ms, deployment)


def further_device_fields(name: str, stats: LatencyStats, latency_ms: float, deployment: Deployment) -> dict:
    """A further device's record fields (``latency_ms@<name>``, ...); ``latency_ms``: paired and drift-corrected
    for a trial, the plain median for the baseline."""
    fields = {at("latency_ms", name): latency_ms, at("latency_ci95_rel", name): stats.ci95_rel,
              at("latency_raw_ms", name): stats.median_ms, at("inference_precision", name): deployment.inference_precision}
    if stats.by_threads:  # the baseline, measured at several thread counts
        fields[at("latency_by_threads", name)] = stats.by_threads
    return fields


def _deploy_baseline_on(device: Device, ctx: TrialContext) -> Deployment:
    return device.deploy(copy.deepcopy(ctx.baseline).eval(), ctx.data.example_input(2), PrecisionPlan("f32"))


def evaluate_baseline(ctx: TrialContext) -> tuple[TrialOutcome, dict[str, Deployment]]:
    """The baseline's record, under the same names as a trial's, with its deployment; and the
    baseline deployed on every further device (by name), timed there too."""
    assert ctx.reference is None, "the baseline is measured on its own, not paired"
    model = copy.deepcopy(ctx.baseline).eval()
    measured = deploy_and_measure(model, ctx, PrecisionPlan("f32"))
    attributes, others = measured.attributes, {}
    for other in ctx.also:
        others[other.name] = _deploy_baseline_on(other.device, ctx)
        with exclusive(other.device.info().name):
            stats = others[other.name].measure_latency()
        attributes.update(further_device_fields(other.name, stats, stats.median_ms, others[other.name]))
    return TrialOutcome(attributes, measured.deployment, model, measured.predictions), others


def deploy_baseline(ctx: TrialContext) -> tuple[Deployment, dict[str, Deployment]]:
    """The baseline at f32 on the device and on every further one (by name), to pair trials with
    (a resumed study: not re-measured)."""
    return _deploy_baseline_on(ctx.device, ctx), {o.name: _deploy_baseline_on(o.device, ctx) for o in ctx.also}


def paired_with(ctx: TrialContext, deployment: Deployment, others: dict[str, Deployment], baseline: dict) -> TrialContext:
    """The context trials run in: ``ctx`` with the deployed baseline on each device and its recorded
    latency there (``baseline``: the study's baseline record), so every trial is timed paired."""
    return replace(
        ctx, reference=Reference.of(deployment, baseline),
        also=[replace(o, reference=Reference.of(others[o.name], baseline, o.name)) for o in ctx.also])
