"""Several workers on one study in a real PostgreSQL (started by the suite), and crash recovery.

Workers are real processes running the command line, as a user would start them on several hosts.
"""
import datetime
import os
import signal

import optuna
import pytest
from optuna.trial import TrialState

from conftest import tune_process, wait_for
from edgetune.searcher.optuna_internals import never_beaten_trial_ids, stale_trial_ids, trial_id
from edgetune.searcher.storage import Heartbeat, open_storage
from edgetune.searcher.worker import budget_used
from tests.postgres import PostgresServer

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not PostgresServer.available(), reason="initdb/pg_ctl are not installed")]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRACE_S = 4  # the studies' grace period: a trial silent this long is failed and re-run by the next worker

SPEC = """
[study]
name = "{name}"
artifacts = "{folder}/artifacts"
heartbeat_interval = 1
grace_period = {grace}
db_patience = 3
[model]
name = "resnet20"
[baseline]
epochs = 2
[finetune]
epochs = 0                          # the workers are under test, not the fine-tuning
[device]
threads = 1
latency_max_seconds = 1
[search]
sparsity_max = 0.3
pruners = ["l1"]
precisions = ["f32"]
depth = false                       # untrained (0 epochs): keep every block so no trial collapses
stream_width = false
recipes = false
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One host's baseline cache, shared by the tests (the baseline is trained once)."""
    return tmp_path_factory.mktemp("worker-cache")


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer().start()
    yield server
    server.remove()


def _spec(folder, name):
    path = folder / f"{name}.toml"
    path.write_text(SPEC.format(name=name, folder=folder, grace=GRACE_S))
    return path


def _tune(*args, cache, storage):
    """``tune ARGS`` as its own process (its own baseline cache: as if on another host)."""
    return tune_process(*args, cwd=ROOT, env=dict(os.environ, EDGETUNE_CACHE=str(cache), EDGETUNE_STORAGE=storage))


def _finish(process, seconds=600):
    output, _ = process.communicate(timeout=seconds)
    return process.returncode, output


_storages = {}


def _study(url, name):
    """The study through one storage per URL (a new engine per poll would exhaust the server's connections)."""
    if url not in _storages:
        _storages[url] = open_storage(url)
    return optuna.load_study(study_name=name, storage=_storages[url])


_beating_storages = {}


def _left_to_the_next_worker(url, name) -> bool:
    """Whether every RUNNING trial is overdue as the next worker's claim judges it (with the spec's heartbeat
    settings): its heartbeat is stale (Optuna's check), or it never beat and started a grace period ago (edgetune's)."""
    if url not in _beating_storages:
        _beating_storages[url] = open_storage(url, Heartbeat(interval=1, grace_period=GRACE_S))
    study = optuna.load_study(study_name=name, storage=_beating_storages[url])
    stale = set(stale_trial_ids(study))
    never_beaten = set(never_beaten_trial_ids(study))
    grace = datetime.timedelta(seconds=GRACE_S)
    return all(trial_id(t) in stale or (trial_id(t) in never_beaten and datetime.datetime.now() - t.datetime_start > grace)
               for t in study.get_trials(states=(TrialState.RUNNING,)))


