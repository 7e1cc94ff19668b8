"""Enqueue: a call's messages reach the broker as one batch, every one of them."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from scheduler import enqueue
from scheduler.enqueue import enqueue_trials
from seqsweep.broker import check_broker, make_app
from seqsweep.errors import ConnectionFailedError
from seqsweep.messages import QUEUE

STUDY: Any = SimpleNamespace(id=7, name="s")


def _numbers(message: dict[str, Any]) -> int:
    args = json.loads(base64.b64decode(message["body"]))[0]
    assert args[0]["study"] == "s" and args[0]["study_id"] == 7
    return int(args[0]["number"])


def _sqlite_numbers(path: Path) -> list[int]:
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT payload FROM kombu_message ORDER BY id").fetchall()
    finally:
        con.close()
    return [_numbers(json.loads(payload)) for (payload,) in rows]


def test_embedded_broker_gets_every_message_in_one_commit(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'b.db'}"
    app = make_app(url)
    check_broker(app, url)
    assert enqueue_trials(app, STUDY, range(300)) == 300
    assert _sqlite_numbers(tmp_path / "b.db") == list(range(300))


def test_embedded_broker_keeps_none_of_a_failed_batch(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'b.db'}"
    app = make_app(url)
    check_broker(app, url)
    enqueue_trials(app, STUDY, [0])

    def failing() -> Iterator[int]:
        yield from range(1, 6)
        raise OSError("disk gone")

    with pytest.raises(ConnectionFailedError, match="after 5 messages: disk gone"):
        enqueue_trials(app, STUDY, failing())
    assert _sqlite_numbers(tmp_path / "b.db") == [0]  # one commit per message kept 1-5
    assert enqueue_trials(app, STUDY, [1, 2]) == 2  # the channel still sends afterwards
    assert _sqlite_numbers(tmp_path / "b.db") == [0, 1, 2]


def test_redis_gets_every_message_through_a_few_pipelines(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis
    from kombu.transport import redis as kombu_redis

    flushes: list[int] = []
    flush = kombu_redis.PublishBatch.flush

    def counted(self: Any) -> None:
        flushes.append(1)
        flush(self)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(kombu_redis.PublishBatch, "flush", counted)
    app = make_app(redis_url)
    n = 2 * enqueue.REDIS_BATCH + 500
    assert enqueue_trials(app, STUDY, range(n)) == n
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.lrange(QUEUE, 0, -1)
    finally:
        client.close()
    assert sorted(_numbers(json.loads(m)) for m in raw) == list(range(n))
    assert 3 <= len(flushes) <= 4  # one round trip per REDIS_BATCH, not per message


@pytest.mark.integration
def test_launch_sends_the_heaviest_trials_first(tmp_path: Path) -> None:
    """A real ``launch --detach``: the broker holds the study's messages widest network
    first, so the workers start on the packs that take longest."""
    from tests.conftest import run_cli, write_tiny_csv

    write_tiny_csv(tmp_path / "tiny.csv")
    proc = run_cli(
        "scheduler", "launch", "--detach", "--data", "tiny.csv", "--target", "label",
        "--trials", "30", "--study", "s", "--seed", "3", "--local-workers", "0",
        "--db", f"sqlite:///{tmp_path / 'r.db'}", "--broker", f"sqla+sqlite:///{tmp_path / 'b.db'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    con = sqlite3.connect(tmp_path / "b.db")
    try:
        payloads = [
            json.loads(p) for (p,) in con.execute("SELECT payload FROM kombu_message ORDER BY id")
        ]
    finally:
        con.close()
    sent = [json.loads(base64.b64decode(m["body"]))[0][0]["number"] for m in payloads]
    con = sqlite3.connect(tmp_path / "r.db")
    try:
        params = {n: json.loads(p) for n, p in con.execute("SELECT number, params FROM trials")}
    finally:
        con.close()
    widths = [params[n]["dense_units"] for n in sent]
    assert sorted(sent) == list(range(30))
    assert len(set(widths)) > 2, "the space should draw several widths"
    assert widths == sorted(widths, reverse=True), widths
    # equal widths keep their number order
    pairs = pairwise(zip(sent, widths, strict=True))
    assert all(a < b for (a, wa), (b, wb) in pairs if wa == wb)
