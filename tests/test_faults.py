"""Faults a long search must survive, each with real processes and real services.

Workers are killed with -9, Redis is restarted without persistence, PostgreSQL
connections are cut, ``launch`` is killed and rerun or run twice at once, and
a trial outlives the broker's visibility timeout. Every test then reads the
results DB: each trial counted exactly once, and nothing left ``running``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from seqsweep.settings import WITNESS_ENV
from tests.conftest import run_cli, write_tiny_csv
from tests.processes import (
    FAST_LEASE,
    RedisServer,
    launch,
    rows,
    wait_until,
    worker_node,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCHS = 2
TINY = ["--data", "tiny.csv", "--target", "label", "--epochs", str(EPOCHS), "--batch-size", "8"]
#: Twelve trials trained one by one: they keep the study busy for many seconds.
TWELVE_UNPACKED = ["--trials", "12", "--local-workers", "2", "--pack-size", "1"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_tiny_csv(tmp_path / "tiny.csv", rows=600)
    # Every worker these tests start (directly or through launch) inherits it.
    monkeypatch.setenv(WITNESS_ENV, str(tmp_path / "witness.jsonl"))
    return tmp_path


@pytest.fixture
def embedded(home: Path) -> dict[str, str]:
    return {"db": f"sqlite:///{home / 'results.db'}", "broker": f"sqla+sqlite:///{home / 'b.db'}"}


def _urls(urls: dict[str, str]) -> list[str]:
    return ["--db", urls["db"], "--broker", urls["broker"]]


def _succeeded(db: str) -> int:
    try:
        return int(rows(db, "SELECT count(*) FROM trials WHERE status = 'succeeded'")[0][0])
    except sqlalchemy.exc.SQLAlchemyError:  # not created yet
        return 0


def check_witness(lines: list[str], succeeded: set[int], failed: set[int]) -> None:
    """Check the workers' append-only record of training runs and result writes.

    The results DB cannot show a double count: a trial's row and its epochs are
    updated in place. The witness is written apart from it, one line per event and
    attempt, so a trial trained to completion and recorded by two attempts shows.
    """
    events = [json.loads(line) for line in lines]
    recorded: dict[int, list[int]] = {}
    trained: set[tuple[int, int]] = set()
    for e in events:
        if e["event"] == "trained":
            trained.add((e["number"], e["attempt"]))
        else:
            recorded.setdefault(e["number"], []).append(e["attempt"])
    twice = {n: a for n, a in recorded.items() if len(a) > 1}
    assert not twice, f"trials recorded by more than one attempt: {twice}"
    # A worker killed between its DB write and the witness line leaves the line out, so
    # recorded trials are a subset; "trained" is written before the DB write, so every
    # succeeded trial has one.
    assert set(recorded) <= succeeded | failed, (sorted(recorded), sorted(succeeded | failed))
    missing = succeeded - {number for number, _ in trained}
    assert not missing, f"succeeded with no training run in the witness: {sorted(missing)}"
    for e in events:
        if e["event"] == "recorded":
            assert (e["number"], e["attempt"]) in trained, e
            assert e["number"] in succeeded, e
        if e["event"] == "failed":
            assert e["number"] in failed, e


def _assert_each_trial_counted_once(
    db: str, n: int, *, all_succeeded: bool = True, pruned: bool = False
) -> list[Any]:
    trials = rows(db, "SELECT number, status, attempts, error FROM trials ORDER BY number")
    assert [t[0] for t in trials] == list(range(n)), trials
    done = ("succeeded", "pruned") if pruned else ("succeeded",)
    for number, status, attempts, error in trials:
        if status == "failed" and not all_succeeded:
            assert "gave up after" in (error or ""), (number, error)
        else:
            assert status in done, (number, status, attempts, error)
    succeeded = sum(t[1] == "succeeded" for t in trials)
    # No trial's epochs were written twice, and no failed trial wrote any; a pruned
    # trial stopped at the first rung (epoch 1) and kept that epoch.
    stopped = sum(t[1] == "pruned" for t in trials)
    assert rows(db, "SELECT count(*) FROM trial_epochs") == [(succeeded * EPOCHS + stopped,)]
    # Failed trials given up by recovery were never recorded by a worker.
    by_worker = {t[0] for t in trials if t[1] == "failed" and "gave up after" not in (t[3] or "")}
    witness = Path(os.environ[WITNESS_ENV])
    check_witness(
        witness.read_text().splitlines(),
        succeeded={t[0] for t in trials if t[1] in done},
        failed=by_worker,
    )
    return trials


def _messages_sent(broker_db: Path) -> int:
    return int(rows(f"sqlite:///{broker_db}", "SELECT count(*) FROM kombu_message")[0][0])


@pytest.fixture(params=["embedded", "redis+postgresql"])
def backend(request: pytest.FixtureRequest, embedded: dict[str, str]) -> dict[str, str]:
    if request.param == "embedded":
        return embedded
    return {"db": request.getfixturevalue("pg_url"), "broker": request.getfixturevalue("redis_url")}


def test_forty_trials_survive_five_random_kill9s(home: Path, backend: dict[str, str]) -> None:
    """The issue's acceptance run: 2 workers, killed with -9 five times and replaced.

    The kills alternate between the pool process running a trial, a whole
    worker node, and every node at once; a replacement starts after each.
    """
    db, broker = backend["db"], backend["broker"]
    scheduler = launch(
        home,
        "launch",
        "--trials",
        "40",
        "--local-workers",
        "0",
        "--seed",
        "3",
        *TINY,
        *_urls(backend),
    )
    nodes = [worker_node(home, f"node{i}", db, broker) for i in range(2)]
    rng = random.Random(20261128)
    kills: list[str] = []
    try:
        while len(kills) < 5 and scheduler.alive():
            time.sleep(rng.uniform(0.5, 2.5))
            running = (
                rows(db, "SELECT worker FROM trials WHERE status = 'running'")
                if _succeeded(db) or kills
                else []
            )
            if not running:
                continue
            kind = ("trial", "node", "all")[len(kills) % 3]
            if kind == "trial":  # the pool process; its node starts another
                try:
                    os.kill(int(running[0][0].rsplit(":", 1)[1]), signal.SIGKILL)
                except ProcessLookupError:  # the trial finished since the query
                    continue
            else:
                victims = nodes if kind == "all" else [rng.choice(nodes)]
                for node in victims:
                    node.kill9()
                    nodes.remove(node)
                    nodes.append(worker_node(home, f"node{len(kills)}{len(nodes)}", db, broker))
            kills.append(kind)
        code = scheduler.wait(300)
    finally:
        for node in nodes:
            node.stop()
        scheduler.stop()
    assert len(kills) == 5, f"ended after only {kills} kills: {scheduler.output()[-3000:]}"
    assert code == 0, scheduler.output()[-3000:]
    trials = _assert_each_trial_counted_once(db, 40, all_succeeded=False)
    assert sum(t[2] for t in trials) > 40, "no kill hit a running trial"
    assert "requeued trials" in scheduler.output()
    assert rows(db, "SELECT count(*) FROM trials WHERE status IN ('running', 'queued')") == [(0,)]


def test_kill9_a_worker_during_a_trial_then_all_workers(
    home: Path, embedded: dict[str, str]
) -> None:
    """Without launch's wait loop: `recover` requeues, new workers finish the study."""
    db, broker = embedded["db"], embedded["broker"]
    detached = run_cli(
        "scheduler",
        "launch",
        "--detach",
        "--trials",
        "6",
        "--local-workers",
        "0",
        *TINY,
        *_urls(embedded),
        cwd=home,
    )
    assert detached.returncode == 0, detached.stderr
    first = worker_node(home, "first", db, broker)
    wait_until(
        lambda: rows(db, "SELECT count(*) FROM trials WHERE status = 'running'")[0][0],
        120,
        "a running trial",
    )
    first.kill9()
    # One worker, one pack: every trial it held is lost with it.
    lost = rows(db, "SELECT number, worker FROM trials WHERE status = 'running' ORDER BY number")
    assert len({worker for _, worker in lost}) == 1
    worker = lost[0][1]
    time.sleep(float(FAST_LEASE["SEQSWEEP_LEASE_S"]) + 1)

    recovered = run_cli("scheduler", "recover", *_urls(embedded), cwd=home)
    assert recovered.returncode == 0, recovered.stderr
    assert f"requeued trials {', '.join(str(n) for n, _ in lost)}:" in recovered.stdout
    second = worker_node(home, "second", db, broker)
    try:
        wait_until(lambda: _succeeded(db) == 6, 180, "6 succeeded trials", every=1)
    finally:
        second.stop()
    trials = _assert_each_trial_counted_once(db, 6)
    for number, _ in lost:
        assert trials[number][2] == 2  # the lost run, then the one that counted
        assert rows(db, f"SELECT worker FROM trials WHERE number = {number}") != [(worker,)]


