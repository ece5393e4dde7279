"""Mutual exclusion between the workers of one study.

- ``critical(purpose)``: a short section one worker at a time (the baseline bootstrap, claiming the
  next trial). PostgreSQL: an advisory lock; MySQL: ``GET_LOCK``. SQLite has one worker, so none.
- ``exclusive_worker()``: SQLite only: the database file is held by one worker for its lifetime;
  a second one is refused with a pointer to PostgreSQL.
"""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from .storage import StorageError, sqlalchemy_url, is_sqlite, redact

SEVERAL_WORKERS_NEED_A_SERVER = ("SQLite takes one worker; for several, store the study in PostgreSQL "
                                 "(--storage postgresql://user@host/db or $EDGETUNE_STORAGE)")


class StudyLocks:
    def __init__(self, url: str, study_name: str):
        self.url = url
        self.study_name = study_name
        self.dialect = make_url(url).get_backend_name()
        self._server = not is_sqlite(url)
        self._engine = None  # created on first use: a bad URL is reported by open_storage first

    def _key(self, purpose: str) -> int:
        digest = hashlib.sha256(f"edgetune:{self.study_name}:{purpose}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)  # PostgreSQL advisory keys are bigint

    @contextlib.contextmanager
    def critical(self, purpose: str):
        if not self._server:
            yield
            return
        if self._engine is None:
            self._engine = create_engine(sqlalchemy_url(self.url), poolclass=NullPool)
        with self._engine.connect() as connection:
            if self.dialect == "postgresql":
                key = self._key(purpose)
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            elif self.dialect in ("mysql", "mariadb"):
                name = f"edgetune:{self._key(purpose):x}"
                connection.execute(text("SELECT GET_LOCK(:name, -1)"), {"name": name})
                try:
                    yield
                finally:
                    connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})
            else:
                raise StorageError(f"storage {redact(self.url)}: several workers need PostgreSQL or MySQL, "
                                   f"not {self.dialect}")

    @contextlib.contextmanager
    def exclusive_worker(self):
        """Hold the SQLite file for this worker's lifetime (no-op on a database server)."""
        database = None if self._server else make_url(self.url).database
        if not database or database == ":memory:":
            yield
            return
        lock_path = Path(database).expanduser().with_name(Path(database).name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)  # as open_storage does: a new folder is fine
        try:
            held = FileLock(lock_path, timeout=0).acquire()  # one try: a second worker is refused, not queued
        except Timeout:
            raise StorageError(f"{database} is in use by another worker; {SEVERAL_WORKERS_NEED_A_SERVER}") from None
        with held:
            yield
