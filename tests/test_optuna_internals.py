"""The seam (searcher/optuna_internals.py) against the installed Optuna: each table, column, attribute and
key it relies on, in a real SQLite storage built through Optuna's public API. When Optuna changes one of
them, a test here fails (and no other module of edgetune needs to change)."""
import datetime
import math

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from sqlalchemy import inspect, select, update

from edgetune.searcher import optuna_internals as internals
from edgetune.searcher.storage import Heartbeat, open_storage
from tests.postgres import PostgresServer

X = {"x": FloatDistribution(0, 1)}


@pytest.fixture
def study(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'seam.db'}", Heartbeat(interval=1, grace_period=5, max_retry=1))
    return optuna.create_study(study_name="seam", storage=storage, directions=["minimize", "maximize"])


def test_written_for_the_installed_major_version():
    assert internals.same_major_version(), (
        f"Optuna {optuna.__version__} is installed; searcher/optuna_internals.py was written for "
        f"{internals.OPTUNA_VERSION}: check each assumption in its docstring, then update OPTUNA_VERSION")


def test_every_table_and_column_the_seam_declares_exists_with_its_type(study):
    engine = internals.rdb_storage(study).engine
    inspector = inspect(engine)
    found = set(inspector.get_table_names())
    for table in internals.metadata.tables.values():
        assert table.name in found, f"Optuna has no table {table.name!r} any more"
        columns = {c["name"]: c["type"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            assert column.name in columns, f"Optuna's table {table.name!r} has no column {column.name!r} any more"
            assert columns[column.name].python_type is column.type.python_type, f"{table.name}.{column.name}"
    with engine.connect() as connection:
        assert internals.schema_is_known(connection), "Optuna creates another schema revision than SCHEMA"


def test_the_storage_and_ids_behind_a_study_and_its_trials(study):
    storage = internals.storage(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert isinstance(internals.rdb_storage(study), optuna.storages.RDBStorage)
    assert internals.rdb_backend(storage) is internals.rdb_storage(study)
    assert internals.study_id(study) == storage.get_study_id_from_name("seam")
    trial = study.ask(X)
    expected = storage.get_trial_id_from_study_id_trial_number(internals.study_id(study), trial.number)
    assert internals.trial_id(trial) == expected
    assert internals.trial_id(study.get_trials()[0]) == expected


def test_trials_are_stored_as_the_seam_reads_them(study):
    study.set_metric_names(["latency_ms", "top1"])
    study.enqueue_trial({"x": 0.25}, user_attrs={"recipe": "a"})
    enqueued = study.ask(X)
    study.tell(enqueued, [float("inf"), 1.0])
    sampled = study.ask(X)
    internals.storage(study).set_trial_system_attr(internals.trial_id(sampled), f"{internals.CONSTRAINTS}:0", 0.5)
    study.tell(sampled, state=TrialState.FAIL)
    trials = study.get_trials()
    assert internals.enqueued_params(trials[0]) == {"x": 0.25}
    assert internals.enqueued_params(trials[1]) is None
    constraints = {}
    internals.add_constraint(constraints, f"{internals.CONSTRAINTS}:0", 0.5)
    assert constraints == trials[1].constraints == {"0": 0.5}
    old_format = {}
    internals.add_constraint(old_format, internals.CONSTRAINTS, [0.5, -1.0])
    assert old_format == optuna.trial.create_trial(
        values=[1.0, 1.0], system_attrs={internals.CONSTRAINTS: [0.5, -1.0]}).constraints

    engine = internals.rdb_storage(study).engine
    with engine.connect() as connection:
        states = dict(connection.execute(select(internals.trials.c.number, internals.trials.c.state)).fetchall())
        values = connection.execute(select(internals.trial_values.c.objective, internals.trial_values.c.value,
                                           internals.trial_values.c.value_type)
                                    .order_by(internals.trial_values.c.objective)).fetchall()
        names = connection.execute(select(internals.study_system_attributes.c.value_json).where(
            internals.study_system_attributes.c.key == internals.METRIC_NAMES)).scalar_one()
    assert states == {0: TrialState.COMPLETE.name, 1: TrialState.FAIL.name}  # enums by name
    assert [(o, internals.INFINITE.get(kind, v)) for o, v, kind in values] == [(0, math.inf), (1, 1.0)]
    assert names == '["latency_ms", "top1"]'


def test_heartbeats_as_the_recovery_reads_them(study):
    _check_heartbeats(study)


@pytest.mark.slow
@pytest.mark.skipif(not PostgresServer.available(), reason="initdb/pg_ctl are not installed")
def test_heartbeats_as_the_recovery_reads_them_on_postgresql():
    server = PostgresServer().start()  # its enum columns compare to text only when cast
    try:
        storage = open_storage(server.url, Heartbeat(interval=1, grace_period=5, max_retry=1))
        _check_heartbeats(optuna.create_study(study_name="seam", storage=storage))
    finally:
        server.remove()


def _check_heartbeats(study):
    assert internals.grace_period_s(study) == 5
    silent, beating = study.ask(X), study.ask(X)
    internals.storage(study).record_heartbeat(internals.trial_id(beating))
    assert internals.never_beaten_trial_ids(study) == [internals.trial_id(silent)]
    assert internals.stale_trial_ids(study) == []
    with internals.rdb_storage(study).engine.begin() as connection:  # its worker died long ago
        connection.execute(update(internals.trial_heartbeats).values(heartbeat=datetime.datetime(2000, 1, 1)))
    assert internals.stale_trial_ids(study) == [internals.trial_id(beating)]
    optuna.storages.fail_stale_trials(study)  # what the stale ids are: the trials Optuna fails
    assert [t.state for t in study.get_trials()][:2] == [TrialState.RUNNING, TrialState.FAIL]


def test_discarding_the_session_leaves_the_storage_usable(study):
    study.ask(X)
    rdb = internals.rdb_storage(study)
    rdb.scoped_session()  # this thread's session, as a call that was interrupted left it
    assert rdb.scoped_session.registry.has()
    internals.discard_session(internals.storage(study))
    assert not rdb.scoped_session.registry.has()
    assert len(study.get_trials()) == 1


def test_other_storages_have_none_of_it(tmp_path):
    in_memory = optuna.create_study()
    plain = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'plain.db'}"))  # no heartbeats
    for study in (in_memory, plain):
        study.ask(X)
        assert internals.grace_period_s(study) is None
        assert internals.never_beaten_trial_ids(study) == [] and internals.stale_trial_ids(study) == []
        internals.discard_session(internals.storage(study))
    assert internals.rdb_storage(in_memory) is None
