"""Ctrl-C that lands inside a database call of the worker loop, on SQLite.

A signal can land anywhere, among others just after a statement ran (its transaction still open) or just
after a commit (the row stored, the caller never told). Here each database step of the claim and record path
is interrupted at those two points by a hook that raises KeyboardInterrupt there, in the worker's thread, as
the signal handler would: no sleep, no timing. The worker must stop at once (no retry, none reported as an
outage), the claimed trial must be failed as interrupted (it does not use up budget), no trial may be left
RUNNING, and the same study, in the same process, must then run to its budget.
"""
import threading
import time

import optuna
import pytest
import typer
from optuna.trial import TrialState
from sqlalchemy import event
from sqlalchemy.exc import IllegalStateChangeError, OperationalError
from sqlalchemy.orm import Session

from edgetune.searcher import worker
from edgetune.searcher.locks import StudyLocks
from edgetune.searcher.trial import Objective, TrialResult
from edgetune.searcher.storage import Heartbeat, open_storage
from edgetune.searcher.optuna_internals import rdb_storage
from edgetune.searcher.recovery import INTERRUPTED
from edgetune.searcher.retry import Retry, StorageFailed, StorageLost
from edgetune.searcher.worker import budget_used, run_worker

BUDGET = 3
STOPS_WITHIN_S = 10  # the bug: "database unreachable" retries for the whole patience (minutes)


class InstantObjective(Objective):
    """Edgetune's objective with the pipeline replaced by an instant result (as bench/workers.py's
    ReplayObjective): ``plan`` (the sampler's suggestions) and ``record`` (attributes, constraints) do their
    real database work; ``evaluate`` none. ``hooks[name](trial)`` runs at the start of plan or evaluate."""

    def __init__(self, hooks=None):
        self.spec, self.on_phase, self.hooks = None, (lambda n, p: None), hooks or {}

    def plan(self, trial):
        self.hooks.get("plan", lambda t: None)(trial)
        return {"x": trial.suggest_float("x", 0.0, 1.0), "pruner": trial.suggest_categorical("pruner", ["l1", "fpgm"])}

    def evaluate(self, trial, plan):
        self.hooks.get("evaluate", lambda t: None)(trial)
        return TrialResult(TrialState.COMPLETE, (plan["x"],), {"latency_ms": plan["x"], "top1": 90.0},
                           {"top1_drop": -1.0})


class InterruptAt:
    """Once armed, raise KeyboardInterrupt in the main thread at the first statement starting with ``sql``:
    just after it ran (``after="execute"``), or just after its transaction committed (``after="commit"``)."""

    def __init__(self, engine, sql: str, after: str):
        self.engine, self.sql, self.after = engine, sql, after
        self.armed, self.committing, self.fired = False, False, 0
        event.listen(engine, "after_cursor_execute", self._executed)
        event.listen(Session, "after_commit", self._committed)

    def remove(self):
        event.remove(self.engine, "after_cursor_execute", self._executed)
        event.remove(Session, "after_commit", self._committed)

    def arm(self, *_):
        self.armed = True

    def _executed(self, connection, cursor, statement, parameters, context, executemany):
        if self.armed and threading.current_thread() is threading.main_thread() and statement.lstrip().startswith(self.sql):
            self.armed = False
            if self.after == "execute":
                self._fire()
            self.committing = True

    def _committed(self, session):
        if self.committing and threading.current_thread() is threading.main_thread():
            self.committing = False
            self._fire()

    def _fire(self):
        self.fired += 1
        worker.stop_requested.set()  # as the command line's signal handler does
        raise KeyboardInterrupt


@pytest.fixture
def study(tmp_path):
    url = f"sqlite:///{tmp_path / 'interrupts.db'}"
    storage = open_storage(url, Heartbeat(interval=1, grace_period=60, max_retry=2))  # heartbeats run, as in a study
    study = optuna.create_study(study_name="interrupts", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    study.url = url
    worker.stop_requested.clear()
    yield study
    worker.stop_requested.clear()
    storage.engine.dispose()


def _retry(study, messages, sleeps):
    return Retry(study.url, 60, on_retry=messages.append, sleep=sleeps.append)


def _assert_resumes_to_the_budget(study):
    """The same study object, in the same process (nothing the interrupt broke may linger), runs to its budget."""
    messages, sleeps = [], []
    run_worker(study, InstantObjective(), BUDGET, StudyLocks(study.url, study.study_name), _retry(study, messages, sleeps))
    assert messages == [] and sleeps == []
    trials = study.get_trials()
    assert budget_used(trials) == BUDGET
    assert all(t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and t.user_attrs["interrupted"])
               for t in trials), [(t.number, t.state.name, t.user_attrs) for t in trials]
    reopened = optuna.load_study(study_name=study.study_name, storage=study.url)  # as the next process sees it
    assert [t.state for t in reopened.get_trials()] == [t.state for t in trials]


