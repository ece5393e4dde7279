"""Optuna RDB storage and artifact store, with errors a user can act on.

Credentials come from the URL or from ``$EDGETUNE_STORAGE``; every message shows the URL with its
password hidden (:func:`redact`).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import optuna
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, ProgrammingError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from edgetune.objectives.errors import first_line

#: the storage URL when no --storage is given (keeps passwords out of command lines and shell history)
STORAGE_ENV = "EDGETUNE_STORAGE"
DEFAULT_STORAGE = "sqlite:///edgetune.db"


class StorageError(RuntimeError):
    """The study database cannot be opened (bad URL, unreachable server, missing driver)."""


@dataclass(frozen=True)
class Heartbeat:
    """Optuna heartbeats: a trial whose worker is silent for ``grace_period`` s is failed and re-queued."""

    interval: int = 10
    grace_period: int = 60
    max_retry: int = 2


def default_storage() -> str:
    return os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1]


def is_sqlite(url: str) -> bool:
    return url.strip().lower().startswith("sqlite")


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` means psycopg2 to SQLAlchemy; use psycopg 3 (our dependency) when psycopg2 is absent.
    ``mysql://`` means mysqlclient; use PyMySQL (the ``mysql`` extra) when only it is there."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg2") is None:
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if parsed.drivername == "mysql" and importlib.util.find_spec("MySQLdb") is None \
            and importlib.util.find_spec("pymysql") is not None:
        return parsed.set(drivername="mysql+pymysql").render_as_string(hide_password=False)
    return url


def _missing_driver(url: str) -> str:
    """Why no driver was found for ``url``, and what to install."""
    parsed = make_url(sqlalchemy_url(url))
    install = " (pip install 'edgetune[mysql]')" if parsed.get_backend_name() == "mysql" else ""
    return f"no Python driver for {parsed.drivername} is installed{install}"


def open_storage(url: str, heartbeat: Heartbeat | None = None) -> optuna.storages.RDBStorage:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(f"storage URL {url!r} is not an SQLAlchemy URL (e.g. sqlite:///edgetune.db, postgresql://user@host/db)") from None
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    beats = {}
    if heartbeat is not None:
        beats = dict(heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace_period,
                     heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(heartbeat.max_retry))
    # pre-ping: a connection the server dropped (restart, failover) is replaced instead of failing a write
    engine = {} if is_sqlite(url) else {"pool_pre_ping": True}
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(sqlalchemy_url(url), engine_kwargs=engine, **beats)
        except (IntegrityError, ProgrammingError) as error:
            # Workers opening a new database at once race to create Optuna's tables; the loser retries.
            if attempt == 2:
                raise StorageError(f"cannot open storage {redact(url)}: {error_reason(error)}") from None
            time.sleep(0.5 + attempt)
        except (ImportError, ModuleNotFoundError):  # Optuna's own words: "Please install appropriate one."
            raise StorageError(f"cannot open storage {redact(url)}: {_missing_driver(url)}") from None
        except (SQLAlchemyError, ValueError) as error:
            raise StorageError(f"cannot open storage {redact(url)}: {error_reason(error)}") from None


def database_answers(url: str, timeout_s: float = 5.0) -> bool:
    """Whether the database answers a query on a new connection now (never raises).

    Tells an outage (no answer: worth waiting for) from a failure of this process's own connection or
    session, or of the statement itself (the database answers: waiting changes nothing). An SQLite file
    that is gone does not answer (it is not created again).
    """
    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            database = parsed.database
            if database and database != ":memory:" and not database.startswith("file:") \
                    and not Path(database).expanduser().is_file():
                return False
            connect_args, query = {"timeout": timeout_s}, "SELECT count(*) FROM sqlite_master"  # reads the file
        else:
            connect_args, query = {}, "SELECT 1"
            if backend in ("postgresql", "mysql", "mariadb"):
                connect_args = {"connect_timeout": max(1, int(timeout_s))}
        engine = create_engine(sqlalchemy_url(url), poolclass=NullPool, connect_args=connect_args)
        try:
            with engine.connect() as connection:
                connection.execute(text(query))
        finally:
            engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure to answer is "no answer"
        return False


def error_reason(error: Exception) -> str:
    """The first line of a database error's own message (the driver's, where SQLAlchemy wraps one)."""
    return first_line(getattr(error, "orig", None) or error)


class AtomicArtifactStore(optuna.artifacts.FileSystemArtifactStore):
    """Optuna's file-system store, but a write is a temporary file renamed into place:
    a worker killed mid-upload never leaves half an artifact under a valid id."""

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        target = self._get_filepath(artifact_id)
        partial = target.with_name(f".{target.name}.partial")
        with open(partial, "wb") as f:
            shutil.copyfileobj(content_body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, target)


def artifact_store(path: str) -> optuna.artifacts.FileSystemArtifactStore:
    Path(path).mkdir(parents=True, exist_ok=True)
    return AtomicArtifactStore(path)


def load_study(storage_url: str, name: str | None) -> optuna.Study:
    """An existing study; ``name`` may be omitted when the storage holds exactly one. Reads no trial:
    the commands that only read a study (pareto, report, export) need nothing heavier than this module.
    Never creates a database: an SQLite file that is not there is an error."""
    require_database(storage_url)
    storage = open_storage(storage_url)
    names = optuna.get_all_study_names(storage)  # summaries would read every trial
    return optuna.load_study(study_name=_chosen(names, name, storage_url), storage=storage)


def require_database(url: str) -> None:
    """For a command that only reads: an SQLite file that is not there is an error (opening would create it)."""
    missing = missing_sqlite_file(url)
    if missing is not None:
        raise StorageError(f"no study database at {missing}; name the study's database with --storage sqlite:///PATH "
                           f"(or ${STORAGE_ENV}), or run `tune start` first")


def _sqlite_file(url: str) -> Path | None:
    """The file an SQLite URL names, absolute (None: a bad URL, another database, in memory, a ``file:`` URI)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().absolute()


