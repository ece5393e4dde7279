"""Everything edgetune relies on in Optuna beyond its public API, in one place.

Written against **Optuna 5.0.0** (the project pins ``optuna>=5,<6``) and checked against the installed
Optuna by ``tests/test_optuna_internals.py``, which builds a study in a real SQLite storage through the
public API and checks each assumption below (tables, columns, attributes, keys). When Optuna changes
one of them, that test fails and this module is the one to change. No other module of edgetune names a
private Optuna attribute or module; they call the functions here.

Why: Optuna has no public API for what edgetune needs in three places:

- **reading many trials fast** (:mod:`searcher.bulk`): ``study.get_trials()`` on an RDB storage builds
  every trial as ORM objects, then a ``FrozenTrial`` of each (seconds on 10,000 trials), so the report
  reads Optuna's tables with SQLAlchemy Core, through the :class:`~sqlalchemy.Table` definitions below;
- **recovering from dead and interrupted workers** (:mod:`searcher.recovery`): which RUNNING trials have
  never recorded a heartbeat (Optuna's stale check skips them), which Optuna judges stale, the
  parameters of an enqueued trial (to queue it again), and the storage's SQLAlchemy session (dropped
  after an interrupted call);
- **the storage and ids behind a study and a trial** (``Study._storage``, ``Study._study_id``,
  ``Trial._trial_id``, ``FrozenTrial._trial_id``), which the storage's own (public) methods take.

What this relies on, all of Optuna 5.0:

- the tables its ``RDBStorage`` creates and checks on open (alembic revision :data:`SCHEMA`), with the
  columns declared below: ``trials``, ``trial_values``, ``trial_params``, ``trial_user_attributes``,
  ``trial_system_attributes``, ``trial_heartbeats`` (one row per trial that has beaten), ``studies``,
  ``study_directions``, ``study_user_attributes``, ``study_system_attributes``, ``alembic_version``;
  enums stored by name (``TrialState``, ``StudyDirection``; a value's type ``FINITE``/``INF_POS``/
  ``INF_NEG``), on PostgreSQL in enum types of Optuna's (compared as text here); attribute values JSON-encoded; parameter values in their internal representation with
  the distribution as JSON (decoded by the public :func:`optuna.distributions.json_to_distribution`);
- system attribute keys: constraints as ``constraints:<name>`` (Optuna >= 4) or one ``constraints``
  list (older studies), as ``FrozenTrial.constraints`` reads them; the metric names as
  ``study:metric_names``; an enqueued trial's parameters as ``fixed_params`` (``Study.enqueue_trial``);
- ``Study._storage`` (a ``_CachedStorage`` whose ``_backend`` is the ``RDBStorage``; any other storage
  is used through its public methods only), ``Study._study_id``, ``Trial._trial_id`` and
  ``FrozenTrial._trial_id``;
- ``RDBStorage.scoped_session`` (the thread's SQLAlchemy session, a ``scoped_session``), ``engine``,
  ``heartbeat_interval`` and ``grace_period``, and ``_get_stale_trial_ids(study_id)`` (what
  :func:`optuna.storages.fail_stale_trials` fails).

Where the installed Optuna is of another major version, :func:`rdb_storage` answers None and the bulk
reader falls back to ``study.get_trials()``; the rest fails that test first.
"""
from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import Column, DateTime, Float, Integer, MetaData, String, Table, Text, cast, exists, select
from sqlalchemy.engine import Connection

OPTUNA_VERSION = "5.0.0"  # the version this module was written and tested against
SCHEMA = "v3.2.0.a"  # the alembic revision of the tables that version creates (its head)
METRIC_NAMES = "study:metric_names"  # optuna.study.study._SYSTEM_ATTR_METRIC_NAMES
#: Optuna's constraint keys (``optuna.study._constrained_optimization._CONSTRAINTS_KEY``)
CONSTRAINTS = "constraints"
#: where ``Study.enqueue_trial`` keeps a trial's parameters (a system attribute)
FIXED_PARAMS = "fixed_params"

#: Optuna's tables, only the columns edgetune reads (``optuna.storages._rdb.models``)
metadata = MetaData()
trials = Table("trials", metadata, Column("trial_id", Integer), Column("number", Integer), Column("study_id", Integer),
               Column("state", String))
trial_values = Table("trial_values", metadata, Column("trial_value_id", Integer), Column("trial_id", Integer),
                     Column("objective", Integer), Column("value", Float), Column("value_type", String))
trial_params = Table("trial_params", metadata, Column("param_id", Integer), Column("trial_id", Integer),
                     Column("param_name", String), Column("param_value", Float), Column("distribution_json", Text))
trial_user_attributes = Table("trial_user_attributes", metadata, Column("trial_user_attribute_id", Integer),
                              Column("trial_id", Integer), Column("key", String), Column("value_json", Text))
