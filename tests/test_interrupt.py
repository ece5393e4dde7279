"""Ctrl-C during a trial on SQLite: the trial is failed cleanly, a second worker is refused while the
first holds the database, and the study resumes to exactly its budget. A trial whose worker died
before its first heartbeat is failed and re-queued too."""
import os
import signal
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import tune_process, wait_for
from edgetune.searcher.recovery import INTERRUPTED
from edgetune.searcher.worker import budget_used

ROOT = Path(__file__).resolve().parents[1]


def _tune(*args, folder):
    return tune_process(*args, cwd=folder, env={k: v for k, v in os.environ.items() if k != "EDGETUNE_STORAGE"})


@pytest.mark.slow
def test_ctrl_c_fails_the_running_trial_cleanly_and_the_study_resumes(study_dir, tmp_path):
    spec = (study_dir / "tiny.toml").read_text().replace(str(study_dir), str(tmp_path)).replace('name = "tiny"', 'name = "stop"')
    (tmp_path / "stop.toml").write_text(spec)
    storage = f"sqlite:///{tmp_path}/tiny.db"
    # A budget the run cannot finish, of trials that last (20 epochs of fine-tuning): the Ctrl-C below lands
    # in the first trial, whatever the machine's speed. (No recipes: they would be queued for the 50.)
    no_recipes = ("--set", "search.recipes=false")
    run = _tune("start", "--spec", str(tmp_path / "stop.toml"), "--trials", "50", "--set", "finetune.epochs=20",
                *no_recipes, folder=tmp_path)

    def trials():
        try:
            return optuna.load_study(study_name="stop", storage=storage).trials
        except KeyError:  # not created yet
            return []

    def running():
        return any(t.state == TrialState.RUNNING for t in trials())

    def finished_early():
        return run.poll() is not None and run.communicate()[0]

    assert wait_for(running), finished_early()
    second = _tune("worker", "stop", "--storage", storage, folder=tmp_path)
    refused, _ = second.communicate(timeout=300)
    assert second.returncode == 2
    assert refused.strip().splitlines()[-1] == (f"error: {tmp_path}/tiny.db is in use by another worker; SQLite takes one "
                                                "worker; for several, store the study in PostgreSQL (--storage "
                                                "postgresql://user@host/db or $EDGETUNE_STORAGE)")
    assert wait_for(running, seconds=5), finished_early()  # still in its trial
    run.send_signal(signal.SIGINT)
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 130, output
    assert "interrupted: finished trials are stored" in " ".join(output.split()) and "Traceback" not in output
    stopped = trials()
    interrupted = [t for t in stopped if t.state == TrialState.FAIL and t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0].user_attrs["failure"] == INTERRUPTED, output
    assert not any(t.state == TrialState.RUNNING for t in stopped)
    assert not any(t.state == TrialState.WAITING for t in stopped)
    done = budget_used(stopped)  # the trials finished before the Ctrl-C (none, with trials this long)

    resumed = _tune("start", "--spec", str(tmp_path / "stop.toml"), "--trials", str(done + 1), *no_recipes,
                    folder=tmp_path)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    after = trials()
    assert budget_used(after) == done + 1 and len(after) == len(stopped) + 1  # the interrupted trial used no budget
    assert not any(t.state == TrialState.RUNNING for t in after)


def test_a_trial_that_died_before_its_first_heartbeat_is_failed_and_requeued(tmp_path):
    """Optuna's stale check skips RUNNING trials without any heartbeat; edgetune's claim does not."""
    from edgetune.searcher.storage import Heartbeat, open_storage
    from edgetune.searcher.optuna_internals import trial_id
    from edgetune.searcher.recovery import fail_silent_trials

    storage = open_storage(f"sqlite:///{tmp_path / 'silent.db'}", Heartbeat(interval=1, grace_period=3, max_retry=2))
    study = optuna.create_study(study_name="silent", storage=storage)
    silent = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # claimed, then its worker died
    beating = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(trial_id(beating))
    assert fail_silent_trials(study) == []  # within the grace period: it may still be starting
    failed = []

    def past_the_grace_period():
        storage.record_heartbeat(trial_id(beating))  # alive
        failed.extend(fail_silent_trials(study))
        return bool(failed)

    assert wait_for(past_the_grace_period, seconds=30, every=0.1)
    assert failed == [silent.number]
    trials = study.get_trials()
    assert trials[silent.number].state == TrialState.FAIL and trials[beating.number].state == TrialState.RUNNING
    requeued = [t for t in trials if t.state == TrialState.WAITING]
    assert len(requeued) == 1 and requeued[0].params == trials[silent.number].params
