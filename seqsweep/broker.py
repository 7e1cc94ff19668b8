"""Celery apps on a broker URL, and the checks that make a bad URL fail fast.

The scheduler and the workers build their apps here so both always agree on
serializer, queue and transport options. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from queue import Empty
from typing import Any

from celery import Celery
from celery.worker import state as worker_state
from kombu.transport import sqlalchemy as kombu_sqlalchemy
from sqlalchemy import create_engine, insert

from seqsweep.errors import ConnectionFailedError, UsageError
from seqsweep.files import create_private
from seqsweep.messages import QUEUE
from seqsweep.settings import (
    MAX_MEMORY_PER_CHILD_KIB,
    MAX_TASKS_PER_CHILD,
    VISIBILITY_ENV,
    VISIBILITY_TIMEOUT_S,
    env_seconds,
)
from seqsweep.urls import is_sqlite, mask_text, mask_url, sqlite_path

BROKER_CONNECT_TIMEOUT_S = 5
#: How often an idle worker on the embedded broker looks for its next message. kombu's
#: SQL transport polls (once a second by default) and sleeps between polls, so a worker
#: that has just acked a trial waits for the next poll; but polling fast costs an idle
#: worker node a share of a core (the README's *Overhead* has both measured) ...
SQL_BROKER_POLL_S = 0.05
#: ... so it polls this fast only while busy: while a message it took is unacked (a
#: check that reads no SQL), and for SQL_BROKER_BUSY_S after it took one. A pack's
#: partner messages, which find their trial already trained, then cost milliseconds
#: each instead of a poll each.
SQL_BROKER_BUSY_POLL_S = 0.005
SQL_BROKER_BUSY_S = 1.0


def _polling_interval(transport: Any) -> float:
    """kombu reads this as the transport's ``polling_interval`` at each ``drain_events``."""
    busy = time.monotonic() < getattr(transport, "_seqsweep_busy_until", 0.0) or any(
        not channel.qos.can_consume() for channel in transport.channels
    )
    return SQL_BROKER_BUSY_POLL_S if busy else SQL_BROKER_POLL_S


def _taking(get: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    def _get(channel: Any, queue: str) -> Any:
        message = get(channel, queue)  # raises Empty when there is none
        channel.connection._seqsweep_busy_until = time.monotonic() + SQL_BROKER_BUSY_S
        return message

    return _get


def _drain_events(transport: Any, connection: Any, timeout: float | None = None) -> None:
    """kombu's ``drain_events`` for polling transports, which also ends its wait once this
    process's Celery worker has been asked to stop.

    Celery's loop for a polling transport looks for a stop only between waits of up to
    2 s each, so the warm shutdown of an idle worker node, which ``launch`` asks of its
    local workers at every study's end, first sat out the rest of the wait.
    """
    started = time.monotonic()
    while True:
        try:
            transport.cycle.get(transport._deliver, timeout=timeout)
            return
        except Empty:
            stopping = (
                worker_state.should_stop is not None or worker_state.should_terminate is not None
            )
            if stopping or (timeout is not None and time.monotonic() - started >= timeout):
                raise TimeoutError from None  # what socket.timeout names, and Celery catches
            interval = transport.polling_interval
            time.sleep(interval if timeout is None else min(interval, timeout))


# kombu hands unknown transport options to create_engine, so the interval is set on
# the transport's class (kombu itself only assigns it from a transport option, which
# seqsweep never passes).
kombu_sqlalchemy.Transport.polling_interval = property(_polling_interval)  # type: ignore[assignment]
kombu_sqlalchemy.Channel._get = _taking(kombu_sqlalchemy.Channel._get)  # type: ignore[method-assign]
kombu_sqlalchemy.Transport.drain_events = _drain_events  # type: ignore[method-assign]

_SCHEMES = (
    "redis://",
    "rediss://",
    "sqla+sqlite://",
    "sqla+postgresql",
    "amqp://",
    "amqps://",
    "pyamqp://",
)


def celery_config(broker_url: str) -> dict[str, Any]:
    """Return the Celery configuration shared by the scheduler and the workers."""
    transport: dict[str, Any]
    if is_sqlite(broker_url):
        # kombu hands these to create_engine: wait for SQLite's write lock
        # instead of failing while another process holds it.
        transport = {"connect_args": {"timeout": 30}}
    elif broker_url.startswith(("redis://", "rediss://")):
        transport = {
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "socket_connect_timeout": 5,
        }
        if os.environ.get(VISIBILITY_ENV, "").strip():
            # Testing redelivery: also sweep for overdue messages every second
            # instead of kombu's default of about every 100 s.
            transport.update(
                visibility_timeout=env_seconds(VISIBILITY_ENV, VISIBILITY_TIMEOUT_S, "unset it"),
                unacked_restore_interval=1,
                unacked_restore_throttle=1,
            )
    else:
        transport = {}
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5,
        # JSON only: a pickle payload from the broker would be code execution.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        # Results live in the results DB, not in a Celery backend.
        "task_ignore_result": True,
        "task_default_queue": QUEUE,
        # Ack after the trial, one message at a time: a worker that dies
        # mid-trial does not take a queue of other trials down with it.
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "worker_max_tasks_per_child": MAX_TASKS_PER_CHILD,
        "worker_max_memory_per_child": MAX_MEMORY_PER_CHILD_KIB,
    }


