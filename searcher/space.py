"""Spec + layer groups + residual stages + device capabilities -> ``trial.suggest_*`` -> a TrialPlan.

The parameters are named by :mod:`searcher.params`; this module gives each its range.

Structure: for each layer group, the inner width is how many whole multiples of the study's
channel multiple (the device's channel granularity, or ``search.channel_multiple``) its widest
layer keeps; for each residual stage, the stream width is the same for the stage's residual
stream and the depth the number of blocks kept. Counting multiples, not a sparsity,
means two parameter values never give the same model, and every width is one the hardware runs
efficiently (the last multiple may be partial: the full width). Every dimension can be switched
off in the spec; one with a single choice is recorded, not searched.

Precision: the device runs one float precision per model (OpenVINO's inference precision hint)
and int8 per layer (NNCF). So a trial picks one float precision among those allowed, and for
each group (and ``other``: stem and head) "float" or "int8". The searcher never proposes a
precision the device cannot run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from torch import nn

from edgetune.devices import DeviceInfo
from edgetune.objectives.finetune import TrainSettings
from edgetune.objectives.groups import OTHER, LayerGroup
from edgetune.objectives.pipeline import TrialPlan
from edgetune.objectives.structure import Stage

from .params import DEPTH, FLOAT, INNER, PRECISION, PRUNER, WIDTH, Choices, decode, kind_of, param_name
from .spec import Spec, SpecError


def check_targets(spec: Spec, device: DeviceInfo) -> None:
    """The targets ask nothing of the device it cannot measure (``memory``: not every runtime can tell;
    ``energy``: not every device has a counter)."""
    if "memory" in spec.targets and not device.measures_memory:
        raise SpecError(f"target 'memory': {device.name} cannot measure a deployed model's memory on this host "
                        "(openvino:CPU, cpu and cuda can, on Linux); remove it from --target")
    if ("energy" in spec.targets or spec["device.energy"]) and not device.measures_energy:
        what = "target 'energy'" if "energy" in spec.targets else "spec key 'device.energy'"
        raise SpecError(f"{what}: {device.name} has no energy counter on this host (a CUDA GPU through NVML, "
                        "a Linux CPU through RAPL where /sys/class/powercap is readable)"
                        + ("; remove it from --target" if "energy" in spec.targets else ""))


def allowed_precisions(spec: Spec, device: DeviceInfo) -> list[str]:
    """The precisions the study may use: the spec's list (or "auto") within what the device runs."""
    wanted = spec["search.precisions"]
    fixed = list((spec["search.fixed_precisions"] or {}).values())
    if wanted == "auto":
        wanted = list(device.precisions)
    for precision in list(wanted) + fixed:
        if precision not in device.precisions:
            key = "search.precisions" if precision in wanted else "search.fixed_precisions"
            raise SpecError(f"spec key '{key}': precision {precision!r} is not supported by {device.name}; "
                            f"supported: {', '.join(device.precisions)}")
    if not [p for p in wanted if p != "int8"]:
        raise SpecError(f"spec key 'search.precisions': needs a float precision too ({', '.join(p for p in device.precisions if p != 'int8')})")
    return list(wanted)


def check_fixed_precisions(spec: Spec, groups: list[LayerGroup]) -> None:
    names = [g.name for g in groups] + [OTHER]
    fixed = spec["search.fixed_precisions"] or {}
    for group in fixed:
        if group not in names:
            raise SpecError(f"spec key 'search.fixed_precisions.{group}': no such group; groups: {', '.join(names)}")
    floats = {p for p in fixed.values() if p != "int8"}
    if len(floats) > 1:
        raise SpecError("spec key 'search.fixed_precisions': the device runs one float precision per model, "
                        f"got {', '.join(sorted(floats))}")


def channel_multiple(spec: Spec, device: DeviceInfo, precisions: list[str]) -> tuple[int, str]:
    """The multiple every searched width is made of, and where it came from.

    The spec's ``search.channel_multiple``, or (0, the default) the device's declared granularity:
    the largest over the precisions the study may use, so a width pays off at any of them."""
    chosen = spec["search.channel_multiple"]
    if chosen:
        return int(chosen), "spec"
    return max(device.granularity(p) for p in precisions), f"device {device.name}"


