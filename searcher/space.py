"""Spec + layer groups + device capabilities -> ``trial.suggest_*`` -> a TrialPlan.

Precision: the device runs one float precision per model (OpenVINO's inference precision hint)
and int8 per layer (NNCF). So a trial picks ``precision.float`` among the float precisions
allowed, and for each group (and ``other``: stem and head) ``precision.<group>`` in
{"float", "int8"}. The searcher never proposes a precision the device cannot run.
"""
from __future__ import annotations

import optuna

from devices import DeviceInfo
from objectives.finetune import TrainSettings
from objectives.groups import OTHER, LayerGroup
from objectives.pipeline import TrialPlan

from .spec import Spec, SpecError


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


def suggest_plan(trial: optuna.Trial, spec: Spec, groups: list[LayerGroup], precisions: list[str]) -> TrialPlan:
    """Ask the sampler for this trial's settings; fixed choices are recorded, not searched."""
    high, step = spec["search.sparsity_max"], spec["search.sparsity_step"]
    high = round(int(round(high / step, 6)) * step, 6)  # a whole number of steps
    sparsity = {g.name: trial.suggest_float(f"sparsity.{g.name}", 0.0, high, step=step) for g in groups}
    pruners = spec["search.pruners"]
    pruner = trial.suggest_categorical("pruner", pruners) if len(pruners) > 1 else pruners[0]
    fixed = spec["search.fixed_precisions"] or {}
    floats = [p for p in precisions if p != "int8"]
    fixed_float = next((p for p in fixed.values() if p != "int8"), None)
    if fixed_float:
        float_precision = fixed_float
    elif len(floats) > 1:
        float_precision = trial.suggest_categorical("precision.float", floats)
    else:
        float_precision = floats[0]
    int8_groups = set()
    for name in [g.name for g in groups] + [OTHER]:
        if name in fixed:
            choice = "int8" if fixed[name] == "int8" else "float"
        elif "int8" in precisions:
            choice = trial.suggest_categorical(f"precision.{name}", ["float", "int8"])
        else:
            choice = "float"
        if choice == "int8":
            int8_groups.add(name)
    finetune = TrainSettings(
        epochs=spec["finetune.epochs"],
        lr=spec["finetune.lr"],
        batch_size=spec["finetune.batch_size"],
        seed=spec["study.seed"] + trial.number,
    )
    return TrialPlan(sparsity=sparsity, pruner=pruner, float_precision=float_precision, int8_groups=frozenset(int8_groups),
                     quantization=spec["search.quantization"], finetune=finetune)
