"""One trial: the sampler's proposal -> the objectives pipeline -> values, attributes, artifact.

A trial runs in three steps so that the long middle one never touches the database:
``plan`` (the sampler's suggestions), ``evaluate`` (prune, fine-tune, deploy, measure, zip the
files) and ``record`` (upload the zip, write the attributes and constraints). The worker retries
``plan`` and ``record`` when the database is briefly unreachable.

A trial that fails records why (user attribute ``failure``) and the study goes on; a collapsed
network is recorded as PRUNED with its reason. The attributes' contract is objectives/trial_record.py.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from edgetune.objectives.errors import first_line
from edgetune.objectives.pipeline import CollapsedError, TooSlowError, TrialContext, TrialPlan, run_trial
from edgetune.objectives.trial_record import TrialRecord

from .artifacts import pack_outcome, upload
from .space import SearchSpace, suggest_plan
from .spec import Spec, target_unit


def worst_class_drop(baseline: list[float], trial: list[float]) -> float:
    """The largest per-class Top-1 loss against the baseline, in points (classes absent in val ignored)."""
    drops = [b - t for b, t in zip(baseline, trial) if b == b and t == t]
    return max(drops) if drops else 0.0


def _json_safe(value):
    return json.loads(json.dumps(value, default=str))


@dataclass
class TrialResult:
    """What a trial produced, not yet written to the study."""

    state: TrialState
    values: tuple[float, ...] | None = None
    attributes: TrialRecord = field(default_factory=TrialRecord)
    constraints: dict[str, float] = field(default_factory=dict)
    archive: Path | None = None  # the trial's zip, uploaded by ``record``


class Objective:
    """Runs trials for one study; ``on_phase(trial_number, phase)`` reports progress."""

    def __init__(self, spec: Spec, context: TrialContext, baseline: dict, space: SearchSpace,
                 on_phase: Callable[[int, str], None] | None = None):
        self.spec = spec
        self.context = context
        self.space = space
        self.baseline = baseline
        self.on_phase = on_phase or (lambda n, p: None)
        self._scratch = tempfile.TemporaryDirectory(prefix="edgetune-trial-")

    def plan(self, trial: optuna.Trial) -> TrialPlan:
        return suggest_plan(trial, self.spec, self.context.groups, self.space)

    def latency_limit_ms(self) -> float | None:
        """The study's latency limit: ``study.max_latency_ms``, or the baseline's latency / ``study.min_speedup``."""
        limits = [self.spec["study.max_latency_ms"]]
        if self.spec["study.min_speedup"]:
            limits.append(self.baseline["latency_ms"] / self.spec["study.min_speedup"])
        limits = [v for v in limits if v is not None]
        return min(limits) if limits else None

    def evaluate(self, trial: optuna.Trial, plan: TrialPlan) -> TrialResult:
        limit = self.latency_limit_ms()
        try:
            outcome = run_trial(self.context, plan, on_phase=lambda phase: self.on_phase(trial.number, phase),
                                latency_limit_ms=limit)
        except TooSlowError as error:  # infeasible, known before fine-tuning
            return TrialResult(TrialState.PRUNED, attributes=TrialRecord(
                failure=str(error), finetune_skipped="latency", latency_untrained_ms=error.latency_ms,
                latency_limit_ms=error.limit_ms, seconds=error.seconds))
        except CollapsedError as error:
            return TrialResult(TrialState.PRUNED, attributes=TrialRecord(failure=str(error), top1=error.top1))
        except Exception as error:  # noqa: BLE001 - any failure is recorded; the study goes on
            return TrialResult(TrialState.FAIL, attributes=TrialRecord(failure=first_line(error, typed=True)))
        return self.result_of(trial, outcome, limit)

    def result_of(self, trial: optuna.Trial, outcome, limit: float | None = None) -> TrialResult:
        """Pack a measured outcome: its files zipped, its values and its constraints (no storage touched)."""
        self.on_phase(trial.number, "store")
        start = time.perf_counter()
        archive = pack_outcome(outcome, self.spec, self.context.data, f"trial-{trial.number}", Path(self._scratch.name))
        outcome.deployment.close()
        outcome.attributes["seconds"]["store"] = round(time.perf_counter() - start, 4)
        attributes: TrialRecord = {k: _json_safe(v) for k, v in outcome.attributes.items()}
        constraints = {}
        # Optuna constraints: <= 0 is feasible.
        drop_limit = self.spec["study.max_top1_drop"]
        if drop_limit is not None:
            constraints["top1_drop"] = (self.baseline["top1"] - attributes["top1"]) - drop_limit
        if limit is not None:  # the fine-tuned model, measured again, must still meet it
            constraints["latency"] = attributes["latency_ms"] - limit
        class_limit = self.spec["study.max_class_drop"]
        if class_limit is not None:
            constraints["class_drop"] = worst_class_drop(self.baseline["class_top1"], attributes["class_top1"]) - class_limit
        values = tuple(float(attributes[target_unit(t)]) for t in self.spec.targets)
        return TrialResult(TrialState.COMPLETE, values, attributes, constraints, archive)

    def record(self, trial: optuna.Trial, result: TrialResult) -> None:
        """Write the result's artifact, attributes and constraints (idempotent: safe to retry)."""
        # a retry after a failed write does not upload twice
        if result.archive is not None and "artifact_id" not in result.attributes:
            result.attributes.update(upload(trial, result.archive, self.spec["study.artifacts"]))
        for key, value in result.attributes.items():
            trial.set_user_attr(key, value)
        for key, value in result.constraints.items():
            trial.set_constraint(key, value)

    def discard(self, result: TrialResult) -> None:
        if result.archive is not None:
            result.archive.unlink(missing_ok=True)