trial_system_attributes = Table("trial_system_attributes", metadata, Column("trial_system_attribute_id", Integer),
                                Column("trial_id", Integer), Column("key", String), Column("value_json", Text))
trial_heartbeats = Table("trial_heartbeats", metadata, Column("trial_heartbeat_id", Integer),
                         Column("trial_id", Integer), Column("heartbeat", DateTime))

studies = Table("studies", metadata, Column("study_id", Integer), Column("study_name", String))
study_directions = Table("study_directions", metadata, Column("study_direction_id", Integer),
                         Column("direction", String), Column("study_id", Integer), Column("objective", Integer))
study_user_attributes = Table("study_user_attributes", metadata, Column("study_user_attribute_id", Integer),
                              Column("study_id", Integer), Column("key", String), Column("value_json", Text))
study_system_attributes = Table("study_system_attributes", metadata, Column("study_system_attribute_id", Integer),
                                Column("study_id", Integer), Column("key", String), Column("value_json", Text))
alembic_version = Table("alembic_version", metadata, Column("version_num", String))

#: ``trial_values.value_type`` of the values stored as NULL
INFINITE = {"INF_POS": float("inf"), "INF_NEG": float("-inf")}


def same_major_version() -> bool:
    """Whether the installed Optuna is of the major version this module was written against."""
    return optuna.__version__.split(".")[0] == OPTUNA_VERSION.split(".")[0]


def schema_is_known(connection: Connection) -> bool:
    """Whether the database holds Optuna's tables at revision :data:`SCHEMA` (and Optuna is of that major)."""
    if not same_major_version() or not connection.dialect.has_table(connection, "alembic_version"):
        return False
    return [row[0] for row in connection.execute(select(alembic_version.c.version_num))] == [SCHEMA]


def storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The study's storage, as Optuna uses it (an RDB storage wrapped in its cache)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The id a storage's methods take (``number`` counts within a study; this, across the database)."""
    return trial._trial_id


def rdb_backend(store: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage | None:
    """The RDB storage behind ``store`` (itself, or the one Optuna's cache wraps), else None."""
    store = getattr(store, "_backend", store)
    return store if isinstance(store, optuna.storages.RDBStorage) else None


def rdb_storage(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The study's RDB storage, or None where it has another (in memory, journal) or where Optuna is not
    of the major version this module was written against (then everything is read through Optuna)."""
    if not same_major_version():
        return None
    return rdb_backend(getattr(study, "_storage", None))


def enqueued_params(trial: FrozenTrial) -> dict[str, Any] | None:
    """The parameters ``Study.enqueue_trial`` gave this trial, None for a sampled one."""
    return trial.system_attrs.get(FIXED_PARAMS)


def add_constraint(constraints: dict, key: str, value) -> None:
    """Add a ``constraints`` system attribute to a trial's constraints by name, as
    ``optuna.study._constrained_optimization._get_constraints_from_system_attrs`` does."""
    if key == CONSTRAINTS:
        for i, c in enumerate(value or []):
            constraints.setdefault(str(i), c)
    else:
        constraints[key[len(CONSTRAINTS) + 1:]] = value


def grace_period_s(study: optuna.Study) -> float | None:
    """How long a RUNNING trial may stay silent before Optuna's stale check fails it; None where the storage
    records no heartbeats (then nothing is failed for silence)."""
    rdb = rdb_backend(study._storage)
    if rdb is None or not rdb.heartbeat_interval:
        return None
    return rdb.grace_period or 2 * rdb.heartbeat_interval


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """The RUNNING trials whose last heartbeat is older than the grace period: those
    :func:`optuna.storages.fail_stale_trials` fails (none where the storage records no heartbeats)."""
    rdb = rdb_backend(study._storage)
    if rdb is None or not rdb.heartbeat_interval:
        return []
    return rdb._get_stale_trial_ids(study._study_id)


def never_beaten_trial_ids(study: optuna.Study) -> list[int]:
    """The study's RUNNING trials that never recorded a heartbeat (none where the storage records none):
    Optuna's stale check skips them. No public query answers this."""
    rdb = rdb_backend(study._storage)
    if rdb is None or not rdb.heartbeat_interval:
        return []
    session = rdb.scoped_session()  # this thread's session, as Optuna's own queries use
    try:
        return [row[0] for row in session.execute(select(trials.c.trial_id).where(
            # the state as text: on PostgreSQL the column is Optuna's own enum type, which text does not compare to
            trials.c.study_id == study._study_id, cast(trials.c.state, String) == TrialState.RUNNING.name,
            ~exists().where(trial_heartbeats.c.trial_id == trials.c.trial_id)))]
    finally:
        session.close()


def discard_session(store: optuna.storages.BaseStorage) -> None:
    """Drop this thread's SQLAlchemy session of an RDB storage without closing it cleanly (it may be stuck
    in an interrupted operation), and replace the engine's connection pool. Nothing for other storages."""
    rdb = rdb_backend(store)
    if rdb is None:
        return
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
