"""The bulk reader (searcher/bulk.py) against the pinned Optuna: field by field what ``study.get_trials()``
gives, on SQLite and PostgreSQL; and the report's parts made faster give the same numbers as before."""
import gc
import math

import numpy as np
import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState
from sqlalchemy import create_engine

from edgetune.searcher import bulk, pareto, report
from edgetune.searcher.params import DEPTH, PRECISION, PRUNER, SPARSITY, param_name
from tests.postgres import PostgresServer

SPARSE, DEPTH1, PRECISION1 = (param_name(kind, "layer1") for kind in (SPARSITY, DEPTH, PRECISION))

ATTRS = {"latency_ms": 1.25, "top1": 97.5, "params": 123_456_789_012, "seconds": {"fine_tune": 20.0, "measure": 2.5},
         "channels": {"layer1.0.conv1": 16, "layer1.0.conv2": 8}, "pruner": "l1", "seeded": None,
         "class_top1": [100.0, 96.5, float("inf")], "precision_plan": {"layer1": "int8", "other": "f32"},
         "zeta": "last by name", "Alpha": "first by code point", "latency_ms@other": 3.5}


def _build(storage) -> optuna.Study:
    """Every kind of trial and field the report reads, made through Optuna's public API."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="bulk", storage=storage, directions=["minimize", "maximize"])
    study.set_metric_names(["latency_ms", "top1"])
    study.set_user_attr("spec", {"study.targets": ["latency", "top1"]})
    study.set_user_attr("baseline_latency_ms", 2.0)
    study.set_user_attr("baseline_top1", 98.0)
    for i in range(6):  # complete, with constraints (some violated) and attributes written in no particular order
        trial = study.ask()
        trial.suggest_float(SPARSE, 0.0, 0.8, step=0.05)
        trial.suggest_int(DEPTH1, 1, 3)
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_categorical(PRUNER, ["l1", "l2", "fpgm"])
        trial.suggest_categorical(PRECISION1, ["f32", "int8", None])
        for key in sorted(ATTRS, key=lambda k: k[::-1]):  # not in key order
            trial.set_user_attr(key, ATTRS[key] if key != "latency_ms" else 1.0 + i / 10)
        trial.set_constraint("top1_drop", i - 3.5)
        trial.set_constraint("latency", -1.0)
        study.tell(trial, [1.0 + i / 10, 90.0 + i])
    failed = study.ask()
    failed.suggest_int(DEPTH1, 1, 3)
    failed.set_user_attr("failure", "RuntimeError: boom")
    study.tell(failed, state=TrialState.FAIL)
    pruned = study.ask()
    pruned.suggest_float(SPARSE, 0.0, 0.8, step=0.05)
    pruned.set_user_attr("finetune_skipped", "latency")
    study.tell(pruned, state=TrialState.PRUNED)
    infinite = study.ask()  # values stored as INF_POS / INF_NEG
    infinite.set_user_attr("latency_ms", 0.5)
    study.tell(infinite, [float("inf"), float("-inf")])
    study.ask()  # running
    study.enqueue_trial({DEPTH1: 2})  # waiting
    # a trial with constraints in the old format (one list; Optuna 3) and one added whole
    study.add_trial(optuna.trial.create_trial(values=[0.9, 99.0], params={DEPTH1: 2},
                                              distributions={DEPTH1: IntDistribution(1, 3)},
                                              user_attrs={"latency_ms": 0.9, "top1": 99.0},
                                              system_attrs={"constraints": [0.5, -1.0]}))
    return study


def _fields(trial) -> dict:
    return {"number": trial.number, "state": trial.state, "values": trial.values, "params": trial.params,
            "distributions": trial.distributions, "user_attrs": trial.user_attrs, "constraints": trial.constraints}


def _check_same_as_optuna(study: optuna.Study, by_sql: bool = True) -> None:
    expected = study.get_trials()
    assert len(expected) == 12 and {t.state for t in expected} == set(TrialState)
    every = bulk.read_trials(study)
    assert [_fields(r) for r in every] == [_fields(t) for t in expected]
    if bulk.rdb_storage(study) is None or bulk.rdb_storage(study).engine.dialect.name == "sqlite":
        # the user attributes in Optuna's order too (the interactive plot shows them in it): key order on
        # SQLite; on PostgreSQL Optuna's order follows the query plan (see bulk._user_attrs_by_trial)
        assert [list(r.user_attrs) for r in every] == [list(t.user_attrs) for t in expected]
    assert all(isinstance(r, bulk.StoredTrial) and r.all_user_attrs for r in every)
    some = bulk.read_trials(study, {"latency_ms", "top1", "seconds", "no such attribute"})
    for record, trial in zip(some, expected):
        wanted = {k: v for k, v in trial.user_attrs.items() if k in ("latency_ms", "top1", "seconds")}
        if by_sql:
            assert record.user_attrs == wanted and not record.all_user_attrs
        else:  # already in memory: every attribute is kept
            assert record.user_attrs == trial.user_attrs and record.all_user_attrs
        assert {**_fields(record), "user_attrs": trial.user_attrs} == _fields(trial)
    none = bulk.read_trials(study, ())
    assert all(r.user_attrs == {} for r in none) or not by_sql
    assert [r.values for r in none] == [t.values for t in expected]
    # with_all_user_attrs: the partial records made whole (one query), others passed through as they are
    whole = bulk.with_all_user_attrs(study, [some[0], expected[1], every[2], some[3]])
    assert [w.user_attrs for w in whole] == [expected[i].user_attrs for i in range(4)]
    assert whole[1] is expected[1] and whole[2] is every[2] and whole[0].all_user_attrs and whole[3].all_user_attrs
    # what the front and the report show is the same from records as from Optuna's trials
    assert [(r.number, r.attrs, r.params) for r in pareto.front(study)] == \
        [(r.number, r.attrs, r.params) for r in pareto.front(study, expected)]
    assert pareto.counts(study) == pareto.counts(study, expected)
    if by_sql:  # the read-only view tune report and tune pareto open instead of Optuna's storage
        engine = bulk.rdb_storage(study).engine
        assert bulk.stored_study_names(engine) == ["bulk"]
        view = bulk.stored_study(engine, "bulk")
        assert (view.study_name, view.directions, view.metric_names, view.user_attrs) == \
            (study.study_name, study.directions, study.metric_names, study.user_attrs)
        assert [_fields(r) for r in bulk.read_trials(view)] == [_fields(t) for t in expected]
        assert [(r.number, r.attrs) for r in pareto.front(view)] == [(r.number, r.attrs) for r in pareto.front(study)]


def test_reads_exactly_what_optuna_gives_on_sqlite(tmp_path):
    study = _build(f"sqlite:///{tmp_path}/bulk.db")
    assert bulk.rdb_storage(study) is not None, "the study must be read by SQL here, not through get_trials"
    _check_same_as_optuna(study)


def test_read_only_commands_open_the_view_with_the_same_choices_and_errors(tmp_path):
    from edgetune.searcher.storage import StorageError, read_study

    url = f"sqlite:///{tmp_path}/bulk.db"
    _build(url)
    view = read_study(url, None)  # the only study
    assert isinstance(view, bulk.StoredStudy) and view.study_name == "bulk"
    with pytest.raises(StorageError, match="no study 'nope' in the storage; studies: bulk"):
        read_study(url, "nope")
    with pytest.raises(StorageError, match="no study database at"):  # a file that is not there is not created
        read_study(f"sqlite:///{tmp_path}/elsewhere.db", None)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'v3.0.0.d'")  # an older schema
    assert bulk.stored_study_names(engine) is None  # then Optuna opens it (and asks for an upgrade)


@pytest.mark.slow
@pytest.mark.skipif(not PostgresServer.available(), reason="initdb/pg_ctl are not installed")
def test_reads_exactly_what_optuna_gives_on_postgresql():
    server = PostgresServer().start()
    try:
        study = _build(server.url)
        assert bulk.rdb_storage(study) is not None
        _check_same_as_optuna(study)
    finally:
        server.remove()


def test_other_storages_are_read_through_optuna():
    study = _build(None)  # in memory
    assert bulk.rdb_storage(study) is None
    _check_same_as_optuna(study, by_sql=False)


def test_reading_pauses_the_garbage_collector_and_restores_it(tmp_path):
    study = _build(f"sqlite:///{tmp_path}/bulk.db")
    assert gc.isenabled()
    bulk.read_trials(study)
    assert gc.isenabled()
    gc.disable()
    try:
        bulk.read_trials(study)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_trial_added_while_reading_is_left_out(tmp_path, monkeypatch):
    study = _build(f"sqlite:///{tmp_path}/bulk.db")
    first = bulk.select
    added = []

    def select_then_add(*columns):  # a worker adds a complete trial right after the trials were read
        if columns and columns[0] is bulk._values.c.trial_id and not added:
            added.append(study.add_trial(optuna.trial.create_trial(values=[1.0, 2.0], user_attrs={"top1": 2.0})))
        return first(*columns)

    monkeypatch.setattr(bulk, "select", select_then_add)
    read = bulk.read_trials(study)
    assert added and len(read) == 12 and len(study.get_trials()) == 13


def test_spearman_is_scipys():
    from scipy.stats import rankdata, spearmanr

    rng = np.random.default_rng(0)
    for n in (3, 17, 500):
        for _ in range(10):
            x = np.round(rng.uniform(0, 0.8, n) / 0.05) * 0.05  # many ties, as a stepped parameter has
            y = np.round(rng.normal(size=n), 1)
            assert np.array_equal(report._average_ranks(x), rankdata(x))
            assert report.spearman(x, y) == float(spearmanr(x, y).statistic)


def _hypervolume_one_by_one(data) -> list[tuple[int, float]]:
    """The report's former loop: the hypervolume recomputed after every trial."""
    import moocore

    reference = report.reference_point(data)
    signs = np.array([1.0 if report.target_direction(t) == "minimize" else -1.0 for t in data.targets])
    points = np.array([[t.user_attrs[report.target_unit(k)] for k in data.targets] for t in data.trials]) * signs
    history, front = [], np.empty((0, len(data.targets)))
    for trial, point in zip(data.trials, points):
        if np.all(point < reference) and not np.any(np.all(front <= point, axis=1)):
            front = np.vstack([front[~np.all(point <= front, axis=1)], point])
        volume = moocore.hypervolume(front, ref=reference) if len(front) else 0.0
        history.append((trial.number, float(volume)))
    return history