@dataclass(frozen=True)
class Widths:
    """The channel counts one width may take: 1..n whole multiples, the last capped at the full width."""

    full: int
    multiple: int
    fewest: int  # multiples

    @property
    def most(self) -> int:
        return math.ceil(self.full / self.multiple)

    @property
    def searched(self) -> bool:
        return self.most > self.fewest

    def channels(self, multiples: int) -> int:
        return min(self.full, multiples * self.multiple)

    def kept_at(self, share: float) -> int:
        """The multiples that keep ``share`` of the width (rounded up, never fewer than allowed)."""
        return max(self.fewest, math.ceil(self.most * share - 1e-9))

    def describe(self) -> str:
        if not self.searched:
            return f"{self.full} (fixed)"
        values = [self.channels(k) for k in range(self.fewest, self.most + 1)]
        if self.full % self.multiple == 0:
            return f"{values[0]}..{self.full} step {self.multiple}"
        if len(values) <= 3:  # the capped last width breaks the step: 16, 24 is not 16..24 step 16
            return ", ".join(map(str, values))
        return f"{values[0]}..{values[-2]} step {self.multiple}, {self.full}"

    @classmethod
    def of(cls, full: int, multiple: int, max_sparsity: float) -> "Widths":
        fewest = max(1, math.ceil(full * (1.0 - max_sparsity) / multiple - 1e-9))
        return cls(full, multiple, min(fewest, math.ceil(full / multiple)))


@dataclass(frozen=True)
class SearchSpace:
    """Every dimension a study searches, with its range; built once per run from the baseline."""

    precisions: list[str]
    multiple: int = 1
    multiple_source: str = "spec"
    inner: dict[str, Widths] = field(default_factory=dict)  # group -> inner widths
    stream: dict[str, Widths] = field(default_factory=dict)  # stage -> residual-stream widths
    depth: dict[str, tuple[int, int]] = field(default_factory=dict)  # stage -> (fewest, most) blocks
    stream_error: str | None = None  # why the stream widths are not searched on this model
    quantization: str = "qat"  # how int8 groups are trained and deployed (search.quantization, "auto" resolved)
    # Width parameters the multiple leaves one value that a finer one would search (a 16-channel layer
    # at a granularity of 16), and the largest finer multiple (a halving) that searches them all.
    collapsed: tuple[str, ...] = ()
    finer_multiple: int = 0

    def collapse_note(self, rest: str = "") -> str:
        """What the multiple collapsed (``rest`` added to it) and how to search it anyway; "" when nothing."""
        if not self.collapsed:
            return ""
        cost = (f" (a width between two multiples of {self.multiple} runs about as fast as the next one up)"
                if self.multiple_source != "spec" else "")
        return (f"widths in multiples of {self.multiple} (from the {self.multiple_source}) leave "
                f"{', '.join(self.collapsed)} one value{rest}; set search.channel_multiple = {self.finer_multiple} "
                f"to search finer widths anyway{cost}")

    def describe(self, groups: list[str] | None = None) -> list[dict]:
        """One row per dimension: parameter, what it is, its range; with the layer ``groups``' names, the
        precisions too."""
        rows = [{"parameter": param_name(INNER, g), "dimension": "inner width", "range": w.describe()} for g, w in self.inner.items()]
        rows += [{"parameter": param_name(WIDTH, s), "dimension": "stream width", "range": w.describe()} for s, w in self.stream.items()]
        rows += [{"parameter": param_name(DEPTH, s), "dimension": "depth (blocks)",
                  "range": f"{lo}..{hi}" if hi > lo else f"{hi} (fixed)"} for s, (lo, hi) in self.depth.items()]
        if self.stream_error:
            rows.append({"parameter": param_name(WIDTH, "*"), "dimension": "stream width", "range": f"not searched: {self.stream_error}"})
        floats = [p for p in self.precisions if p != "int8"]
        if groups is not None and len(floats) > 1:
            rows.append({"parameter": param_name(PRECISION, FLOAT), "dimension": "float precision", "range": ", ".join(floats)})
        if groups is not None and "int8" in self.precisions:
            rows += [{"parameter": param_name(PRECISION, g), "dimension": "precision", "range": "float, int8"} for g in [*groups, OTHER]]
        return rows


