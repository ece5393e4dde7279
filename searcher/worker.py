"""One worker's loop over a study: claim a trial, run it with heartbeats, record it.

Several workers (processes, hosts) may run this loop on one study in PostgreSQL:

- the next trial is claimed under the study's lock, so the study ends with exactly the requested
  number of trials (:func:`budget_used` says which count);
- while a trial runs, a thread records Optuna heartbeats; a worker that dies (SIGKILL, power) goes
  silent, and the next worker to claim a trial fails it and re-queues its parameters
  (``RetryHeartbeatStaleTrialCallback``);
- Ctrl-C (or SIGTERM) fails the running trial cleanly, then stops the worker, wherever it lands: in a
  trial or in a database call (see :func:`reset_storage` for what such a call leaves behind);
- a database that stops answering is retried with back-off for ``patience_s``; then the worker stops
  with one line. Finished trials are always in the database before the next one starts.
"""
from __future__ import annotations

import datetime
import functools
import gc
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
from .storage import StorageError, database_answers, error_reason, is_sqlite, redact

STORAGE_ERRORS = (SQLAlchemyError, optuna.exceptions.StorageInternalError)
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"  # recorded on each trial: who ran it
INTERRUPTED = "interrupted: the worker was stopped (Ctrl-C or SIGTERM) during the trial"
#: how long a stopping worker tries to fail its trial; after that the trial is left to the heartbeat checks
INTERRUPT_PATIENCE_S = 5.0

#: set by the command line's SIGINT/SIGTERM handler. An interrupt that lands in a finaliser or in a
#: library's clean-up can be swallowed there ("Exception ignored in ...", or turned into the library's own
#: error); the worker then stops at its next step all the same.
stop_requested = threading.Event()


class StorageLost(StorageError):
    """The database did not answer for the worker's whole patience."""


class StorageFailed(StorageError):
    """The database answers, but an action on it kept failing."""


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """A trial uses up budget unless it failed for no reason of its own: its worker died or was stopped.

    Those (no ``failure`` attribute, or an interrupted one) are re-run: a stale trial's parameters are
    re-queued by the heartbeat callback; an interrupted trial's slot goes back to the sampler, or, if it
    was enqueued, its parameters are queued again. A trial made by ``tune finalize``
    (``finalized_from``) is a longer fine-tune of one already counted.
    """
    if "finalized_from" in trial.user_attrs:
        return False
    if trial.state != TrialState.FAIL:
        return True
    return "failure" in trial.user_attrs and not trial.user_attrs.get("interrupted")


def budget_used(trials: list[FrozenTrial]) -> int:
    return sum(counts_toward_budget(t) for t in trials)


def _was_interrupted(error: BaseException | None) -> bool:
    """Whether a KeyboardInterrupt is behind this error: SQLAlchemy's clean-up of an interrupted call can
    raise its own error in place of the interrupt (e.g. IllegalStateChangeError from closing the session)."""
    seen, pending = set(), [error]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        pending += [error.__cause__, error.__context__]
    return False


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
    rdb = getattr(storage, "_backend", storage)  # Optuna wraps RDBStorage in a cache
    if isinstance(rdb, optuna.storages.RDBStorage):
        registry = rdb.scoped_session.registry
        if registry.has():
            session = registry()
            registry.clear()
            try:
                session.close()
            except Exception:  # noqa: BLE001 - stuck mid-operation (IllegalStateChangeError, an assertion): dropped
                pass
            del session
        rdb.engine.dispose()
    gc.collect()  # the interrupted call's cursor and the dropped session, with the locks they hold


