"""The worker's retry policy for database actions: back off while the database is unreachable, give up
with one line after ``patience_s``, and tell an interrupt that a library turned into a storage error
from a real one."""
from __future__ import annotations

import functools
import time
from typing import Callable

import optuna
from sqlalchemy.exc import SQLAlchemyError

from .storage import StorageError, database_answers, error_reason, is_sqlite, redact

STORAGE_ERRORS = (SQLAlchemyError, optuna.exceptions.StorageInternalError)


class StorageLost(StorageError):
    """The database did not answer for the worker's whole patience."""


class StorageFailed(StorageError):
    """The database answers, but an action on it kept failing."""


def was_interrupted(error: BaseException | None) -> bool:
    """Whether a KeyboardInterrupt is behind this error: SQLAlchemy's clean-up of an interrupted call can
    raise its own error in place of the interrupt (e.g. IllegalStateChangeError from closing the session)."""
    seen, pending = set(), [error]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        pending += [error.__cause__, error.__context__]
    return False


class Retry:
    """Run storage actions, retrying with exponential back-off while the database is unreachable.

    After a failed action, ``recover`` (given per call) cleans up this process's side, then the database
    is probed on a new connection (``probe``):

    - no answer: an outage, retried with back-off for ``patience_s``, then :class:`StorageLost`;
    - it answers: the failure is this process's (a session an interrupt left unusable) or the action's
      own. A local SQLite file is then tried ``local_attempts`` times in all, and :class:`StorageFailed`
      gives the reason; a server is retried for ``patience_s`` (a fail-over can answer before it takes writes).

    An interrupt that a library turned into a storage error is raised as KeyboardInterrupt again.
    """

    def __init__(self, url: str, patience_s: float, on_retry: Callable[[str], None] = lambda s: None,
                 sleep: Callable[[float], None] = time.sleep, probe: Callable[[], bool] | None = None,
                 local_attempts: int = 3):
        self.url, self.patience_s, self.on_retry, self.sleep = url, patience_s, on_retry, sleep
        self.probe = probe if probe is not None else functools.partial(database_answers, url)
        self.local_attempts = local_attempts

    def within(self, patience_s: float) -> "Retry":
        """The same retries with a shorter patience."""
        return Retry(self.url, min(self.patience_s, patience_s), self.on_retry, self.sleep, self.probe,
                     self.local_attempts)

    def __call__(self, action: Callable, what: str, recover: Callable[[], None] = lambda: None):
        waited, delay, attempts = 0.0, 0.5, 0
        while True:
            try:
                return action()
            except Exception as error:  # noqa: BLE001 - storage errors and interrupts in disguise; others go on
                if was_interrupted(error):
                    interrupted, reason = True, ""
                elif isinstance(error, STORAGE_ERRORS):
                    interrupted, reason = False, error_reason(error)
                else:
                    raise
            # out of the except block: the error's traceback (and any cursor it holds) can be collected now
            if interrupted:
                raise KeyboardInterrupt
            attempts += 1
            recover()
            answers = self.probe()
            if answers and is_sqlite(self.url):
                if attempts >= self.local_attempts:
                    raise StorageFailed(f"database {redact(self.url)} failed while {what} ({attempts} attempts: "
                                        f"{reason}); finished trials are stored, run again to resume")
                self.on_retry(f"database error while {what} ({reason}); retrying")
                self.sleep(0.1)
                continue
            if waited >= self.patience_s:
                if answers:
                    raise StorageFailed(f"database {redact(self.url)} failed while {what} (retried for {waited:.0f} s: "
                                        f"{reason}); finished trials are stored, run again to resume")
                raise StorageLost(f"lost the database {redact(self.url)} while {what} (retried for {waited:.0f} s: "
                                  f"{reason}); finished trials are stored, run again to resume")
            if answers:
                self.on_retry(f"database error while {what} ({reason}); retrying in {delay:.1f} s")
            else:
                self.on_retry(f"database unreachable while {what}; retrying in {delay:.1f} s")
            self.sleep(delay)
            waited += delay
            delay = min(delay * 2, 30.0)
