"""Small dialect-neutral SQL helpers shared by the store and the trial lifecycle."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection


def utcnow() -> datetime:
    return datetime.now(UTC)


def db_now(conn: Connection) -> Any:
    """The clock that leases are written and judged by.

    On PostgreSQL that is the server's: workers on several machines share it,
    so their clock skew cannot expire a live lease. SQLite is one machine.
    """
    if conn.dialect.name == "postgresql":
        return func.now()
    return utcnow()


def aware(stamp: datetime) -> datetime:
    """Attach UTC to a naive datetime: SQLite hands them back, written in UTC."""
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def insert_for(conn: Connection, table: Any) -> Any:
    """An INSERT that supports ``on_conflict_do_*`` on this connection's dialect."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)