class Retry:
    """Run storage actions, retrying with exponential back-off while the database is unreachable.

    After a failed action, ``recover`` (given per call) cleans up this process's side, then the database
    is probed on a new connection (``probe``):

    - no answer: an outage, retried with back-off for ``patience_s``, then :class:`StorageLost`;
    - it answers: the failure is this process's (a session an interrupt left unusable) or the action's
      own. A local SQLite file is then tried ``local_attempts`` times in all, and :class:`StorageFailed`
      gives the reason; a server is retried for ``patience_s`` (a fail-over can answer before it takes writes).

    An interrupt that a library turned into a storage error is raised as KeyboardInterrupt again.
    """

    def __init__(self, url: str, patience_s: float, on_retry: Callable[[str], None] = lambda s: None,
                 sleep: Callable[[float], None] = time.sleep, probe: Callable[[], bool] | None = None,
                 local_attempts: int = 3):
        self.url, self.patience_s, self.on_retry, self.sleep = url, patience_s, on_retry, sleep
        self.probe = probe if probe is not None else functools.partial(database_answers, url)
        self.local_attempts = local_attempts

    def within(self, patience_s: float) -> "Retry":
        """The same retries with a shorter patience."""
        return Retry(self.url, min(self.patience_s, patience_s), self.on_retry, self.sleep, self.probe,
                     self.local_attempts)

    def __call__(self, action: Callable, what: str, recover: Callable[[], None] = lambda: None):
        waited, delay, attempts = 0.0, 0.5, 0
        while True:
            try:
                return action()
            except Exception as error:  # noqa: BLE001 - storage errors and interrupts in disguise; others go on
                if _was_interrupted(error):
                    interrupted, reason = True, ""
                elif isinstance(error, STORAGE_ERRORS):
                    interrupted, reason = False, error_reason(error)
                else:
                    raise
            # out of the except block: the error's traceback (and any cursor it holds) can be collected now
            if interrupted:
                raise KeyboardInterrupt
            attempts += 1
            recover()
            answers = self.probe()
            if answers and is_sqlite(self.url):
                if attempts >= self.local_attempts:
                    raise StorageFailed(f"database {redact(self.url)} failed while {what} ({attempts} attempts: "
                                        f"{reason}); finished trials are stored, run again to resume")
                self.on_retry(f"database error while {what} ({reason}); retrying")
                self.sleep(0.1)
                continue
            if waited >= self.patience_s:
                if answers:
                    raise StorageFailed(f"database {redact(self.url)} failed while {what} (retried for {waited:.0f} s: "
                                        f"{reason}); finished trials are stored, run again to resume")
                raise StorageLost(f"lost the database {redact(self.url)} while {what} (retried for {waited:.0f} s: "
                                  f"{reason}); finished trials are stored, run again to resume")
            if answers:
                self.on_retry(f"database error while {what} ({reason}); retrying in {delay:.1f} s")
            else:
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

    def __exit__(self, exc_type, *exc):
        self.stop.set()
        # On an interrupt, do not wait: the beat under way may be waiting for a lock that the interrupted
        # call still holds until the worker collects it. The thread ends after that beat.
        if self.thread.is_alive() and exc_type is None:
            self.thread.join()


def _claim(study: optuna.Study, total: int,
           on_running: Callable[[set[int]], None] = lambda ids: None) -> optuna.Trial | None:
    """The next trial: a re-queued one first, else a new one while the budget lasts.

    ``on_running`` is told the trials running before the claim: if the claim is interrupted, a running
    trial not among them may be the one it created.
    """
    trials = study.get_trials(deepcopy=False)
    on_running({t._trial_id for t in trials if t.state == TrialState.RUNNING})
    waiting = any(t.state == TrialState.WAITING for t in trials)
    if not waiting and budget_used(trials) >= total:
        return None
    return study.ask()


def _check_stop() -> None:
    if stop_requested.is_set():
        raise KeyboardInterrupt


class _Step:
    """What the worker holds at a moment: the claimed trial, and what was running before it was claimed."""

    def __init__(self):
        self.running_before: set[int] | None = None
        self.trial: optuna.Trial | None = None


