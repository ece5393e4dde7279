"""One worker's loop over a study: claim a trial, run it with heartbeats, record it.

Several workers (processes, hosts) may run this loop on one study in PostgreSQL:

- the next trial is claimed under the study's lock, so the study ends with exactly the requested
  number of trials (:func:`budget_used` says which count);
- while a trial runs, a thread records Optuna heartbeats; a worker that dies (SIGKILL, power) goes
  silent, and the next worker to claim a trial fails it and re-queues its parameters
  (``RetryHeartbeatStaleTrialCallback``);
- Ctrl-C (or SIGTERM) fails the running trial cleanly, then stops the worker;
- a database that stops answering is retried with back-off for ``patience_s``; then the worker stops
  with one line. Finished trials are always in the database before the next one starts.
"""
from __future__ import annotations

import datetime
import os
import socket
import threading
import time
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from .locks import StudyLocks
from .run import Objective
from .storage import StorageError, error_reason, redact

STORAGE_ERRORS = (SQLAlchemyError, optuna.exceptions.StorageInternalError)
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"  # recorded on each trial: who ran it
INTERRUPTED = "interrupted: the worker was stopped (Ctrl-C or SIGTERM) during the trial"


class StorageLost(StorageError):
    """The database did not answer for the worker's whole patience."""


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """A trial uses up budget unless it failed for no reason of its own: its worker died or was stopped.

    Those (no ``failure`` attribute, or an interrupted one) are re-run: a stale trial's parameters are
    re-queued by the heartbeat callback, an interrupted trial's slot goes back to the sampler.
    """
    if trial.state != TrialState.FAIL:
        return True
    return "failure" in trial.user_attrs and not trial.user_attrs.get("interrupted")


def budget_used(trials: list[FrozenTrial]) -> int:
    return sum(counts_toward_budget(t) for t in trials)


class Retry:
    """Run storage actions, retrying with exponential back-off while the database is unreachable."""

    def __init__(self, url: str, patience_s: float, on_retry: Callable[[str], None] = lambda s: None,
                 sleep: Callable[[float], None] = time.sleep):
        self.url, self.patience_s, self.on_retry, self.sleep = url, patience_s, on_retry, sleep

    def __call__(self, action: Callable, what: str):
        waited, delay = 0.0, 0.5
        while True:
            try:
                return action()
            except STORAGE_ERRORS as error:
                reason = error_reason(error)
                if waited >= self.patience_s:
                    raise StorageLost(f"lost the database {redact(self.url)} while {what} (retried for {waited:.0f} s: "
                                      f"{reason}); finished trials are stored, run again to resume") from None
                self.on_retry(f"database unreachable while {what}; retrying in {delay:.1f} s")
                self.sleep(delay)
                waited += delay
                delay = min(delay * 2, 30.0)


class _Heartbeats:
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

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


def _claim(study: optuna.Study, total: int) -> optuna.Trial | None:
    """The next trial: a re-queued one first, else a new one while the budget lasts."""
    trials = study.get_trials(deepcopy=False)
    waiting = any(t.state == TrialState.WAITING for t in trials)
    if not waiting and budget_used(trials) >= total:
        return None
    return study.ask()


def run_worker(study: optuna.Study, objective: Objective, total: int, locks: StudyLocks, retry: Retry,
               on_trial_end: Callable[[optuna.Study, FrozenTrial], None] = lambda s, t: None) -> int:
    """Run trials until the study holds ``total`` of them; returns how many this worker ran."""
    ran = 0
    while True:
        def claim():
            optuna.storages.fail_stale_trials(study)  # dead workers' trials: failed, parameters re-queued
            fail_silent_trials(study)  # ... and those that died before their first heartbeat
            with locks.critical("claim"):
                return _claim(study, total)

        trial = retry(claim, "claiming a trial")
        if trial is None:
            return ran
        with _Heartbeats(study._storage, trial._trial_id):
            try:
                plan = retry(lambda: objective.plan(trial), f"sampling trial {trial.number}")
                result = objective.evaluate(trial, plan)
            except KeyboardInterrupt:
                _fail_interrupted(study, trial, retry)
                raise

            result.attributes["worker"] = WORKER_ID

            def record():
                objective.record(trial, result)
                try:
                    study.tell(trial, result.values if result.state == TrialState.COMPLETE else None, state=result.state)
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass  # an earlier attempt's tell reached the database before the connection broke

            try:
                retry(record, f"recording trial {trial.number}")
            finally:
                objective.discard(result)
        ran += 1
        on_trial_end(study, study._storage.get_trial(trial._trial_id))


def _fail_interrupted(study: optuna.Study, trial: optuna.Trial, retry: Retry) -> None:
    def fail():
        trial.set_user_attr("failure", INTERRUPTED)
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)

    try:
        retry(fail, f"failing interrupted trial {trial.number}")
    except (StorageLost, optuna.exceptions.UpdateFinishedTrialError):
        pass  # its heartbeat stops; the next worker fails and re-queues it


def _fail_and_requeue(study: optuna.Study, trials: list[FrozenTrial]) -> list[int]:
    """Fail these RUNNING trials and re-queue their parameters, as Optuna's heartbeat callback does."""
    storage = study._storage
    callback = storage.get_heartbeat_stale_trial_callback() if hasattr(storage, "get_heartbeat_stale_trial_callback") else None
    failed = []
    for trial in trials:
        try:
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                failed.append(trial.number)
                if callback is not None:
                    callback(study, storage.get_trial(trial._trial_id))
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
    rdb = getattr(study._storage, "_backend", study._storage)  # Optuna wraps RDBStorage in a cache
    if not isinstance(rdb, optuna.storages.RDBStorage) or not rdb.heartbeat_interval:
        return []
    from optuna.storages._rdb import models  # Optuna's own tables; no public query for "no heartbeat"

    grace = datetime.timedelta(seconds=rdb.grace_period or 2 * rdb.heartbeat_interval)
    session = rdb.scoped_session()
    try:
        silent_ids = [row.trial_id for row in session.query(models.TrialModel.trial_id).filter(
            models.TrialModel.study_id == study._study_id, models.TrialModel.state == TrialState.RUNNING,
            ~models.TrialModel.heartbeats.any())]
    finally:
        session.close()

    def overdue(trial: FrozenTrial) -> bool:
        started = trial.datetime_start
        now = datetime.datetime.now(started.tzinfo) if started.tzinfo else datetime.datetime.now()
        return now - started > grace

    silent = [study._storage.get_trial(trial_id) for trial_id in silent_ids]  # usually none: no reload of the study
    return _fail_and_requeue(study, [t for t in silent if t.datetime_start and overdue(t)])