def missing_sqlite_file(url: str) -> Path | None:
    """The file an SQLite URL names when it does not exist (None: it exists, or the URL is not such a file)."""
    path = _sqlite_file(url)
    return None if path is None or path.is_file() else path


def sqlite_folder(url: str) -> Path | None:
    """The folder of an SQLite URL's database file (None: not an SQLite file)."""
    path = _sqlite_file(url)
    return None if path is None else path.parent


def read_study(storage_url: str, name: str | None):
    """A study for a command that only reads it (``tune report``, ``tune pareto``): a read-only
    :class:`searcher.bulk.StoredStudy` where the database has the schema that module reads, else
    :func:`load_study`. The same study and the same errors either way."""
    from . import bulk

    engine = _engine_to_read(storage_url)
    if engine is not None:
        try:
            names = bulk.stored_study_names(engine)
            if names is not None:
                return bulk.stored_study(engine, _chosen(names, name, storage_url))
        except SQLAlchemyError:
            pass  # Optuna's own open says what is wrong
    return load_study(storage_url, name)


def _engine_to_read(url: str):
    """An engine on an existing database (None: a bad URL, or an SQLite file that does not exist, which
    reading must not create): Optuna's open, which follows, reports those."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:" or database.startswith("file:") or not Path(database).expanduser().is_file():
            return None
    try:
        return create_engine(sqlalchemy_url(url))
    except (SQLAlchemyError, ImportError):
        return None


def _chosen(names: list[str], name: str | None, url: str) -> str:
    if name is None:
        if not names:
            raise StorageError(f"{redact(url)} holds no study yet; run `tune start` first")
        if len(names) != 1:
            raise StorageError(f"{redact(url)} holds {len(names)} studies ({', '.join(names)}); "
                               "name one (the command's STUDY argument)")
        return names[0]
    if name not in names:
        raise StorageError(f"no study '{name}' in the storage; studies: {', '.join(names) or 'none'}")
    return name
