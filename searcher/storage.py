"""Optuna RDB storage and artifact store, with errors a user can act on."""
from __future__ import annotations

from pathlib import Path

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError


class StorageError(RuntimeError):
    """The study database cannot be opened (bad URL, unreachable server, missing driver)."""


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1]


def open_storage(url: str) -> optuna.storages.RDBStorage:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(f"storage URL {url!r} is not an SQLAlchemy URL (e.g. sqlite:///edgetune.db, postgresql://user@host/db)") from None
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url, heartbeat_interval=None)
    except (SQLAlchemyError, ImportError, ModuleNotFoundError, ValueError) as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise StorageError(f"cannot open storage {redact(url)}: {reason}") from None


def artifact_store(path: str) -> optuna.artifacts.FileSystemArtifactStore:
    Path(path).mkdir(parents=True, exist_ok=True)
    return optuna.artifacts.FileSystemArtifactStore(path)
