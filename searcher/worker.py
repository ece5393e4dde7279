"""One worker's loop over a study: claim a trial, run it with heartbeats, record it.

Several workers (processes, hosts) may run this loop on one study in PostgreSQL:

- the next trial is claimed under the study's lock, so the study ends with exactly the requested
  number of trials (:func:`budget_used` says which count);
- while a trial runs, a thread records Optuna heartbeats; a worker that dies (SIGKILL, power) goes
  silent, and the next worker to claim a trial fails it and re-queues its parameters
  (:mod:`searcher.recovery`);
- Ctrl-C (or SIGTERM) fails the running trial cleanly, then stops the worker, wherever it lands: in a
  trial or in a database call (see :func:`searcher.recovery.reset_storage` for what such a call leaves behind);
- a database that stops answering is retried with back-off for ``patience_s``; then the worker stops
  with one line (:mod:`searcher.retry`). Finished trials are always in the database before the next one starts.
"""
from __future__ import annotations

import functools
import os
import socket
import threading
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import optuna_internals as internals
from .locks import StudyLocks
from .recovery import Heartbeats, fail_interrupted, fail_silent_trials, reset_storage
from .retry import Retry, was_interrupted
from .trial import Objective
from .storage import is_sqlite

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"  # recorded on each trial: who ran it

#: set by the command line's SIGINT/SIGTERM handler. An interrupt that lands in a finaliser or in a
#: library's clean-up can be swallowed there ("Exception ignored in ...", or turned into the library's own
#: error); the worker then stops at its next step all the same.
stop_requested = threading.Event()


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


def _claim(study: optuna.Study, total: int,
           on_running: Callable[[set[int]], None] = lambda ids: None) -> optuna.Trial | None:
    """The next trial: a re-queued one first, else a new one while the budget lasts.

    ``on_running`` is told the trials running before the claim: if the claim is interrupted, a running
    trial not among them may be the one it created.
    """
    trials = study.get_trials(deepcopy=False)
    on_running({internals.trial_id(t) for t in trials if t.state == TrialState.RUNNING})
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
    recover = functools.partial(reset_storage, internals.storage(study))
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
            if not isinstance(error, KeyboardInterrupt) and not was_interrupted(error):
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
    with Heartbeats(internals.storage(study), internals.trial_id(trial)):
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
    on_trial_end(study, internals.storage(study).get_trial(internals.trial_id(trial)))
    return True


def _stop(study: optuna.Study, step: _Step, retry: Retry, recover: Callable[[], None], locks: StudyLocks) -> None:
    """After an interrupt: free what the interrupted call held, then fail the claimed trial as interrupted.

    An interrupt inside the claim may have created a trial the worker never got: on SQLite (one worker
    holds the file) a trial running now that was not before the claim is it. On a server it may be
    another worker's, so it is left to the heartbeat checks (failed and re-queued after the grace period).
    """
    recover()
    if step.trial is not None:
        fail_interrupted(study, internals.trial_id(step.trial), step.trial.number, retry, recover)
    elif step.running_before is not None and is_sqlite(locks.url):
        try:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except Exception:  # noqa: BLE001 - the next start fails it as a stopped run's (fail_orphans)
            return
        for trial in running:
            if internals.trial_id(trial) not in step.running_before:
                fail_interrupted(study, internals.trial_id(trial), trial.number, retry, recover)