def make_app(
    broker_url: str | Callable[[], str], main: str = "seqsweep", include: Sequence[str] = ()
) -> Celery:
    """Return a Celery app for ``broker_url`` (not set as current), configured by
    :func:`celery_config`, the one Celery configuration.

    A callable ``broker_url`` is resolved when the configuration is first read, so the
    worker's app, made at import, follows the URL that ``python -m worker`` sets later.
    """
    app = Celery(main, set_as_current=False, include=list(include))
    app.add_defaults(lambda: celery_config(broker_url() if callable(broker_url) else broker_url))
    return app


def check_broker_url(broker_url: str, db_url: str | None = None) -> None:
    """Refuse, without touching anything, a broker URL seqsweep cannot use, or an embedded
    broker file that is the results DB (both would fight over one SQLite file)."""
    masked = mask_url(broker_url)
    if not broker_url.startswith(_SCHEMES):
        raise UsageError(
            f"--broker {masked!r}: unsupported URL; use redis://HOST:6379/0 or "
            "sqla+sqlite:///PATH (the embedded default)"
        )
    broker_file = sqlite_path(broker_url)
    db_file = None if db_url is None else sqlite_path(db_url)
    if broker_file is not None and db_file is not None and _same_file(broker_file, db_file):
        raise UsageError(
            f"--broker {masked!r} is the results DB file {db_file}; give the broker its own "
            "file, e.g. sqla+sqlite:///seqsweep-broker.db (the default)"
        )


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.samefile(b)
    except OSError:  # one of them does not exist yet
        return False


def check_broker(app: Any, broker_url: str) -> None:
    """Raise a one-line error unless the broker at ``broker_url`` accepts a connection."""
    masked = mask_url(broker_url)
    check_broker_url(broker_url)
    path = sqlite_path(broker_url)
    if path is not None:
        prepare_sqlite_broker(app, path)
        return
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_CONNECT_TIMEOUT_S
            )
    except Exception as exc:  # kombu raises transport-specific types; report them all
        reason = " ".join(mask_text(str(exc), broker_url).split()) or type(exc).__name__
        raise ConnectionFailedError(
            f"cannot reach broker {masked}: {reason}; check --broker / SEQSWEEP_BROKER_URL "
            "and that the broker is running"
        ) from None


def prepare_sqlite_broker(app: Any, path: Any) -> None:
    """Create the embedded broker's SQLite file in WAL mode, with kombu's tables and queue.

    WAL (the mode persists in the file) lets the scheduler enqueue while
    workers poll, instead of each writer locking readers out. kombu creates
    its tables and queue row on a channel's first use, guarded only by a
    thread lock: two processes meeting a new file both run ``CREATE TABLE``,
    and the loser's "table already exists" reaches kombu's retry, which then
    publishes on a closed channel ("'NoneType' object has no attribute
    'client'"). So the first process to get an exclusive ``flock`` on the
    file does all of it, and every later one finds it done. SQLite's own
    locks are ``fcntl`` locks, which ``flock`` does not touch.

    The tables come from kombu's own models but are created through a
    throwaway engine. kombu caches its engine per process; with one cached
    here, a worker started beside a running launch never received a message
    (seen in the fault tests; the exact cause inside kombu was not pinned
    down), so this leaves kombu's cache as it was.
    """
    try:
        create_private(path)  # an unwritable folder is reported by open below
        with open(path, "ab") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            con = sqlite3.connect(path, timeout=30)
            try:
                con.execute("PRAGMA journal_mode=WAL")
            finally:
                con.close()
            with app.connection_for_write() as conn:
                queue_table = conn.default_channel.queue_cls.__table__
            engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})
            try:
                queue_table.metadata.create_all(engine)
                with engine.begin() as db:
                    db.execute(insert(queue_table).prefix_with("OR IGNORE").values(name=QUEUE))
            finally:
                engine.dispose()
    except Exception as exc:  # OSError, sqlite3 or kombu's SQLAlchemy errors alike
        raise ConnectionFailedError(
            f"cannot open embedded broker file {path}: {mask_text(str(exc))}; check that its "
            "folder exists and is writable, or pass --broker"
        ) from None


def queue_depth(app: Any) -> int | None:
    """Return how many trial messages wait in the queue, or None if the broker cannot say.

    Messages that a worker has taken but not yet acknowledged are not counted.
    """
    # Redis deletes an empty list, so a passive declare there says "no such
    # queue" for an empty one; declaring is idempotent on kombu's virtual
    # transports. A real AMQP broker answers a passive declare properly.
    passive = not str(app.conf.broker_url).startswith(("redis://", "rediss://", "sqla+"))
    try:
        with app.connection_for_write() as conn:
            ok = conn.default_channel.queue_declare(queue=QUEUE, passive=passive)
            return int(ok.message_count)
    except Exception:  # an unknown depth only postpones orphan recovery
        return None
