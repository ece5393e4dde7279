"""One trial: the sampler's proposal -> the objectives pipeline -> values, attributes, artifact.

A trial that fails records why (user attribute ``failure``) and the study goes on; a collapsed
network is recorded as PRUNED with its reason.
"""
from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import optuna

from objectives.pipeline import CollapsedError, TrialContext, run_trial

from .space import suggest_plan
from .spec import TARGET_UNITS, Spec
from .storage import artifact_store


class TrialFailed(RuntimeError):
    """Raised after the failure is recorded on the trial; Optuna marks the trial FAIL."""


def _json_safe(value):
    return json.loads(json.dumps(value, default=str))


def store_deployment(trial: optuna.Trial, deployment, artifacts_dir: str) -> str:
    """Zip the deployed files and put them in Optuna's artifact store; returns the artifact id."""
    with tempfile.TemporaryDirectory() as tmp:
        files = deployment.save(Path(tmp) / "model")
        archive = Path(tmp) / f"trial-{trial.number}-model.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, path.name)
        return optuna.artifacts.upload_artifact(artifact_store=artifact_store(artifacts_dir), file_path=str(archive),
                                                study_or_trial=trial, mimetype="application/zip")


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
        attributes["artifact_id"] = store_deployment(trial, outcome.deployment, self.spec["study.artifacts"])
        outcome.deployment.close()
        for key, value in attributes.items():
            trial.set_user_attr(key, _json_safe(value))
        drop_limit = self.spec["study.max_top1_drop"]
        if drop_limit is not None:
            # Optuna constraint: <= 0 is feasible.
            trial.set_constraint("top1_drop", (self.baseline["top1"] - attributes["top1"]) - drop_limit)
        return tuple(float(attributes[TARGET_UNITS[t]]) for t in self.spec.targets)
