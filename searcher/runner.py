"""Running a study: prepare it, then spend its trial budget in this process or in local worker
processes. The one entry point that `tune start`, `tune worker` and the benchmarks share."""
from __future__ import annotations

from typing import Callable

import optuna

from .local_workers import run_local_workers
from .recovery import fail_orphans
from .retry import Retry
from .trial import Objective
from .spec import Spec, SpecError
from .storage import is_sqlite
from .study import Prepared, prepare
from .worker import budget_used, counts_toward_budget, run_worker

#: a study stops when this many trials failed pruning the same way and none has pruned the model
SAME_FAILURES_TO_STOP = 3
PRUNING_ERRORS = ("PruneError", "StructureError")


def unprunable(trials: list[optuna.trial.FrozenTrial], baseline_params: int) -> str | None:
    """The reason, when ``SAME_FAILURES_TO_STOP`` trials failed pruning for the same reason (the error
    and its first clause; sizes in the rest differ) and no trial has pruned the model (a complete
    trial with fewer parameters than the baseline; an int8-only recipe prunes nothing): the model
    cannot be pruned as grouped, and every further trial would spend its time failing."""
    if any(t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("params", baseline_params) < baseline_params
           for t in trials):
        return None
    failures = [t.user_attrs.get("failure", "") for t in trials
                if t.state == optuna.trial.TrialState.FAIL and counts_toward_budget(t)]
    failures = [f for f in failures if f.startswith(PRUNING_ERRORS)]
    if len(failures) < SAME_FAILURES_TO_STOP or len({": ".join(f.split(": ")[:2]) for f in failures}) != 1:
        return None
    return failures[-1]


class RunEvents:
    """What a run reports as it goes. This one shows nothing; the CLI's progress display shows it all."""

    def status(self, text: str) -> None:
        """What the run is doing now (loading data, training the baseline, ...)."""

    def notice(self, text: str) -> None:
        """Something the user should read: a database retry, trials failed and re-queued, a worker's line."""

    def on_phase(self, number: int, phase: str) -> None:
        """Trial ``number`` entered ``phase`` (prune, fine_tune, measure, ...)."""

    def on_trial_end(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """A trial finished (in this process or in a worker process)."""

    def budget_spent(self, done: int) -> None:
        """How many trials of the budget are spent so far."""


def run_study(spec: Spec, events: RunEvents | None = None, joining: bool = False,
              before_trials: Callable[[Prepared], None] = lambda prepared: None, checked=None) -> Prepared:
    """Prepare the study (see :func:`searcher.study.prepare`), then run trials until its budget is spent.

    ``before_trials`` sees the prepared study before the first trial (to print the baseline, or for a
    benchmark to enqueue its own trials). Several ``study.workers`` run as local worker processes.
    ``checked``: the spec already validated (:func:`searcher.study.validate`).
    """
    events = events or RunEvents()
    prepared = prepare(spec, on_status=events.status, joining=joining, checked=checked)
    study = prepared.study
    if is_sqlite(spec["study.storage"]):  # this process holds the file: a RUNNING trial is a dead run's
        orphans = fail_orphans(study)
        if orphans:
            events.notice(f"trials {', '.join(map(str, orphans))} were left running by a stopped run: failed and re-queued")
    events.budget_spent(budget_used([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]))
    before_trials(prepared)
    if spec["study.workers"] > 1:
        events.status(f"{spec['study.workers']} workers running")
        run_local_workers(study, spec, events, spec["study.workers"])
    else:
        def on_trial_end(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            events.on_trial_end(study, trial)
            failed_pruning = (trial.state == optuna.trial.TrialState.FAIL
                              and trial.user_attrs.get("failure", "").startswith(PRUNING_ERRORS))
            # only a pruning failure can complete the pattern: other trials are not worth a read of all trials
            if failed_pruning and (reason := unprunable(study.get_trials(deepcopy=False), prepared.baseline["params"])):
                raise SpecError(
                    f"{SAME_FAILURES_TO_STOP} trials failed pruning {spec['model.name']} the same way "
                    f"({reason}); exclude the layers at fault (`tune groups --model {spec['model.name']}` lists them) "
                    "with --set search.exclude='[\"regex\"]', or switch a dimension off (search.inner_width, "
                    "search.stream_width or search.depth = false); the finished trials are stored")

        objective = Objective(spec, prepared.context, prepared.baseline, prepared.space, on_phase=events.on_phase)
        retry = Retry(spec["study.storage"], spec["study.db_patience"], on_retry=events.notice)
        run_worker(study, objective, spec["study.trials"], prepared.locks, retry, on_trial_end=on_trial_end)
    events.status("done")
    return prepared
