"""Read a stored study's trials in bulk: only the fields the report and the front show.

Written against **Optuna 5.0.0** (the project pins ``optuna>=5,<6``) and checked against it by
``tests/test_bulk.py``, which builds a study through the public API and compares every field read
here with ``study.get_trials()``.

Why: ``study.get_trials()`` on an RDB storage loads every trial as an ORM object with all its
parameters, values, user and system attributes and intermediate values, then builds a
``FrozenTrial`` of each; on 10,000 trials that is seconds, most of ``tune report``. Here a few
read-only SQLAlchemy Core queries (no dialect-specific SQL: the same for SQLite and PostgreSQL)
read the trial number and state, the objective values, the parameters, the constraints and only
the user attributes asked for, straight from Optuna's tables.

What this relies on beyond Optuna's public API (Optuna's tables and how they encode trials, the storage
behind a study) is declared in :mod:`searcher.optuna_internals`, which ``tests/test_optuna_internals.py``
checks against the installed Optuna. A study in any other storage (in memory, journal file) is read
through ``study.get_trials()``.

:class:`StoredStudy` goes one step further for the commands that only read (``tune report``,
``tune pareto``): the study itself (name, directions, metric names, user attributes) from the
``studies``, ``study_directions``, ``study_user_attributes`` and ``study_system_attributes`` tables
(metric names as the system attribute ``study:metric_names``), on a plain SQLAlchemy engine, when
the schema is the one Optuna 5.0 creates (``alembic_version`` = ``optuna_internals.SCHEMA``). Opening an
``RDBStorage`` imports alembic and Optuna's ORM and checks the schema, 0.45-0.5 s of a 3 s report
of 10,000 trials; any other schema is opened through Optuna, which says what to do about it.
"""
from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import or_, select
from sqlalchemy.engine import Engine

# Optuna's tables as the seam declares them, under short names
from .optuna_internals import (CONSTRAINTS, INFINITE, METRIC_NAMES, add_constraint, rdb_storage, schema_is_known,
                               trial_id)
from .optuna_internals import (studies as _studies, study_directions as _directions,
                               study_system_attributes as _study_system_attrs, study_user_attributes as _study_user_attrs,
                               trial_params as _params, trial_system_attributes as _system_attrs,
                               trial_user_attributes as _user_attrs, trial_values as _values, trials as _trials)

#: bound parameters per ``IN (...)`` list: below SQLite's oldest limit (999)
CHUNK = 900


@dataclass(frozen=True)
class StoredStudy:
    """A study in an RDB storage as the commands that only read it see it: the parts of
    ``optuna.Study`` they use, under the same names, and its trials through :func:`read_trials`."""

    study_name: str
    study_id: int
    engine: Engine
    directions: list[StudyDirection]
    metric_names: list[str] | None
    user_attrs: dict

    @property
    def direction(self) -> StudyDirection:
        if len(self.directions) > 1:
            raise RuntimeError("A single direction cannot be retrieved from a multi-objective study.")
        return self.directions[0]


def stored_study_names(engine: Engine) -> list[str] | None:
    """The names of the studies in the database, or None where its schema is not ``optuna_internals.SCHEMA`` (or it has
    no Optuna tables): then only Optuna can open it."""
    with engine.connect() as connection:
        if not schema_is_known(connection):
            return None
        return [row[0] for row in connection.execute(select(_studies.c.study_name).order_by(_studies.c.study_id))]


def stored_study(engine: Engine, name: str) -> StoredStudy:
    """The study ``name`` (which :func:`stored_study_names` listed), read-only."""
    with engine.connect() as connection:
        study_id = connection.execute(select(_studies.c.study_id).where(_studies.c.study_name == name)).scalar_one()
        directions = [StudyDirection[row[0]] for row in connection.execute(
            select(_directions.c.direction).where(_directions.c.study_id == study_id).order_by(_directions.c.objective))]
        user_attrs = {key: decode(value) for key, value in connection.execute(
            select(_study_user_attrs.c.key, _study_user_attrs.c.value_json)
            .where(_study_user_attrs.c.study_id == study_id).order_by(_study_user_attrs.c.key))}
        names = connection.execute(select(_study_system_attrs.c.value_json).where(
            _study_system_attrs.c.study_id == study_id, _study_system_attrs.c.key == METRIC_NAMES)).scalar()
    return StoredStudy(name, study_id, engine, directions, decode(names) if names else None, user_attrs)


