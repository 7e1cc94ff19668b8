"""URL resolution and masking for the results DB and the broker.

A URL comes from a flag, else an environment variable, else the embedded
default; flags win. Passwords must never reach a terminal or a log line, so
anything that prints a URL goes through :func:`mask_url`.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy.engine import make_url

from seqsweep.errors import UsageError

DB_ENV = "SEQSWEEP_DB_URL"
BROKER_ENV = "SEQSWEEP_BROKER_URL"

#: Results go to a SQLite file in the working directory, next to the user.
DEFAULT_DB_URL = "sqlite:///seqsweep.db"
#: kombu's SQLAlchemy transport on its own SQLite file: a broker with no server.
DEFAULT_BROKER_URL = "sqla+sqlite:///seqsweep-broker.db"

_SQLITE_PREFIXES = ("sqlite:///", "sqla+sqlite:///")


def resolve_db_url(flag: str | None) -> str:
    """Return the results DB URL from ``flag``, ``$SEQSWEEP_DB_URL`` or the default."""
    return absolutize_sqlite(check_unambiguous(_pick(flag, DB_ENV, DEFAULT_DB_URL), "--db"))


def resolve_broker_url(flag: str | None) -> str:
    """Return the broker URL from ``flag``, ``$SEQSWEEP_BROKER_URL`` or the default."""
    url = _pick(flag, BROKER_ENV, DEFAULT_BROKER_URL)
    return absolutize_sqlite(check_unambiguous(url, "--broker"))


def check_unambiguous(url: str, flag: str) -> str:
    """Refuse a URL with two ``@``: drivers cut its password at the first one and would
    take the rest of the password for a host name, and print it in their errors."""
    if url.partition("://")[2].count("@") > 1:
        raise UsageError(
            f"{flag} {mask_url(url)!r}: the user or password holds an '@'; "
            "percent-encode it as %40 (and '/' as %2F, '#' as %23)"
        )
    return url


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

    SQLAlchemy's own parser (``make_url``) masks what SQLAlchemy would send as the
    password, and kombu's ``maybe_sanitize_url`` what it would (``amqp://u:p@h//``).
    Both parsers stop the password at the first ``@`` and give up on some reserved
    characters (``#``, ``/``, ``?``, ``[``) that a user may still have typed in a
    password, so a URL with more than one ``@``, or one neither parser takes, is cut
    at its last ``@`` instead: everything between ``user:`` and that ``@`` is hidden.
    Hiding too much is safe; printing a piece of a password is not.
    """
    head, sep, rest = url.partition("://")
    userinfo, at, where = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url  # no password anywhere
    user = userinfo.partition(":")[0]
    fallback = f"{head}://{user}:***@{where}"
    if rest.count("@") > 1:
        return fallback
    for masker in (_sqlalchemy_masked, _kombu_masked):
        masked = masker(url)
        if masked is not None and not _leaks(masked, url):
            return masked
    return fallback


def mask_text(text: str, *urls: str) -> str:
    """Return a driver's or broker's error ``text`` safe to show: every URL in it is
    masked, and so is every form of the passwords in ``urls`` (raw, %-decoded, as
    each parser reads it), since drivers may echo a password without its URL."""
    text = _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)
    secrets = sorted({s for url in urls for s in _passwords(url)}, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def _passwords(url: str) -> set[str]:
    """Every string that may be the password of ``url``, by each way of reading it."""
    found: set[str] = set()
    rest = url.partition("://")[2]
    userinfo, at, _ = rest.rpartition("@")
    if at and ":" in userinfo:
        widest = userinfo.partition(":")[2]
        found |= {widest, unquote(widest)}
        first = rest.partition("@")[0]
        if ":" in first:  # what a parser that stops at the first "@" reads
            narrow = first.partition(":")[2]
            found |= {narrow, unquote(narrow)}
    with contextlib.suppress(Exception):
        found.add(make_url(url).password or "")
    with contextlib.suppress(ValueError):
        found.add(urlsplit(url).password or "")
    return {s for s in found if s}


def _leaks(masked: str, url: str) -> bool:
    return any(secret in masked for secret in _passwords(url) if secret != "***")


def _sqlalchemy_masked(url: str) -> str | None:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # ArgumentError, ValueError (a port that is not a number), ...
        return None


def _kombu_masked(url: str) -> str | None:
    # Imported here: kombu (with amqp and ssl under it) is the broker's, and commands
    # that never touch a broker, such as ``report``, should not pay for its import.
    from kombu.utils.url import maybe_sanitize_url

    try:
        masked = maybe_sanitize_url(url, mask="***")
    except Exception:  # kombu raises on a port that is not a number
        return None
    return masked if isinstance(masked, str) else None