# step: when the hook is armed, the statement it waits for, after it ran or committed, and what becomes of trial 1
STEPS = {
    "claim: fail stale trials (read)": ("after trial 0", "SELECT", "execute", "not claimed"),
    "claim: ask, insert the trial": ("after trial 0", "INSERT INTO trials", "execute", "not claimed"),  # rolled back
    "claim: ask, the trial stored": ("after trial 0", "INSERT INTO trials", "commit", "interrupted"),
    "plan: the sampler reads the trials": ("plan", "SELECT", "execute", "interrupted"),
    "plan: insert a parameter": ("plan", "INSERT INTO trial_params", "execute", "interrupted"),
    "plan: a parameter stored": ("plan", "INSERT INTO trial_params", "commit", "interrupted"),
    "record: insert an attribute": ("evaluate", "INSERT INTO trial_user_attributes", "execute", "interrupted"),
    "record: an attribute stored": ("evaluate", "INSERT INTO trial_user_attributes", "commit", "interrupted"),
    "record: insert a constraint": ("evaluate", "INSERT INTO trial_system_attributes", "execute", "interrupted"),
    "tell: update the state": ("evaluate", "UPDATE trials SET state", "execute", "interrupted"),
    "tell: the values stored": ("evaluate", "INSERT INTO trial_values", "commit", "complete"),  # told: it stays
}


@pytest.mark.parametrize("step", list(STEPS))
def test_ctrl_c_inside_a_database_step_stops_the_worker_at_once(study, step):
    when, sql, after, trial_1 = STEPS[step]
    interrupt = InterruptAt(rdb_storage(study).engine, sql, after)
    hooks = {when: lambda t: t.number == 1 and interrupt.arm()} if when != "after trial 0" else {}
    on_trial_end = interrupt.arm if when == "after trial 0" else (lambda s, t: None)
    messages, sleeps = [], []
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_worker(study, InstantObjective(hooks), BUDGET, StudyLocks(study.url, study.study_name),
                       _retry(study, messages, sleeps), on_trial_end=on_trial_end)
    finally:
        interrupt.remove()
    assert interrupt.fired == 1, "the hook never found its statement"
    assert time.monotonic() - start < STOPS_WITHIN_S
    assert messages == [] and sleeps == []  # no retry: nothing taken for an outage
    trials = study.get_trials()
    assert [t.number for t in trials if t.state == TrialState.RUNNING] == []
    assert trials[0].state == TrialState.COMPLETE
    if trial_1 == "not claimed":
        assert len(trials) == 1
    elif trial_1 == "complete":
        assert len(trials) == 2 and trials[1].state == TrialState.COMPLETE
    else:
        assert len(trials) == 2 and trials[1].state == TrialState.FAIL
        assert trials[1].user_attrs["failure"] == INTERRUPTED and trials[1].user_attrs["interrupted"] is True
    assert budget_used(trials) == sum(t.state == TrialState.COMPLETE for t in trials)  # the interrupted one is free
    _assert_resumes_to_the_budget(study)


def test_a_second_ctrl_c_while_failing_the_interrupted_trial(study):
    """Ctrl-C in the trial, then again inside the write that fails it: one last try fails it all the same."""
    interrupt = InterruptAt(rdb_storage(study).engine, "INSERT INTO trial_user_attributes", "execute")

    def first_ctrl_c(trial):
        if trial.number == 1:
            interrupt.arm()
            raise KeyboardInterrupt

    messages, sleeps = [], []
    try:
        with pytest.raises(KeyboardInterrupt):
            run_worker(study, InstantObjective({"evaluate": first_ctrl_c}), BUDGET,
                       StudyLocks(study.url, study.study_name), _retry(study, messages, sleeps))
    finally:
        interrupt.remove()
    assert interrupt.fired == 1 and messages == [] and sleeps == []
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert trials[1].user_attrs == {"interrupted": True, "failure": INTERRUPTED}
    _assert_resumes_to_the_budget(study)