@dataclass
class StoredTrial:
    """The fields of a ``FrozenTrial`` the report and the front read, under the same names."""

    number: int
    state: TrialState
    values: list[float] | None
    params: dict = field(default_factory=dict)
    distributions: dict = field(default_factory=dict)
    user_attrs: dict = field(default_factory=dict)  # only the keys asked for, unless all_user_attrs
    constraints: dict = field(default_factory=dict)
    trial_id: int | None = None
    all_user_attrs: bool = True

    @property
    def value(self) -> float | None:  # FrozenTrial.value of a single-objective trial
        if self.values is None:
            return None
        if len(self.values) != 1:
            raise RuntimeError("This attribute is not available during multi-objective optimization.")
        return self.values[0]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (then as before): reading 10,000 trials makes some 10^5
    objects, none of them cyclic, and the collections they trigger cost a third of the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _rdb_source(study) -> tuple[Engine, int] | None:
    """The engine and the study's id where its trials can be read by SQL here, else None."""
    if isinstance(study, StoredStudy):
        return study.engine, study.study_id
    storage = rdb_storage(study)
    return (storage.engine, storage.get_study_id_from_name(study.study_name)) if storage is not None else None


def read_trials(study: optuna.Study, user_attrs: Collection[str] | None = None) -> list[StoredTrial]:
    """Every trial of the study, by number: number, state, values, parameters (with their
    distributions), constraints, and the user attributes named in ``user_attrs`` (all of them when
    None; a storage read through ``study.get_trials()`` keeps all of them anyway, ``all_user_attrs``
    says which). Equal, field by field, to what ``study.get_trials()`` gives; the user attributes in key
    order (:func:`_user_attrs_by_trial`)."""
    source = _rdb_source(study)
    if source is None:
        return [_from_frozen(t) for t in study.get_trials(deepcopy=False)]
    with gc_paused():
        return _read_rdb(*source, user_attrs)


def _read_rdb(engine: Engine, study_id: int, user_attrs: Collection[str] | None) -> list[StoredTrial]:
    of_study = select(_trials.c.trial_id).where(_trials.c.study_id == study_id).scalar_subquery()
    with engine.connect() as connection:
        def rows(query):  # fetchall: row by row through SQLAlchemy costs twice as much
            return connection.execute(query).fetchall()

        records = {trial_id: StoredTrial(number, TrialState[state], None, trial_id=trial_id,
                                         all_user_attrs=user_attrs is None)
                   for trial_id, number, state in rows(select(_trials.c.trial_id, _trials.c.number, _trials.c.state)
                                                       .where(_trials.c.study_id == study_id))}
        # The queries are not one snapshot: rows of a trial a worker added since the first are left out. A
        # trial read as complete changes no more (Optuna writes its values and state together).
        values: dict[int, dict[int, float]] = {}
        for trial_id, objective, value, kind in rows(
                select(_values.c.trial_id, _values.c.objective, _values.c.value, _values.c.value_type)
                .where(_values.c.trial_id.in_(of_study))):
            values.setdefault(trial_id, {})[objective] = INFINITE.get(kind, value)
        for trial_id, by_objective in values.items():
            if trial_id in records:
                records[trial_id].values = [by_objective[i] for i in sorted(by_objective)]
        distributions: dict[str, optuna.distributions.BaseDistribution] = {}  # one decode per distinct JSON
        for trial_id, name, value, encoded in rows(
                select(_params.c.trial_id, _params.c.param_name, _params.c.param_value, _params.c.distribution_json)
                .where(_params.c.trial_id.in_(of_study)).order_by(_params.c.param_id)):
            record = records.get(trial_id)
            if record is None:
                continue
            distribution = distributions.get(encoded)
            if distribution is None:
                distribution = distributions[encoded] = optuna.distributions.json_to_distribution(encoded)
            record.params[name] = distribution.to_external_repr(value)
            record.distributions[name] = distribution
        if user_attrs is None or user_attrs:
            query = select(*_USER_ATTR_COLUMNS).where(_user_attrs.c.trial_id.in_(of_study))
            if user_attrs is not None:
                query = query.where(_user_attrs.c.key.in_(sorted(user_attrs)))
            for trial_id, attrs in _user_attrs_by_trial(rows(query)).items():
                if trial_id in records:
                    records[trial_id].user_attrs = attrs
        for trial_id, key, encoded in rows(
                select(_system_attrs.c.trial_id, _system_attrs.c.key, _system_attrs.c.value_json)
                .where(_system_attrs.c.trial_id.in_(of_study),
                       or_(_system_attrs.c.key == CONSTRAINTS, _system_attrs.c.key.startswith(f"{CONSTRAINTS}:")))
                .order_by(_system_attrs.c.trial_system_attribute_id)):
            if trial_id in records:
                add_constraint(records[trial_id].constraints, key, decode(encoded))
    return sorted(records.values(), key=lambda r: r.number)


