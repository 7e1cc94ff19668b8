"""URL resolution and masking for the results DB and the broker.

A URL comes from a flag, else an environment variable, else the embedded
default; flags win. Passwords must never reach a terminal or a log line, so
anything that prints a URL goes through :func:`mask_url`.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DB_ENV = "SEQSWEEP_DB_URL"
BROKER_ENV = "SEQSWEEP_BROKER_URL"

#: Results go to a SQLite file in the working directory, next to the user.
DEFAULT_DB_URL = "sqlite:///seqsweep.db"
#: kombu's SQLAlchemy transport on its own SQLite file: a broker with no server.
DEFAULT_BROKER_URL = "sqla+sqlite:///seqsweep-broker.db"

_SQLITE_PREFIXES = ("sqlite:///", "sqla+sqlite:///")


def resolve_db_url(flag: str | None) -> str:
    """Return the results DB URL from ``flag``, ``$SEQSWEEP_DB_URL`` or the default."""
    return absolutize_sqlite(_pick(flag, DB_ENV, DEFAULT_DB_URL))


def resolve_broker_url(flag: str | None) -> str:
    """Return the broker URL from ``flag``, ``$SEQSWEEP_BROKER_URL`` or the default."""
    return absolutize_sqlite(_pick(flag, BROKER_ENV, DEFAULT_BROKER_URL))


def _pick(flag: str | None, env: str, default: str) -> str:
    if flag is not None and flag.strip():
        return flag.strip()
    value = os.environ.get(env, "").strip()
    return value if value else default


def absolutize_sqlite(url: str) -> str:
    """Make a relative SQLite path absolute.

    Worker processes may run in another directory than the command that
    resolved the URL; an absolute path keeps them on the same file.
    """
    for prefix in _SQLITE_PREFIXES:
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            path, sep, query = rest.partition("?")
            if path in ("", ":memory:") or path.startswith("/"):
                return url
            return prefix + str(Path(path).resolve()) + sep + query
    return url


def is_sqlite(url: str) -> bool:
    """Tell whether ``url`` names a SQLite database (results DB or sqla broker)."""
    return url.startswith(("sqlite:", "sqla+sqlite:"))


def sqlite_path(url: str) -> Path | None:
    """Return the file behind a SQLite URL, or None for memory and other databases."""
    for prefix in _SQLITE_PREFIXES:
        if url.startswith(prefix):
            path = url[len(prefix) :].partition("?")[0]
            return None if path in ("", ":memory:") else Path(path)
    return None


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``.

    Works for SQLAlchemy URLs (``postgresql+psycopg://u:p@h/db``) and broker
    URLs (``redis://:p@h:6379/0``, ``rediss://u:p@h``). A URL that cannot be
    parsed is masked whole rather than risk printing a secret.
    """
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        netloc = f"{user}:***@{host}{port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<unparsable URL hidden>"
