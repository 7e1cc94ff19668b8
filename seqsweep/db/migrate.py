"""Schema migrations with Alembic, applied automatically when a store opens.

Several workers may open a fresh DB at the same moment, so the upgrade runs
under a lock: PostgreSQL's advisory lock, or SQLite's write lock, which
``BEGIN IMMEDIATE`` takes for the whole transaction.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from seqsweep.errors import UsageError
from seqsweep.settings import short_value

SCRIPT_LOCATION = "seqsweep.db:migrations"
#: Arbitrary constant naming seqsweep's advisory lock on PostgreSQL.
_PG_LOCK_KEY = 0x5E05EE9


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """Return the newest schema revision this version of seqsweep knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "seqsweep ships at least one migration"
    return head


def current_revision(connection: Connection) -> str | None:
    """Return the revision the DB is at, or None for an empty DB."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> bool:
    """Bring the DB to the newest revision; return True if anything was applied."""
    head = head_revision()
    with engine.connect() as connection:
        at = current_revision(connection)
    if at == head:
        return False
    _refuse_newer(at)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        # Another process may have upgraded while we waited for the lock.
        if current_revision(connection) == head:
            return False
        command.upgrade(_config(connection), "head")
    return True


def _refuse_newer(revision: str | None) -> None:
    if revision is None:
        return
    script = ScriptDirectory.from_config(_config())
    known = {rev.revision for rev in script.walk_revisions()}
    if revision not in known:
        raise UsageError(  # the user's --db and installed version do not match: exit 2
            f"results DB schema is at revision {short_value(revision)}, newer than this seqsweep "
            "knows; upgrade seqsweep (pip install -U seqsweep) or use another --db"
        )