def test_an_interrupt_swallowed_by_a_library_still_stops_the_worker(study):
    """A KeyboardInterrupt raised inside a finaliser is printed and dropped by Python ("Exception ignored in");
    the signal handler's flag stops the worker at its next step, and the trial is failed as interrupted."""
    def swallowed(trial):
        if trial.number == 1:
            worker.stop_requested.set()

    with pytest.raises(KeyboardInterrupt):
        run_worker(study, InstantObjective({"evaluate": swallowed}), BUDGET, StudyLocks(study.url, study.study_name),
                   _retry(study, [], []))
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert trials[1].user_attrs["failure"] == INTERRUPTED
    assert not worker.stop_requested.is_set()  # acted on
    _assert_resumes_to_the_budget(study)


def test_the_command_line_reports_the_interrupt_and_exits_130(capsys):
    """In pytest's process, after the rest of the suite: this once crashed it with a segmentation fault
    (the signal's frame went to an alternate stack OpenVINO had unmapped; devices/openvino_core.py)."""
    import signal

    from edgetune.searcher.cli import _run_interruptible

    def run(spec, progress):
        signal.raise_signal(signal.SIGINT)  # handled before raise_signal returns
        raise AssertionError("SIGINT did not interrupt")

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(typer.Exit) as stopped:
        _run_interruptible({"study.trials": 5, "study.storage": "sqlite:///some/where.db"}, run)
    assert stopped.value.exit_code == 130
    assert "interrupted: finished trials are stored in sqlite:///some/where.db; run the same command to resume" in \
        " ".join(capsys.readouterr().out.split())
    assert not worker.stop_requested.is_set()
    assert signal.getsignal(signal.SIGINT) is before


# --- Retry ------------------------------------------------------------------------------------------------

class Flaky:
    """An action that raises ``errors`` one after the other, then returns "done"."""

    def __init__(self, *errors):
        self.errors, self.calls = list(errors), 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def _storage_error(text="server closed the connection unexpectedly"):
    return OperationalError("SELECT 1", {}, Exception(text))


def test_retry_backs_off_while_the_database_is_unreachable_then_succeeds():
    messages, sleeps, recovered = [], [], []
    retry = Retry("postgresql://u:secret@db/x", 60, on_retry=messages.append, sleep=sleeps.append, probe=lambda: False)
    action = Flaky(_storage_error(), _storage_error(), optuna.exceptions.StorageInternalError("commit failed"))
    assert retry(action, "recording trial 3", recover=lambda: recovered.append(1)) == "done"
    assert action.calls == 4 and sleeps == [0.5, 1.0, 2.0] and len(recovered) == 3
    assert messages == [f"database unreachable while recording trial 3; retrying in {s:.1f} s" for s in sleeps]


def test_retry_gives_up_after_its_patience_with_storage_lost():
    sleeps = []
    retry = Retry("postgresql://u:secret@db/x", 10, sleep=sleeps.append, probe=lambda: False)
    action = Flaky(*[_storage_error()] * 100)
    with pytest.raises(StorageLost) as lost:
        retry(action, "claiming a trial")
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]  # 15.5 s waited >= 10 s of patience
    assert str(lost.value) == ("lost the database postgresql://u:***@db/x while claiming a trial (retried for 16 s: "
                               "server closed the connection unexpectedly); finished trials are stored, run again to resume")


def test_retry_delays_are_capped_at_thirty_seconds():
    sleeps = []
    retry = Retry("postgresql://db/x", 200, sleep=sleeps.append, probe=lambda: False)
    with pytest.raises(StorageLost):
        retry(Flaky(*[_storage_error()] * 100), "claiming a trial")
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0] + [30.0] * 6  # 211.5 s waited >= 200 s


def test_retry_passes_other_errors_through_at_once():
    sleeps = []
    retry = Retry("postgresql://db/x", 60, sleep=sleeps.append, probe=lambda: False)
    action = Flaky(ValueError("not a storage error"))
    with pytest.raises(ValueError, match="not a storage error"):
        retry(action, "sampling trial 1")
    action = Flaky(optuna.exceptions.UpdateFinishedTrialError("finished"))
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        retry(action, "recording trial 1")
    assert action.calls == 1 and sleeps == []