def with_all_user_attrs(study: optuna.Study, trials: Iterable) -> list:
    """The same trials, each with every user attribute (one query per 900 of those read with only some)."""
    trials = list(trials)
    partial = {t.trial_id: t for t in trials if isinstance(t, StoredTrial) and not t.all_user_attrs}
    if not partial:
        return trials
    with gc_paused(), _rdb_source(study)[0].connect() as connection:
        found = []
        for chunk in _chunks(list(partial)):
            found += connection.execute(select(*_USER_ATTR_COLUMNS).where(_user_attrs.c.trial_id.in_(chunk))).fetchall()
        attrs = _user_attrs_by_trial(found)
        full = {trial_id: replace(t, user_attrs=attrs.get(trial_id, {}), all_user_attrs=True)
                for trial_id, t in partial.items()}
    return [full.get(t.trial_id, t) if isinstance(t, StoredTrial) else t for t in trials]


_USER_ATTR_COLUMNS = (_user_attrs.c.trial_id, _user_attrs.c.key, _user_attrs.c.value_json)


def _user_attrs_by_trial(found) -> dict[int, dict]:
    """Rows of ``_USER_ATTR_COLUMNS`` as each trial's attributes, decoded, in key order: Optuna promises no
    order (key order on SQLite, through the (trial_id, key) index; on PostgreSQL whatever the query plan
    gives), so the one order every storage can give is chosen here."""
    pairs: dict[int, list] = {}
    for trial_id, key, encoded in found:
        pairs.setdefault(trial_id, []).append((key, encoded))
    return {trial_id: {key: decode(encoded) for key, encoded in sorted(rows)} for trial_id, rows in pairs.items()}


_NUMBER_START = frozenset("-0123456789")


def decode(text: str):
    """``json.loads(text)``, with a shortcut for the plain numbers most attributes are (a third of the
    read otherwise): Optuna writes them with ``json.dumps``, whose floats have a ``.`` or an exponent."""
    if text and text[0] in _NUMBER_START:
        try:
            return float(text) if "." in text or "e" in text or "E" in text else int(text)
        except ValueError:  # -Infinity, or not a number after all
            pass
    return json.loads(text)


def _chunks(items: list) -> Iterator[list]:
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


def _from_frozen(trial: FrozenTrial) -> StoredTrial:
    # already in memory: every user attribute is kept (filtering them would save nothing)
    return StoredTrial(trial.number, trial.state, trial.values, trial.params, trial.distributions, trial.user_attrs,
                       trial.constraints, trial_id(trial))
