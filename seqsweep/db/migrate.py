"""Schema migrations with Alembic, applied automatically when a store opens.

Several workers may open a fresh DB at the same moment, so the upgrade runs
under a lock: PostgreSQL's advisory lock, or SQLite's write lock, which
``BEGIN IMMEDIATE`` takes for the whole transaction.

Every command opens a store, and nearly always the DB is already current. Alembic
(with Mako and Pygments under it) and its reading of the migration scripts cost a
read-only command such as ``report`` about a tenth of a second, so the version is
first read with one plain query and Alembic is imported only when it must run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from seqsweep.errors import UsageError
from seqsweep.settings import short_value

if TYPE_CHECKING:
    from alembic.config import Config

SCRIPT_LOCATION = "seqsweep.db:migrations"
#: The newest revision in ``migrations/versions``; a test holds it to Alembic's own head.
HEAD = "0004"
#: Alembic's default table that holds a DB's revision.
_VERSION_TABLE = "alembic_version"
#: Arbitrary constant naming seqsweep's advisory lock on PostgreSQL.
_PG_LOCK_KEY = 0x5E05EE9


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """Return the newest schema revision in the migration scripts, as Alembic reads them."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "seqsweep ships at least one migration"
    return head


def current_revision(connection: Connection) -> str | None:
    """Return the revision the DB is at, or None for an empty DB."""
    if not inspect(connection).has_table(_VERSION_TABLE):
        return None
    return connection.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalar()


def upgrade(engine: Engine) -> bool:
    """Bring the DB to the newest revision; return True if anything was applied."""
    with engine.connect() as connection:
        at = current_revision(connection)
    if at == HEAD:
        return False
    _refuse_newer(at)
    from alembic import command

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        # Another process may have upgraded while we waited for the lock.
        if current_revision(connection) == HEAD:
            return False
        command.upgrade(_config(connection), "head")
    return True


def _refuse_newer(revision: str | None) -> None:
    if revision is None:
        return
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_config())
    known = {rev.revision for rev in script.walk_revisions()}
    if revision not in known:
        raise UsageError(  # the user's --db and installed version do not match: exit 2
            f"results DB schema is at revision {short_value(revision)}, newer than this seqsweep "
            "knows; upgrade seqsweep (pip install -U seqsweep) or use another --db"
        )