def test_restart_redis_during_a_study(home: Path, embedded: dict[str, str]) -> None:
    redis = RedisServer(home)
    redis.start()
    urls = {"db": embedded["db"], "broker": redis.url}
    # Unpacked, so that trials still wait in Redis when it restarts: packs would claim
    # them all early, and a loaded machine then left nothing to lose.
    scheduler = launch(home, "launch", *TWELVE_UNPACKED, *TINY, *_urls(urls))
    try:
        wait_until(lambda: _succeeded(urls["db"]) >= 2, 180, "2 succeeded trials")
        redis.stop()  # no persistence: every waiting message is gone
        time.sleep(3)
        redis.start()
        code = scheduler.wait(300)
    finally:
        scheduler.stop()
        redis.stop()
    assert code == 0, scheduler.output()[-3000:]
    _assert_each_trial_counted_once(urls["db"], 12)
    assert "re-sent lost messages" in scheduler.output()


def test_postgresql_connections_dropped_during_a_study(
    home: Path, pg_url: str, redis_url: str
) -> None:
    urls = {"db": pg_url, "broker": redis_url}
    database = sqlalchemy.engine.make_url(pg_url).database
    admin = sqlalchemy.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    dropped: list[int] = []
    done = threading.Event()

    def cut_connections() -> None:
        while not done.wait(0.7):
            with admin.connect() as conn:
                dropped.extend(
                    conn.execute(
                        sqlalchemy.text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = :db AND pid <> pg_backend_pid()"
                        ),
                        {"db": database},
                    ).scalars()
                )

    # Unpacked, so the study writes to the DB for many seconds after its first trial: a
    # pack of all twelve once finished after only four cuts.
    scheduler = launch(home, "launch", *TWELVE_UNPACKED, *TINY, *_urls(urls))
    cutter = threading.Thread(target=cut_connections)
    try:
        wait_until(lambda: _succeeded(pg_url) >= 1, 180, "a succeeded trial")
        cutter.start()
        wait_until(lambda: _succeeded(pg_url) >= 12 or not scheduler.alive(), 300, "the study")
        done.set()
        cutter.join()
        code = scheduler.wait(120)
    finally:
        done.set()
        scheduler.stop()
        admin.dispose()
    assert code == 0, scheduler.output()[-3000:]
    assert len(dropped) >= 5, "too few connections were cut to prove anything"
    _assert_each_trial_counted_once(pg_url, 12)