def quantization_route(spec: Spec, runs_model_int8_scales: bool) -> str:
    """``search.quantization``; "auto": the scales QAT learned (``qat-qdq``) where the device runs a model's own
    int8 ops, as fast as NNCF's second calibration, as accurate and a third of the deployment (BENCHMARKS.md,
    bench/qdq_vs_nncf.py); elsewhere QAT, then the device's own calibration (``qat``)."""
    chosen = spec["search.quantization"]
    if chosen != "auto":
        return chosen
    return "qat-qdq" if runs_model_int8_scales else "qat"


def build_space(spec: Spec, model: nn.Module, groups: list[LayerGroup], stages: list[Stage], precisions: list[str],
                multiple: int, multiple_source: str = "spec", stream_error: str | None = None,
                quantization: str = "qat") -> SearchSpace:
    """The study's dimensions; ``stream_error`` (see objectives.structure.stream_pruning_error) turns the
    stream widths off for a model whose streams cannot be pruned."""
    max_sparsity = spec["search.sparsity_max"]
    modules = dict(model.named_modules())
    inner = {}
    if spec["search.inner_width"]:
        for g in groups:
            widths = [modules[n].out_channels for n in g.layers if n in modules]
            if widths:
                inner[g.name] = Widths.of(max(widths), multiple, max_sparsity)
    searched = spec["search.stream_width"] and not stream_error
    stream = {s.name: Widths.of(s.stream_width, multiple, max_sparsity) for s in stages} if searched else {}
    depth = {s.name: (s.min_depth, len(s.blocks)) for s in stages} if spec["search.depth"] else {}
    widths = {param_name(INNER, g): w for g, w in inner.items()} | {param_name(WIDTH, s): w for s, w in stream.items()}
    collapsed = [name for name, w in widths.items() if not w.searched and Widths.of(w.full, 1, max_sparsity).searched]
    finer = next((m for m in _halvings(multiple)
                  if all(Widths.of(widths[name].full, m, max_sparsity).searched for name in collapsed)), 1)
    return SearchSpace(list(precisions), multiple, multiple_source, inner, stream, depth,
                       stream_error if spec["search.stream_width"] else None, quantization,
                       tuple(collapsed), finer if collapsed else 0)


def _halvings(multiple: int) -> list[int]:
    """Finer multiples to suggest, coarsest first: 16 -> 8, 4, 2, 1."""
    found = []
    while multiple > 1:
        multiple //= 2
        found.append(multiple)
    return found


def distributions(spec: Spec, groups: list[LayerGroup], space: SearchSpace) -> dict[str, BaseDistribution]:
    """Each parameter a trial asks the sampler for, with its range, in the order it asks; a dimension with
    one value (or fixed by the spec) is not asked."""
    found: dict[str, BaseDistribution] = {}
    found |= {param_name(INNER, g): IntDistribution(w.fewest, w.most) for g, w in space.inner.items() if w.searched}
    found |= {param_name(WIDTH, s): IntDistribution(w.fewest, w.most) for s, w in space.stream.items() if w.searched}
    found |= {param_name(DEPTH, s): IntDistribution(lo, hi) for s, (lo, hi) in space.depth.items() if hi > lo}
    pruners = spec["search.pruners"]
    if len(pruners) > 1:
        found[PRUNER] = CategoricalDistribution(pruners)
    fixed = spec["search.fixed_precisions"] or {}
    floats = [p for p in space.precisions if p != "int8"]
    if len(floats) > 1 and not any(p != "int8" for p in fixed.values()):
        found[param_name(PRECISION, FLOAT)] = CategoricalDistribution(floats)
    if "int8" in space.precisions:
        found |= {param_name(PRECISION, n): CategoricalDistribution(["float", "int8"])
                  for n in [g.name for g in groups] + [OTHER] if n not in fixed}
    return found


def searched_parameters(spec: Spec, groups: list[LayerGroup], space: SearchSpace) -> list[str]:
    """The parameters with more than one value: :func:`distributions`, less the pruner where no width is
    searched (a pruner only chooses channels)."""
    widths = any(w.searched for w in [*space.inner.values(), *space.stream.values()])
    return [n for n in distributions(spec, groups, space) if n != PRUNER or widths]


