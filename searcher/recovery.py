"""What a worker that died or was stopped leaves behind, and how it is put right.

- While a trial runs, :class:`Heartbeats` records Optuna heartbeats; a worker that dies (SIGKILL, power)
  goes silent, and the next worker to claim a trial fails it and re-queues its parameters (Optuna's
  ``RetryHeartbeatStaleTrialCallback``; :func:`fail_silent_trials` for a trial that died before its
  first beat, which Optuna's check skips). :func:`fail_orphans` does it at once where one worker holds
  the database (SQLite).
- A stopped worker (Ctrl-C, SIGTERM) fails its trial as interrupted (:func:`fail_interrupted`): such a
  trial uses up no budget, and an enqueued one is queued again.
- :func:`reset_storage` drops what a failed or interrupted database call left in this process.
"""
from __future__ import annotations

import datetime
import gc
import threading
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgetune.objectives.trial_record import TrialRecord

from . import optuna_internals as internals
from .retry import STORAGE_ERRORS, Retry
from .storage import StorageError

INTERRUPTED = "interrupted: the worker was stopped (Ctrl-C or SIGTERM) during the trial"
#: what an interrupted trial records, written in this order: ``interrupted`` alone keeps it off the budget
INTERRUPTED_RECORD = TrialRecord(interrupted=True, failure=INTERRUPTED)
#: how long a stopping worker tries to fail its trial; after that the trial is left to the heartbeat checks
INTERRUPT_PATIENCE_S = 5.0


def reset_storage(storage) -> None:
    """Drop what a failed or interrupted database call left in this process, so the next call starts afresh.

    - An interrupt that lands just after a statement ran leaves its cursor alive in the exception's
      traceback (a reference cycle); on SQLite its connection, though closed, lives on as a zombie that
      keeps the transaction's lock: every later write then waits out the busy timeout and fails with
      "database is locked", on a healthy file. Collecting the cycles finalises the cursor and frees the lock.
    - This thread's SQLAlchemy session may be stuck in an interrupted operation (closing it raises
      IllegalStateChangeError): it is discarded, and the engine's pool replaced.

    Call it outside the ``except`` block that caught the error: there, the traceback is still alive.
    """
    internals.discard_session(storage)
    gc.collect()  # the interrupted call's cursor and the dropped session, with the locks they hold


class Heartbeats:
    """Record the trial's heartbeat every interval while it runs (errors wait for the next beat)."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self.interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="edgetune-heartbeat")

    def _beat(self):
        while not self.stop.is_set():
            try:
                self.storage.record_heartbeat(self.trial_id)
            except STORAGE_ERRORS:
                pass  # the database is away; the worker's own retries decide when to give up
            self.stop.wait(self.interval)

    def __enter__(self):
        if self.interval:
            self.thread.start()
        return self

    def __exit__(self, exc_type, *exc):
        self.stop.set()
        # On an interrupt, do not wait: the beat under way may be waiting for a lock that the interrupted
        # call still holds until the worker collects it. The thread ends after that beat.
        if self.thread.is_alive() and exc_type is None:
            self.thread.join()


def fail_interrupted(study: optuna.Study, trial_id: int, number: int, retry: Retry,
                     recover: Callable[[], None]) -> None:
    """Fail the trial as interrupted, within a few seconds. Another interrupt meanwhile gets one last quick
    try; a trial that could not be failed is left to the heartbeat checks (or, on SQLite, the next start)."""
    storage = internals.storage(study)

    def fail():
        before = storage.get_trial(trial_id)
        for key, value in INTERRUPTED_RECORD.items():
            storage.set_trial_user_attr(trial_id, key, value)
        study.tell(number, state=TrialState.FAIL)
        _requeue_if_enqueued(study, before)

    for attempt in (retry.within(INTERRUPT_PATIENCE_S), retry.within(0)):
        try:
            attempt(fail, f"failing interrupted trial {number}", recover)
            return
        except (StorageError, optuna.exceptions.UpdateFinishedTrialError, ValueError):
            return  # the database is away (its heartbeat stops), or the trial is already finished
        except KeyboardInterrupt:
            pass
        recover()


def _requeue_if_enqueued(study: optuna.Study, trial: FrozenTrial) -> None:
    """An interrupted trial that was enqueued (a recipe seed, a benchmark's sweep point) is queued again with
    its parameters and attributes: the sampler, which gets a sampled trial's slot back, would not run it."""
    fixed = internals.enqueued_params(trial)
    if fixed:
        attrs = {k: v for k, v in trial.user_attrs.items() if k not in INTERRUPTED_RECORD}
        study.enqueue_trial(fixed, user_attrs=attrs)


def _fail_and_requeue(study: optuna.Study, trials: list[FrozenTrial]) -> list[int]:
    """Fail these RUNNING trials and re-queue their parameters, as Optuna's heartbeat callback does."""
    storage = internals.storage(study)
    callback = storage.get_heartbeat_stale_trial_callback() if hasattr(storage, "get_heartbeat_stale_trial_callback") else None
    failed = []
    for trial in trials:
        try:
            if storage.set_trial_state_values(internals.trial_id(trial), state=TrialState.FAIL):
                failed.append(trial.number)
                if callback is not None:
                    callback(study, storage.get_trial(internals.trial_id(trial)))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    return failed


def fail_orphans(study: optuna.Study) -> list[int]:
    """With the database held by this one worker (SQLite), every RUNNING trial is a dead run's:
    fail it now (no grace period to wait out) and re-queue it as the heartbeat callback does."""
    return _fail_and_requeue(study, study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def fail_silent_trials(study: optuna.Study) -> list[int]:
    """Fail and re-queue RUNNING trials that never recorded a heartbeat and started over a grace period ago.

    Optuna's stale check skips trials with no heartbeat at all, so a worker that died or lost the
    database between claiming a trial and its first beat left it RUNNING for good, using up budget.
    """
    grace_s = internals.grace_period_s(study)
    if grace_s is None:  # no heartbeats recorded: silence means nothing
        return []
    grace = datetime.timedelta(seconds=grace_s)
    silent_ids = internals.never_beaten_trial_ids(study)

    def overdue(trial: FrozenTrial) -> bool:
        started = trial.datetime_start
        now = datetime.datetime.now(started.tzinfo) if started.tzinfo else datetime.datetime.now()
        return now - started > grace

    silent = [internals.storage(study).get_trial(trial_id) for trial_id in silent_ids]  # usually none: no reload of the study
    return _fail_and_requeue(study, [t for t in silent if t.datetime_start and overdue(t)])