def _worker_nodes_in(home: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if (
                os.readlink(proc / "cwd") == str(home)
                and b"-m\x00worker" in (proc / "cmdline").read_bytes()
            ):
                pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return pids


def test_killed_launch_reruns_without_sending_anything_twice(
    home: Path, embedded: dict[str, str]
) -> None:
    args = ["--trials", "8", "--local-workers", "1", "--study", "k", *TINY, *_urls(embedded)]
    first = launch(home, "first", *args)
    wait_until(lambda: _succeeded(embedded["db"]) >= 2, 180, "2 succeeded trials")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    # Its local workers get SIGTERM from the kernel, finish their trial and go.
    wait_until(lambda: not _worker_nodes_in(home), 60, "the orphaned workers to exit")

    again = run_cli("scheduler", "launch", *args, cwd=home)
    assert again.returncode == 0, again.stderr
    assert "(0 new," in again.stdout and "0 sent to the broker" in again.stdout
    trials = _assert_each_trial_counted_once(embedded["db"], 8)
    assert all(t[2] == 1 for t in trials)
    assert _messages_sent(home / "b.db") == 8


#: The issue's study: tpe + asha, 60 trials, the scheduler killed a third of the way in.
TPE_ASHA_TRIALS = 60


# The relaunch normally takes 1 to 2 minutes; once in CI it ran past 300 s unexplained, so
# it gets room and, if it ever stalls, a failure that shows where (_relaunch).
@pytest.mark.timeout(600)
def test_killed_tpe_asha_launch_resumes_from_the_db(home: Path, backend: dict[str, str]) -> None:
    """``--sampler tpe --pruner asha``: launch is killed mid-study and relaunched; every
    trial is counted once, some are pruned at the first rung. On Redis + PostgreSQL the
    trials run on a separate ``python -m worker``, so pruning decisions come from the DB."""
    db, embedded = backend["db"], backend["db"].startswith("sqlite")
    args = ["--trials", str(TPE_ASHA_TRIALS), "--study", "tpe"]
    args += ["--sampler", "tpe", "--pruner", "asha"]
    args += ["--in-flight", "8", "--seed", "3", *TINY, *_urls(backend)]
    args += ["--local-workers", "1" if embedded else "0"]
    node = None if embedded else worker_node(home, "node", db, backend["broker"])
    try:
        first = launch(home, "first", *args)
        wait_until(lambda: _finished(db) >= 20, 240, "20 finished trials")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        if embedded:  # launch's local workers finish their trial and go
            wait_until(lambda: not _worker_nodes_in(home), 60, "the orphaned workers to exit")
        before = rows(db, "SELECT number, params FROM trials ORDER BY number")
        assert 20 <= len(before) < TPE_ASHA_TRIALS  # a window of 8 in flight, not the whole study

        again = _relaunch(home, db, args)
    finally:
        if node is not None:
            node.stop()
    assert again.returncode == 0, again.stderr
    assert "tpe sampler (8 in flight)" in again.stdout
    trials = _assert_each_trial_counted_once(db, TPE_ASHA_TRIALS, pruned=True)
    assert any(t[1] == "pruned" for t in trials), trials
    # The trials sampled before the kill are kept as they were, and none is sent twice.
    after = rows(db, "SELECT number, params FROM trials ORDER BY number")
    assert after[: len(before)] == before
    if embedded:
        assert _messages_sent(home / "b.db") == TPE_ASHA_TRIALS
    report = json.loads(
        run_cli("scheduler", "report", "--db", db, "--study", "tpe", "--format", "json",
                cwd=home).stdout
    )  # fmt: skip
    assert report["pruner"] == {"name": "asha", "reduction_factor": 3, "min_epochs": 1}
    assert report["counts"]["pruned"] == sum(t[1] == "pruned" for t in trials)
    assert report["epochs_trained"] == rows(db, "SELECT count(*) FROM trial_epochs")[0][0]


def _relaunch(home: Path, db: str, args: list[str]) -> Any:
    """``launch`` again; a stall fails with its output, the trials' states and the logs."""
    try:
        return run_cli("scheduler", "launch", *args, cwd=home, timeout=420)
    except subprocess.TimeoutExpired as exc:
        states = rows(db, "SELECT status, count(*) FROM trials GROUP BY status")
        logs = {
            str(p.relative_to(home)): p.read_text(errors="replace")[-2000:]
            for p in sorted(home.rglob("*.log"))
        }
        pytest.fail(
            f"the relaunch stalled; trials {states}\nstdout {exc.stdout!r}\n"
            f"stderr {exc.stderr!r}\nlogs {json.dumps(logs, indent=1)}"
        )


def _finished(db: str) -> int:
    try:
        sql = "SELECT count(*) FROM trials WHERE status IN ('succeeded', 'pruned')"
        return int(rows(db, sql)[0][0])
    except sqlalchemy.exc.SQLAlchemyError:  # not created yet
        return 0


def test_two_launches_of_one_study_at_once(home: Path, embedded: dict[str, str]) -> None:
    # No --seed: the second launch must adopt the seed the first one stored.
    args = ["--trials", "8", "--local-workers", "1", "--study", "twice", *TINY, *_urls(embedded)]
    launches = [launch(home, f"launch{i}", *args) for i in range(2)]
    codes = [p.wait(300) for p in launches]
    assert codes == [0, 0], "\n".join(p.output()[-2000:] for p in launches)
    trials = _assert_each_trial_counted_once(embedded["db"], 8)
    assert all(t[2] == 1 for t in trials)
    assert rows(embedded["db"], "SELECT count(*) FROM studies") == [(1,)]
    assert _messages_sent(home / "b.db") == 8


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # exited meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(db: str) -> int:
    try:
        return int(rows(db, "SELECT count(*) FROM trials WHERE status = 'running'")[0][0])
    except sqlalchemy.exc.SQLAlchemyError:  # not created yet
        return 0


def _gone(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie has stopped running; only its parent's wait is left


def test_killed_launch_takes_its_busy_local_node_down(home: Path, embedded: dict[str, str]) -> None:
    """kill -9 of launch while its node trains: the node and its pool process are gone
    within the grace ($SEQSWEEP_STOP_GRACE_S, 3 s here), not when the trial ends."""
    args = ["--trials", "1", "--local-workers", "1", "--study", "busy", "--pack-size", "1"]
    args += ["--data", "tiny.csv", "--target", "label", "--epochs", "10000", "--batch-size", "8"]
    scheduler = launch(home, "launch", *args, *_urls(embedded), SEQSWEEP_STOP_GRACE_S="3")
    node: list[int] = []
    try:
        wait_until(lambda: _running(embedded["db"]) == 1, 120, "the trial to run")
        node = _children(scheduler.pid)
        assert len(node) == 1, node
        processes = node + _children(node[0])
        assert len(processes) == 2, processes  # the node and its one pool process
        os.kill(scheduler.pid, signal.SIGKILL)
        scheduler.wait(10)
        started = time.monotonic()
        wait_until(lambda: all(_gone(p) for p in processes), 30, "the node and its pool to die")
        assert time.monotonic() - started < 20
    finally:
        scheduler.kill9()
        for pid in node:  # the node has its own process group, with its pool processes
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    assert rows(embedded["db"], "SELECT status FROM trials") == [("running",)]  # until its lease


def test_launch_restarts_its_local_workers_when_they_die(
    home: Path, embedded: dict[str, str]
) -> None:
    """Celery's worker can crash on a broker hiccup; launch starts another and finishes."""
    scheduler = launch(
        home, "launch", "--trials", "8", "--local-workers", "1", *TINY, *_urls(embedded)
    )
    try:
        wait_until(lambda: _succeeded(embedded["db"]) >= 1, 180, "a first succeeded trial")
        nodes = _children(scheduler.pid)
        assert len(nodes) == 1, nodes
        os.kill(nodes[0], signal.SIGKILL)  # the node's parent process, as a crash would end it
        code = scheduler.wait(300)
    finally:
        scheduler.stop()
    assert code == 0, scheduler.output()[-3000:]
    assert "local workers exited with code -9; restarting them (1 of 3)" in scheduler.output()
    _assert_each_trial_counted_once(embedded["db"], 8)


def test_trial_longer_than_the_visibility_timeout_runs_once(
    home: Path, embedded: dict[str, str], redis_url: str
) -> None:
    """Redis hands the message out again while the trial runs; the claim refuses it."""
    urls = {"db": embedded["db"], "broker": redis_url}
    scheduler = launch(
        home,
        "launch",
        "--trials",
        "1",
        "--local-workers",
        "2",
        *TINY[:4],
        "--epochs",
        "40",
        "--batch-size",
        "8",
        *_urls(urls),
        SEQSWEEP_REDIS_VISIBILITY_TIMEOUT_S="2",
    )
    try:
        code = scheduler.wait(300)
    finally:
        scheduler.stop()
    log = (home / "seqsweep-workers.log").read_text(errors="replace")
    assert code == 0, scheduler.output()[-3000:] + log[-3000:]
    assert "trial 0 is not queued; nothing to do" in log, "Redis never redelivered the message"
    [(status, attempts)] = rows(urls["db"], "SELECT status, attempts FROM trials")
    assert (status, attempts) == ("succeeded", 1)


def test_recover_resends_lost_messages(home: Path, embedded: dict[str, str]) -> None:
    detached = run_cli(
        "scheduler",
        "launch",
        "--detach",
        "--trials",
        "3",
        "--local-workers",
        "0",
        *TINY,
        *_urls(embedded),
        cwd=home,
    )
    assert detached.returncode == 0, detached.stderr
    broker_db = f"sqlite:///{home / 'b.db'}"
    engine = sqlalchemy.create_engine(broker_db)
    with engine.begin() as conn:  # the broker loses every message
        conn.execute(sqlalchemy.text("DELETE FROM kombu_message"))
    engine.dispose()
    engine = sqlalchemy.create_engine(embedded["db"])
    with engine.begin() as conn:  # ...long enough ago to be past the grace period
        conn.execute(sqlalchemy.text("UPDATE trials SET enqueued_at = '2000-01-01 00:00:00'"))
    engine.dispose()

    proc = run_cli("scheduler", "recover", "--study", "default", *_urls(embedded), cwd=home)
    assert proc.returncode == 0, proc.stderr
    assert "re-sent lost messages of trials 0, 1, 2" in proc.stdout
    assert _messages_sent(home / "b.db") == 3
    proc = run_cli("scheduler", "recover", *_urls(embedded), cwd=home)
    assert "nothing lost; 0 message(s) sent" in proc.stdout


def test_the_witness_sees_a_trial_recorded_by_two_attempts() -> None:
    """The check above can fail: a double count the results DB would hide."""
    line = '{{"event": "{}", "study_id": 1, "number": {}, "attempt": {}, "pid": 7}}'
    fine = [line.format("trained", 0, 1), line.format("recorded", 0, 1)]
    check_witness(fine, succeeded={0}, failed=set())
    twice = [*fine, line.format("trained", 0, 2), line.format("recorded", 0, 2)]
    with pytest.raises(AssertionError, match="recorded by more than one attempt"):
        check_witness(twice, succeeded={0}, failed=set())
    with pytest.raises(AssertionError):  # a result written with no training run behind it
        check_witness([line.format("recorded", 0, 1)], succeeded={0}, failed=set())
    with pytest.raises(AssertionError, match="no training run"):  # a success no one trained
        check_witness([], succeeded={0}, failed=set())