def dimension_rows(spec: Spec, groups: list[LayerGroup], space: SearchSpace) -> list[dict]:
    """What ``tune groups`` shows: :meth:`SearchSpace.describe` with the groups' precisions, a precision the
    spec fixes as fixed, and the pruner where the study searches it."""
    asked = set(searched_parameters(spec, groups, space))
    fixed = spec["search.fixed_precisions"] or {}
    rows = []
    for row in space.describe([g.name for g in groups]):
        part = row["parameter"].partition(".")[2]
        if kind_of(row["parameter"]) == PRECISION and row["parameter"] not in asked:
            value = fixed.get(part) or next((p for p in fixed.values() if p != "int8"), None)
            row = {**row, "range": f"{value} (fixed)"}
        rows.append(row)
    if PRUNER in asked:
        rows.append({"parameter": PRUNER, "dimension": "channel criterion", "range": ", ".join(spec["search.pruners"])})
    return rows


def check_searchable(spec: Spec, groups: list[LayerGroup], space: SearchSpace) -> None:
    """A space of one point would spend the budget on copies of one model: stop before the first trial."""
    if searched_parameters(spec, groups, space):
        return
    # int8 allowed and still no choice: search.fixed_precisions fixes every group
    precisions = f"precisions: {', '.join(space.precisions)}" + (", every group fixed" if "int8" in space.precisions else "")
    if space.collapsed:
        raise SpecError(f"nothing to search: {space.collapse_note(f', and nothing else has two ({precisions})')}")
    off = [key for key in ("search.inner_width", "search.stream_width", "search.depth") if not spec[key]]
    raise SpecError(f"nothing to search: no width or depth of {spec['model.name']} has two values"
                    + (f" ({', '.join(off)} off)" if off else "") + f", nor the precision ({precisions}); "
                    "every trial would be the same model: " + ("turn a dimension on or " if off else "")
                    + "allow int8 in search.precisions")


def suggest_plan(trial: optuna.Trial, spec: Spec, groups: list[LayerGroup], space: SearchSpace) -> TrialPlan:
    """Ask the sampler for this trial's settings; fixed choices are recorded, not searched."""
    asked = {n: trial.suggest_int(n, d.low, d.high) if isinstance(d, IntDistribution)
             else trial.suggest_categorical(n, d.choices) for n, d in distributions(spec, groups, space).items()}
    return plan_of(decode(asked), spec, groups, space, trial.number)


def plan_of(choices: Choices, spec: Spec, groups: list[LayerGroup], space: SearchSpace, number: int = 0) -> TrialPlan:
    """The plan ``choices`` make in this space (widths in channels); what they leave out is as the spec fixes
    it or as in the baseline. ``number``: the trial's, which seeds its fine-tune."""
    inner = {g: w.channels(choices.inner[g]) for g, w in space.inner.items() if g in choices.inner}
    stream = {s: w.channels(choices.stream[s]) for s, w in space.stream.items() if s in choices.stream}
    depth = {s: choices.depth[s] for s in space.depth if s in choices.depth}
    fixed = spec["search.fixed_precisions"] or {}
    fixed_float = next((p for p in fixed.values() if p != "int8"), None)
    float_precision = fixed_float or choices.float_precision or [p for p in space.precisions if p != "int8"][0]
    int8_groups = {n for n in [g.name for g in groups] + [OTHER]
                   if (fixed[n] == "int8" if n in fixed else choices.precision.get(n) == "int8")}
    finetune = TrainSettings(
        epochs=spec["finetune.epochs"],
        lr=spec["finetune.lr"],
        batch_size=spec["finetune.batch_size"],
        seed=spec["study.seed"] + number,
        distill=spec["finetune.distill"],
        temperature=spec["finetune.temperature"],
    )
    return TrialPlan(inner=inner, stream=stream, depth=depth, channel_multiple=space.multiple,
                     pruner=choices.pruner or spec["search.pruners"][0], float_precision=float_precision,
                     int8_groups=frozenset(int8_groups), quantization=space.quantization, finetune=finetune,
                     max_epochs=spec["finetune.max_epochs"])
