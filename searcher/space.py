"""Spec + layer groups + device capabilities -> ``trial.suggest_*`` -> a TrialPlan."""
from __future__ import annotations

import optuna

from objectives.finetune import TrainSettings
from objectives.groups import LayerGroup
from objectives.pipeline import TrialPlan

from .spec import Spec


def suggest_plan(trial: optuna.Trial, spec: Spec, groups: list[LayerGroup]) -> TrialPlan:
    """Ask the sampler for this trial's settings; fixed choices are recorded, not searched."""
    high, step = spec["search.sparsity_max"], spec["search.sparsity_step"]
    high = round(int(round(high / step, 6)) * step, 6)  # a whole number of steps
    sparsity = {g.name: trial.suggest_float(f"sparsity.{g.name}", 0.0, high, step=step) for g in groups}
    pruners = spec["search.pruners"]
    if len(pruners) > 1:
        pruner = trial.suggest_categorical("pruner", pruners)
    else:
        pruner = pruners[0]
        trial.set_user_attr("pruner", pruner)
    finetune = TrainSettings(
        epochs=spec["finetune.epochs"],
        lr=spec["finetune.lr"],
        batch_size=spec["finetune.batch_size"],
        seed=spec["study.seed"] + trial.number,
    )
    return TrialPlan(sparsity=sparsity, pruner=pruner, finetune=finetune)
