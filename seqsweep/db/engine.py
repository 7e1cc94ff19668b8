"""Engines for the results DB, tuned for several writer processes.

SQLite gets WAL (readers never block the writer), a 30 s busy timeout, and
``BEGIN IMMEDIATE`` for every transaction, so a read-then-write such as a
trial claim takes the write lock up front instead of failing halfway with
"database is locked". PostgreSQL gets a connect timeout so an unreachable
server is reported in seconds. Engines must be created after a fork, never
inherited across one: see :func:`seqsweep.db.store.ResultStore.for_process`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from seqsweep.errors import UsageError
from seqsweep.urls import mask_text, mask_url

SQLITE_BUSY_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 5
_URL_HINT = "use e.g. sqlite:///seqsweep.db or postgresql+psycopg://USER@HOST/DB"


def parse_db_url(url: str, flag: str = "--db") -> URL:
    """Parse a results DB URL (or another SQL URL given as ``flag``); reject what seqsweep
    cannot store into."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: e.g. a non-numeric port
        raise UsageError(f"{flag} {mask_url(url)!r}: not a database URL; {_URL_HINT}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        # psycopg 3 is the driver seqsweep installs; plain postgresql:// means psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and (parsed.username or parsed.password or parsed.host):
        raise UsageError(
            f"{flag} {mask_url(url)!r}: a SQLite URL names a file, with no user, password or "
            "host; use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    if backend not in ("sqlite", "postgresql"):
        raise UsageError(
            f"{flag} {mask_url(url)!r}: backend {backend!r} is not supported; {_URL_HINT}"
        )
    return parsed


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` with the settings described in the module docstring."""
    parsed = parse_db_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
            _tune_sqlite(engine)
            return engine
        connect_args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S}
        return create_engine(parsed, connect_args=connect_args, pool_pre_ping=True)
    except ArgumentError as exc:  # e.g. an option SQLAlchemy refuses
        raise UsageError(
            f"--db {mask_url(url)!r}: {mask_text(str(exc).splitlines()[0], url)}; " + _URL_HINT
        ) from None
    except (NoSuchModuleError, ImportError) as exc:
        raise UsageError(
            f"--db {mask_url(url)!r}: driver not installed ({mask_text(str(exc), url)}); "
            + _URL_HINT
        ) from None


def load_pg_driver_before_keras() -> None:
    """Import psycopg now, before anything imports TensorFlow.

    TensorFlow ships BoringSSL and loads it with global symbols; if it is loaded
    first, libpq's first TLS handshake calls into it and the process aborts with
    ``free(): invalid pointer`` (tensorflow/tensorflow#93969). Loading psycopg
    first binds libpq to its own OpenSSL. ``models`` calls this before it
    imports Keras; workers are safe anyway, since their store loads psycopg
    before a trial imports Keras.
    """
    with contextlib.suppress(ImportError):  # no psycopg: no PostgreSQL either
        import psycopg  # noqa: F401


def _use_wal(cursor: Any) -> None:
    """Switch to WAL, retrying a lock conflict for up to the busy timeout.

    Changing the journal mode needs an exclusive lock, and SQLite can report
    "database is locked" at once instead of calling the busy handler, e.g. while
    another process closes the file's last connection (checkpointing and removing
    its WAL). Two launches starting together on one new results DB met this once
    in CI.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
