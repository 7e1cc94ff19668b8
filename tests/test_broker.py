"""The embedded broker file: first use by several processes at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from seqsweep import broker
from seqsweep.broker import check_broker, make_app
from seqsweep.messages import QUEUE


def test_check_broker_leaves_a_new_file_ready_for_any_process(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'b.db'}"
    check_broker(make_app(url), url)
    con = sqlite3.connect(tmp_path / "b.db")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert con.execute("SELECT name FROM kombu_queue").fetchall() == [(QUEUE,)]
        assert con.execute("SELECT count(*) FROM kombu_message").fetchone() == (0,)
    finally:
        con.close()


def _check_and_send(url: str, barrier: Any, results: Any) -> None:
    try:
        app = make_app(url)
        barrier.wait()
        check_broker(app, url)
        with app.producer_or_acquire() as producer:
            app.send_task("probe", args=[1], queue=QUEUE, producer=producer, retry=True)
        results.put("ok")
    except BaseException as exc:  # reported to the parent, which asserts
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.integration
def test_processes_meeting_a_new_broker_file_all_send(tmp_path: Path) -> None:
    """Launch and workers start together on a new file; none may fail.

    Before the broker file was prepared under a file lock, about one round in
    five lost a process to kombu's unguarded table and queue creation.
    """
    ctx = multiprocessing.get_context("spawn")
    for round_ in range(8):
        path = tmp_path / f"b{round_}.db"
        url = f"sqla+sqlite:///{path}"
        barrier, results = ctx.Barrier(4), ctx.Queue()
        args = (url, barrier, results)
        procs = [ctx.Process(target=_check_and_send, args=args) for _ in range(4)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(30)
        assert outcomes == ["ok"] * 4, f"round {round_}: {outcomes}"
        con = sqlite3.connect(path)
        try:
            assert con.execute("SELECT count(*) FROM kombu_message").fetchone() == (4,)
        finally:
            con.close()


def test_the_embedded_broker_polls_fast_only_while_its_worker_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle, a consumer polls every SQL_BROKER_POLL_S; with a message taken and unacked,
    and for SQL_BROKER_BUSY_S after taking one, every SQL_BROKER_BUSY_POLL_S."""
    monkeypatch.setattr(broker, "SQL_BROKER_BUSY_S", 0.3)
    url = f"sqla+sqlite:///{tmp_path / 'b.db'}"
    app = make_app(url)
    check_broker(app, url)
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("poll-test")
        queue.consumer.qos(prefetch_count=1)
        transport = conn.transport
        assert transport.polling_interval == broker.SQL_BROKER_POLL_S
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        time.sleep(0.4)  # past the busy window: only the unacked message keeps it fast
        assert transport.polling_interval == broker.SQL_BROKER_BUSY_POLL_S
        message.ack()
        assert transport.polling_interval == broker.SQL_BROKER_POLL_S
        queue.put({"n": 2})
        queue.get(timeout=5).ack()  # just took one: fast for the busy window
        assert transport.polling_interval == broker.SQL_BROKER_BUSY_POLL_S
        time.sleep(0.4)
        assert transport.polling_interval == broker.SQL_BROKER_POLL_S
        queue.close()


def test_a_stop_ends_the_embedded_broker_wait_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery's loop for a polling transport waits up to 2 s per drain; a worker asked to
    stop leaves the wait without sitting it out."""
    from celery.worker import state

    url = f"sqla+sqlite:///{tmp_path / 'b.db'}"
    app = make_app(url)
    check_broker(app, url)
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("stop-test")
        queue.consumer.consume()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.5)  # nothing queued: the whole wait
        assert time.monotonic() - started >= 0.5
        monkeypatch.setattr(state, "should_stop", 0)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=2.0)
        assert time.monotonic() - started < 0.5
        monkeypatch.setattr(state, "should_stop", None)
        queue.put({"n": 1})
        conn.drain_events(timeout=2.0)  # a message still ends the wait as before
        assert queue.get(timeout=1).payload == {"n": 1}
        queue.close()
