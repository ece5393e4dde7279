"""One trial: the sampler's proposal -> the objectives pipeline -> values, attributes, artifact.

A trial that fails records why (user attribute ``failure``) and the study goes on; a collapsed
network is recorded as PRUNED with its reason.
"""
from __future__ import annotations

import json
from typing import Callable

import optuna

from objectives.pipeline import CollapsedError, TrialContext, run_trial

from .artifacts import store_outcome
from .space import suggest_plan
from .spec import TARGET_UNITS, Spec


def worst_class_drop(baseline: list[float], trial: list[float]) -> float:
    """The largest per-class Top-1 loss against the baseline, in points (classes absent in val ignored)."""
    drops = [b - t for b, t in zip(baseline, trial) if b == b and t == t]
    return max(drops) if drops else 0.0


class TrialFailed(RuntimeError):
    """Raised after the failure is recorded on the trial; Optuna marks the trial FAIL."""


def _json_safe(value):
    return json.loads(json.dumps(value, default=str))




class Objective:
    """Callable for ``study.optimize``; ``on_phase(trial_number, phase)`` reports progress."""

    def __init__(self, spec: Spec, context: TrialContext, baseline: dict, precisions: list[str],
                 on_phase: Callable[[int, str], None] | None = None):
        self.spec = spec
        self.context = context
        self.precisions = precisions
        self.baseline = baseline
        self.on_phase = on_phase or (lambda n, p: None)

    def __call__(self, trial: optuna.Trial):
        plan = suggest_plan(trial, self.spec, self.context.groups, self.precisions)
        try:
            outcome = run_trial(self.context, plan, on_phase=lambda phase: self.on_phase(trial.number, phase))
        except CollapsedError as error:
            trial.set_user_attr("failure", str(error))
            trial.set_user_attr("top1", error.top1)
            raise optuna.TrialPruned(str(error)) from None
        except Exception as error:  # noqa: BLE001 - any failure is recorded; the study goes on
            reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            trial.set_user_attr("failure", reason)
            raise TrialFailed(reason) from error
        self.on_phase(trial.number, "store")
        attributes = outcome.attributes
        attributes["artifact_id"] = store_outcome(trial, outcome, self.spec, self.context.data, f"trial-{trial.number}")
        outcome.deployment.close()
        for key, value in attributes.items():
            trial.set_user_attr(key, _json_safe(value))
        # Optuna constraints: <= 0 is feasible.
        drop_limit = self.spec["study.max_top1_drop"]
        if drop_limit is not None:
            trial.set_constraint("top1_drop", (self.baseline["top1"] - attributes["top1"]) - drop_limit)
        class_limit = self.spec["study.max_class_drop"]
        if class_limit is not None:
            trial.set_constraint("class_drop", worst_class_drop(self.baseline["class_top1"], attributes["class_top1"]) - class_limit)
        return tuple(float(attributes[TARGET_UNITS[t]]) for t in self.spec.targets)