def test_retry_tries_a_local_sqlite_file_that_answers_a_few_times_only(tmp_path):
    """A local file that answers is no outage: waiting for the patience would change nothing."""
    messages, sleeps = [], []
    retry = Retry(f"sqlite:///{tmp_path / 'x.db'}", 600, on_retry=messages.append, sleep=sleeps.append, probe=lambda: True)
    assert retry(Flaky(_storage_error("database is locked")), "recording trial 2") == "done"
    assert messages == ["database error while recording trial 2 (database is locked); retrying"]
    with pytest.raises(StorageFailed, match=r"failed while recording trial 2 \(3 attempts: database is locked\)"):
        retry(Flaky(*[_storage_error("database is locked")] * 10), "recording trial 2")
    assert len(sleeps) == 1 + 2 and max(sleeps) < 1


def test_retry_probes_the_database_itself(tmp_path):
    """Without an injected probe, the database is asked on a new connection: a missing SQLite file does not answer."""
    sleeps = []
    gone = Retry(f"sqlite:///{tmp_path / 'gone' / 'x.db'}", 1, sleep=sleeps.append)
    with pytest.raises(StorageLost):
        gone(Flaky(*[_storage_error()] * 10), "claiming a trial")
    assert sleeps == [0.5, 1.0]
    url = f"sqlite:///{tmp_path / 'here.db'}"
    open_storage(url).engine.dispose()
    here = Retry(url, 600, sleep=sleeps.append)
    with pytest.raises(StorageFailed):
        here(Flaky(*[_storage_error("database is locked")] * 10), "claiming a trial")


def test_retry_raises_an_interrupt_that_a_library_turned_into_a_storage_error():
    """SQLAlchemy's clean-up of an interrupted call may raise its own error in place of the KeyboardInterrupt."""
    def interrupted_then_broken():
        try:
            raise KeyboardInterrupt
        finally:
            raise IllegalStateChangeError("Method 'close()' can't be called here")

    sleeps = []
    retry = Retry("postgresql://db/x", 60, sleep=sleeps.append, probe=lambda: False)
    with pytest.raises(KeyboardInterrupt):
        retry(interrupted_then_broken, "sampling trial 1")
    assert sleeps == []


def test_the_sqlite_worker_lock_creates_a_new_folder_as_the_storage_does(tmp_path):
    # `tune start --storage sqlite:///new/folder/x.db` died on the lock file before open_storage made the folder
    from edgetune.searcher.storage import StorageError

    url = f"sqlite:///{tmp_path}/new/folder/x.db"
    with StudyLocks(url, "s").exclusive_worker():
        assert (tmp_path / "new" / "folder" / "x.db.lock").exists()
        with pytest.raises(StorageError, match="is in use by another worker"), StudyLocks(url, "s").exclusive_worker():
            pass


def test_an_interrupted_enqueued_trial_is_queued_again_with_its_attributes(study):
    """Ctrl-C in a recipe seed (any enqueued trial): on resume it runs with its own parameters and its
    ``seeded`` mark; the slot of a sampled trial goes back to the sampler, which would not run it."""
    study.enqueue_trial({"x": 0.25, "pruner": "fpgm"}, user_attrs={"seeded": "int8"})

    def stop(trial):
        if trial.number == 0:
            worker.stop_requested.set()  # as the command line's signal handler does
            raise KeyboardInterrupt

    messages, sleeps = [], []
    with pytest.raises(KeyboardInterrupt):
        run_worker(study, InstantObjective({"evaluate": stop}), BUDGET, StudyLocks(study.url, study.study_name),
                   _retry(study, messages, sleeps))
    worker.stop_requested.clear()
    stopped = study.get_trials()
    assert [(t.state, t.user_attrs.get("interrupted")) for t in stopped] == [(TrialState.FAIL, True), (TrialState.WAITING, None)]
    assert stopped[1].user_attrs == {"seeded": "int8"}
    _assert_resumes_to_the_budget(study)
    seeded = [t for t in study.get_trials() if t.state == TrialState.COMPLETE and t.user_attrs.get("seeded") == "int8"]
    assert len(seeded) == 1 and seeded[0].params == {"x": 0.25, "pruner": "fpgm"}


def test_an_interrupted_sampled_trial_is_not_queued_again(study):
    def stop(trial):
        worker.stop_requested.set()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_worker(study, InstantObjective({"evaluate": stop}), BUDGET, StudyLocks(study.url, study.study_name),
                   _retry(study, [], []))
    worker.stop_requested.clear()
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]
