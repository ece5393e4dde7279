"""``tune finalize``: a longer fine-tune for the models on the front.

Trials are ranked after a short fine-tune (NetAdapt's and AMC's practice: short to rank, long for
the chosen). Finalizing re-trains a front model from its own pruned, fine-tuned weights for
``--epochs`` more, deploys and measures it exactly as a trial, and stores it as a new trial of
the study with the original's parameters, its own artifact and ``finalized_from`` = the original
trial's number, so the dashboard, ``tune pareto``, ``tune report`` and ``tune export --pareto``
see it. Finalized trials do not use up the search budget. An interrupted run is resumed by
running it again: an original that already has a complete finalized trial is skipped.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgetune.objectives.errors import first_line
from edgetune.objectives.model_files import load_pruned
from edgetune.objectives.finetune import TrainSettings
from edgetune.objectives.pipeline import TrialPlan, PhaseClock, device_plan_for, fine_tune_and_measure
from edgetune.objectives.trial_record import TrialRecord

from .artifacts import fetch
from .pareto import front
from .trial import Objective, TrialResult
from .spec import SpecError
from .study import Prepared

INTERRUPTED = "interrupted: finalize was stopped"


def originals(study: optuna.Study, numbers: list[int] | None, every: list[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """The trials to finalize: the named ones, or the front's (never a finalized trial itself); ``every``:
    the study's trials, if already read."""
    every = study.get_trials(deepcopy=False) if every is None else every
    trials = {t.number: t for t in every}
    if numbers:
        chosen = []
        for number in numbers:
            trial = trials.get(number)
            if trial is None:
                raise SpecError(f"study '{study.study_name}' has no trial {number}")
            if trial.state != TrialState.COMPLETE or "artifact_id" not in trial.user_attrs:
                raise SpecError(f"trial {number} is {trial.state.name.lower()}: only complete trials have a model")
            chosen.append(trial)
    else:
        chosen = [trials[row.number] for row in front(study, every)]
    return [t for t in chosen if "finalized_from" not in t.user_attrs]


def already_finalized(every: list[FrozenTrial]) -> set[int]:
    return {t.user_attrs["finalized_from"] for t in every
            if t.state == TrialState.COMPLETE and "finalized_from" in t.user_attrs}


def _plan_of(original: FrozenTrial, epochs: int, spec, quantization: str) -> TrialPlan:
    """The original trial's precisions, pruner and int8 route (``quantization`` where it recorded none),
    with the longer fine-tune (from its own weights)."""
    attrs = original.user_attrs
    precisions = attrs.get("precision_plan") or {}
    floats = [p for p in precisions.values() if p != "int8"]
    settings = TrainSettings(epochs, spec["finetune.lr"], spec["finetune.batch_size"], seed=spec["study.seed"] + original.number,
                             distill=spec["finetune.distill"], temperature=spec["finetune.temperature"])
    return TrialPlan(channel_multiple=attrs.get("channel_multiple", 1), pruner=attrs.get("pruner", "l1"),
                     float_precision=floats[0] if floats else "f32",
                     int8_groups=frozenset(g for g, p in precisions.items() if p == "int8"),
                     quantization=attrs.get("quantization") or quantization, finetune=settings)


def finalize(prepared: Prepared, spec, epochs: int, numbers: list[int] | None = None,
             on_status: Callable[[str], None] = lambda s: None,
             on_done: Callable[[int], None] = lambda count: None) -> list[tuple[int, int]]:
    """Finalize each chosen trial; returns (original, finalized) trial numbers. ``on_done(count)``:
    how many of the chosen are finished so far (already finalized ones included)."""
    study = prepared.study
    objective = Objective(spec, prepared.context, prepared.baseline, prepared.space)
    every = study.get_trials(deepcopy=False)  # read once: a large study's trials take seconds
    done = already_finalized(every)
    pairs = []
    for count, original in enumerate(originals(study, numbers, every), 1):
        if original.number in done:
            on_status(f"trial {original.number}: already finalized")
            on_done(count)
            continue
        plan = _plan_of(original, epochs, spec, prepared.space.quantization)
        study.enqueue_trial(original.params, user_attrs=TrialRecord(finalized_from=original.number))
        trial = study.ask()
        objective.plan(trial)  # records the original's parameters (enqueued) with their distributions
        try:
            on_status(f"trial {original.number}: fine-tuning {epochs} epochs more (as trial {trial.number})")
            with tempfile.TemporaryDirectory() as tmp:
                folder = fetch(spec["study.artifacts"], original.user_attrs["artifact_id"], Path(tmp),
                               original.user_attrs.get("artifact_sha256"))
                model = load_pruned(folder).train()
            clock = PhaseClock(lambda phase: on_status(f"trial {original.number}: {phase}"))
            outcome = fine_tune_and_measure(model, prepared.context, plan, plan.finetune,
                                            device_plan_for(model, prepared.context, plan), clock)
            if "seeded" in original.user_attrs:  # the recipe it grew from (its pruner comes with the plan)
                outcome.attributes["seeded"] = original.user_attrs["seeded"]
            result = objective.result_of(trial, outcome, objective.latency_limit_ms())
        except KeyboardInterrupt:
            objective.record(trial, TrialResult(TrialState.FAIL, attributes=TrialRecord(failure=INTERRUPTED)))
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as error:  # noqa: BLE001 - recorded on the trial; the next one goes on
            result = TrialResult(TrialState.FAIL, attributes=TrialRecord(failure=first_line(error, typed=True)))
        objective.record(trial, result)
        study.tell(trial, result.values if result.state == TrialState.COMPLETE else None, state=result.state)
        objective.discard(result)
        pairs.append((original.number, trial.number))
        on_done(count)
    return pairs