def test_two_workers_finish_exactly_the_budget_and_share_one_baseline(postgres, cache, tmp_path):
    spec = _spec(tmp_path, "pair")
    # two hosts start the same study at once: each with its own empty cache
    first = _tune("start", "--spec", str(spec), "--trials", "4", cache=cache, storage=postgres.url)
    second = _tune("start", "--spec", str(spec), "--trials", "4", cache=tmp_path / "empty-cache", storage=postgres.url)
    outputs = [_finish(first), _finish(second)]
    for code, output in outputs:
        assert code == 0, output
    sources = sorted(next(line for line in out.splitlines() if line.startswith("baseline (")).split(")")[0]
                     for _, out in outputs)
    assert sources == ["baseline (the study's artifact", "baseline (trained"]  # trained once, reused once

    study = _study(postgres.url, "pair")
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # exactly the budget: none lost, none extra
    assert all(t.state == TrialState.COMPLETE for t in trials), [(t.number, t.state.name, t.user_attrs.get("failure"),
                                                                  t.user_attrs.get("seeded")) for t in trials]
    assert len({t.user_attrs["artifact_id"] for t in trials}) == 4  # each its own model
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials
    assert "postgresql" in study.user_attrs["spec"]["study.storage"]

    # `tune start --workers 2` raises the budget; its two local workers join the study
    code, output = _finish(_tune("start", "--spec", str(spec), "--trials", "6", "--workers", "2",
                                 cache=cache, storage=postgres.url))
    assert code == 0, output
    trials = _study(postgres.url, "pair").get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_a_killed_worker_trial_is_failed_and_retried_and_finished_trials_stay(postgres, cache, tmp_path):
    spec = _spec(tmp_path, "crash")
    slow = ("--set", "finetune.epochs=1")  # trials long enough to be killed mid-way
    worker = _tune("start", "--spec", str(spec), "--trials", "3", *slow, cache=cache, storage=postgres.url)
    storage = postgres.url

    def one_done_one_in_its_fine_tuning():
        """A trial finished, and the next one past its sampling (all its parameters stored): a kill now
        interrupts its fine-tuning, and its re-run gets exactly its parameters."""
        try:
            trials = _study(storage, "crash").get_trials()
        except KeyError:
            return False
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        return bool(complete and running) and running[0].params.keys() >= complete[0].params.keys()

    assert wait_for(one_done_one_in_its_fine_tuning), _finish(worker)[1]
    worker.send_signal(signal.SIGKILL)
    worker.communicate()
    before = {t.number: t for t in _study(storage, "crash").get_trials()}
    killed = next(t for t in before.values() if t.state == TrialState.RUNNING)
    done = [t for t in before.values() if t.state == TrialState.COMPLETE]

    assert wait_for(lambda: _left_to_the_next_worker(storage, "crash"), seconds=60)  # its heartbeat is stale
    code, output = _finish(_tune("start", "--spec", str(spec), "--trials", "3", *slow, cache=cache, storage=storage))
    assert code == 0, output
    after = {t.number: t for t in _study(storage, "crash").get_trials()}
    assert after[killed.number].state == TrialState.FAIL
    retry = [t for t in after.values() if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE, [(t.number, t.state.name, t.user_attrs) for t in retry]
    assert retry[0].params == killed.params  # re-run with the same parameters
    for trial in done:  # finished trials are intact
        assert after[trial.number].values == trial.values and after[trial.number].user_attrs == trial.user_attrs
    assert budget_used(list(after.values())) == 3 and len(after) == 4


def test_a_lost_database_stops_the_worker_cleanly_and_the_study_resumes(postgres, cache, tmp_path):
    spec = _spec(tmp_path, "outage")
    storage = postgres.url
    slow = ("--set", "finetune.epochs=1")  # the outage falls inside a trial
    worker = _tune("start", "--spec", str(spec), "--trials", "2", *slow, cache=cache, storage=storage)

    def running():
        try:
            return any(t.state == TrialState.RUNNING for t in _study(storage, "outage").get_trials())
        except KeyError:
            return False

    assert wait_for(running), _finish(worker)[1]
    postgres.stop("immediate")
    try:
        code, output = _finish(worker, seconds=300)
    finally:
        postgres.resume()
        postgres.wait_ready()
    assert code == 2, output
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"error: lost the database postgresql+psycopg://edgetune@127.0.0.1:{postgres.port}/edgetune while ")
    assert last.endswith("finished trials are stored, run again to resume")
    assert "Traceback" not in output

    assert wait_for(lambda: _left_to_the_next_worker(storage, "outage"), seconds=60)  # the trial's heartbeat is stale
    code, output = _finish(_tune("start", "--spec", str(spec), "--trials", "2", cache=cache, storage=storage))
    assert code == 0, output
    trials = _study(storage, "outage").get_trials()
    assert budget_used(trials) == 2
    assert all(t.state.is_finished() for t in trials), [(t.number, t.state.name) for t in trials]  # nothing left running
    counted = [t for t in trials if t.state != TrialState.FAIL]
    assert len(counted) == 2 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in counted)