@pytest.mark.parametrize("targets", [["latency", "top1"], ["latency", "top1", "size"]])
def test_hypervolume_history_is_the_one_by_one_computation(targets):
    rng = np.random.default_rng(1)
    trials = []
    for number in range(1500):
        attrs = {"latency_ms": float(rng.uniform(0.5, 2.5)), "top1": float(99 - rng.exponential(3)),
                 "size_bytes": float(rng.integers(1000, 9000))}
        trials.append(bulk.StoredTrial(number, TrialState.COMPLETE, None, user_attrs=attrs))
    baseline = {"latency_ms": 2.0, "top1": 98.0, "size_bytes": 8000}
    data = report.ReportData(None, trials, targets, baseline, [], {})
    history = report.hypervolume_history(data)
    assert history == _hypervolume_one_by_one(data)
    assert history[0][1] >= 0 and history[-1][1] > history[0][1]



def test_the_report_reads_the_study_once_and_samples_it(tmp_path):
    study = _build(f"sqlite:///{tmp_path}/bulk.db")
    data = report.collect(study)
    expected = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert [t.number for t in data.trials] == [t.number for t in expected]
    assert data.counts == pareto.counts(study, study.get_trials())
    assert all(set(t.user_attrs) <= report.report_user_attrs(study) for t in data.trials)
    # the in-memory sample (all of it here: fewer than SAMPLE trials): what PED-ANOVA reads, and the same trials'
    # indices for the interactive plot
    sampled = report.sample_study(data).get_trials(deepcopy=False)
    assert [(t.values, t.params) for t in sampled] == [(t.values, t.params) for t in expected]
    assert [data.trials[i].number for i in data.sampled] == [t.number for t in expected]


def test_decode_is_json_loads():
    import json

    for value in (0, -0.0, 1.5, -2, 1e16, 1e-7, 2.5e300, 123456789012345678901234567890, float("inf"), float("-inf"),
                  "-1", "", None, True, [1, 2.0], {"fine_tune": 20.0}):
        text = json.dumps(value)
        decoded = bulk.decode(text)
        assert decoded == json.loads(text) and type(decoded) is type(json.loads(text)), text
    assert math.isnan(bulk.decode(json.dumps(float("nan"))))