def run_worker(study: optuna.Study, objective: Objective, total: int, locks: StudyLocks, retry: Retry,
               on_trial_end: Callable[[optuna.Study, FrozenTrial], None] = lambda s, t: None) -> int:
    """Run trials until the study holds ``total`` of them; returns how many this worker ran.

    Ctrl-C (KeyboardInterrupt) anywhere in the loop fails the claimed trial as interrupted (it does not
    use up budget), then is raised again.
    """
    ran = 0
    recover = functools.partial(reset_storage, study._storage)
    while True:
        step = _Step()
        try:
            if not _run_one(study, objective, total, locks, retry, recover, step, on_trial_end):
                return ran
            ran += 1
            continue
        except BaseException as error:  # noqa: BLE001
            # An interrupt can come back as the error of a clean-up it broke (SQLAlchemy's assertions, its
            # IllegalStateChangeError); either way it is handled below, out of this block: the interrupt's
            # traceback may hold a database cursor.
            if not isinstance(error, KeyboardInterrupt) and not _was_interrupted(error):
                raise
        _stop(study, step, retry, recover, locks)
        stop_requested.clear()  # acted on
        raise KeyboardInterrupt


def _run_one(study, objective, total, locks, retry, recover, step: _Step, on_trial_end) -> bool:
    """Claim, run and record one trial; False when the study has its budget."""
    _check_stop()

    def claim():
        optuna.storages.fail_stale_trials(study)  # dead workers' trials: failed, parameters re-queued
        fail_silent_trials(study)  # ... and those that died before their first heartbeat
        with locks.critical("claim"):
            return _claim(study, total, on_running=lambda ids: setattr(step, "running_before", ids))

    trial = step.trial = retry(claim, "claiming a trial", recover)
    if trial is None:
        return False
    _check_stop()
    with _Heartbeats(study._storage, trial._trial_id):
        plan = retry(lambda: objective.plan(trial), f"sampling trial {trial.number}", recover)
        _check_stop()
        result = objective.evaluate(trial, plan)
        try:
            _check_stop()
            result.attributes["worker"] = WORKER_ID

            def record():
                objective.record(trial, result)
                try:
                    study.tell(trial, result.values if result.state == TrialState.COMPLETE else None, state=result.state)
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass  # an earlier attempt's tell reached the database before the connection broke

            retry(record, f"recording trial {trial.number}", recover)
        finally:
            objective.discard(result)
    step.trial = None  # recorded: nothing to fail from here on
    on_trial_end(study, study._storage.get_trial(trial._trial_id))
    return True


def _stop(study: optuna.Study, step: _Step, retry: Retry, recover: Callable[[], None], locks: StudyLocks) -> None:
    """After an interrupt: free what the interrupted call held, then fail the claimed trial as interrupted.

    An interrupt inside the claim may have created a trial the worker never got: on SQLite (one worker
    holds the file) a trial running now that was not before the claim is it. On a server it may be
    another worker's, so it is left to the heartbeat checks (failed and re-queued after the grace period).
    """
    recover()
    if step.trial is not None:
        _fail_interrupted(study, step.trial._trial_id, step.trial.number, retry, recover)
    elif step.running_before is not None and is_sqlite(locks.url):
        try:
            running = study._storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,))
        except Exception:  # noqa: BLE001 - the next start fails it as a stopped run's (fail_orphans)
            return
        for trial in running:
            if trial._trial_id not in step.running_before:
                _fail_interrupted(study, trial._trial_id, trial.number, retry, recover)


def _fail_interrupted(study: optuna.Study, trial_id: int, number: int, retry: Retry,
                      recover: Callable[[], None]) -> None:
    """Fail the trial as interrupted, within a few seconds. Another interrupt meanwhile gets one last quick
    try; a trial that could not be failed is left to the heartbeat checks (or, on SQLite, the next start)."""
    storage = study._storage

    def fail():
        before = storage.get_trial(trial_id)
        storage.set_trial_user_attr(trial_id, "interrupted", True)  # first: alone, it keeps the trial off the budget
        storage.set_trial_user_attr(trial_id, "failure", INTERRUPTED)
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
    fixed = trial.system_attrs.get("fixed_params")  # where Optuna's enqueue_trial keeps them
    if fixed:
        attrs = {k: v for k, v in trial.user_attrs.items() if k not in ("interrupted", "failure")}
        study.enqueue_trial(fixed, user_attrs=attrs)


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
