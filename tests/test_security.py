"""Security with real processes: hostile messages, password-protected and TLS
brokers, TLS to PostgreSQL, and passwords kept out of every output and log.

No mocks: workers are ``python -m worker`` processes, brokers are real
``redis-server`` processes started here on free ports (never the shared 6379
server), and every success is read back from the results DB.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from tests.conftest import REPO, require, run_cli, write_tiny_csv

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-Pw"
LAUNCH_TINY = [
    "--data",
    "tiny.csv",
    "--target",
    "label",
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--seed",
    "3",
]


# -- helpers (as in test_integration.py) ---------------------------------------


def _rows(db_url: str, sql: str) -> list[tuple]:
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sqlalchemy.text(sql))]
    finally:
        engine.dispose()


def _log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _wait_for_log(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in _log(path):
            return
        time.sleep(0.5)
    raise AssertionError(f"the worker did not log {text!r} within {timeout}s:\n{_log(path)}")


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    """Exit code 2 and exactly one stderr line containing ``fragment``, no traceback."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _worker(home: Path, db_url: str, broker_url: str, log_path: Path) -> Iterator[subprocess.Popen]:
    """One ``python -m worker --concurrency 1`` with both URLs in its environment."""
    env = {
        **os.environ,
        "SEQSWEEP_DB_URL": db_url,
        "SEQSWEEP_BROKER_URL": broker_url,
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "--concurrency", "1", "--loglevel", "INFO"],
            cwd=home,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # pool processes that outlived the node
            proc.wait()


def _wait_for_trials(db_url: str, study: str, n: int, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    sql = (
        "SELECT t.status FROM trials t JOIN studies s ON s.id = t.study_id "
        f"WHERE s.name = '{study}'"
    )
    statuses: list[tuple] = []
    while time.monotonic() < deadline:
        statuses = _rows(db_url, sql)
        if len(statuses) == n and all(s in ("succeeded", "failed") for (s,) in statuses):
            break
        time.sleep(1)
    assert statuses == [("succeeded",)] * n, f"{statuses}\n{_log(log)}"


# -- a: hostile messages never crash a worker ----------------------------------


class _Payload:
    """Unpickling this would run ``os.mkdir(marker)``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.marker,))


@pytest.mark.slow
def test_malformed_and_pickle_messages_never_crash_a_worker(tmp_path: Path) -> None:
    from kombu import Producer

    from seqsweep.broker import make_app
    from seqsweep.messages import QUEUE, TASK_NAME

    write_tiny_csv(tmp_path / "tiny.csv")
    db_url = f"sqlite:///{tmp_path / 'r.db'}"
    broker_url = f"sqla+sqlite:///{tmp_path / 'b.db'}"
    log_path = tmp_path / "worker.log"
    marker = tmp_path / "pickle-ran"
    home = tmp_path / "worker-home"
    home.mkdir()

    with _worker(home, db_url, broker_url, log_path) as worker:
        app = make_app(broker_url, main="attacker")
        # (i) task messages whose payload is not a trial reference
        for args in (
            ["nonsense"],
            [{"study_id": -1}],
            [{"study_id": 1, "study": "x", "number": "0; DROP TABLE trials"}],
            [None],
        ):
            app.send_task(TASK_NAME, args=args, queue=QUEUE)
        app.send_task(TASK_NAME, args=[], queue=QUEUE)  # wrong arity
        app.send_task("seqsweep.not_a_task", args=[{}], queue=QUEUE)
        # (ii) a pickle-serialized task whose argument runs code when unpickled
        app.send_task(TASK_NAME, args=[_Payload(marker)], queue=QUEUE, serializer="pickle")
        # (iii) a message that is not a Celery task at all
        with app.connection_for_write() as conn:
            Producer(conn).publish({"hello": "world"}, routing_key=QUEUE, serializer="json")

        # (iv) then a real trial
        proc = run_cli(
            "scheduler",
            "launch",
            "--detach",
            "--trials",
            "1",
            "--local-workers",
            "0",
            "--study",
            "real",
            "--db",
            db_url,
            "--broker",
            broker_url,
            *LAUNCH_TINY,
            cwd=tmp_path,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        _wait_for_trials(db_url, "real", 1, 240, log_path)
        for text in (
            "rejected malformed trial message 'nonsense'",
            "rejected malformed trial message {'study_id': -1}",
            "rejected malformed trial message None",
            "Refusing to deserialize untrusted content of type pickle",
            "Received unregistered task of type 'seqsweep.not_a_task'",
            "Received and deleted unknown message",
        ):
            _wait_for_log(log_path, text, 30)
        assert worker.poll() is None, _log(log_path)  # still alive after all of it
    assert not marker.exists(), "the worker unpickled a message"
    # Only the real trial ever touched the results DB.
    assert _rows(db_url, "SELECT count(*), sum(attempts) FROM trials") == [(1, 1)]


# -- b: a password-protected Redis ---------------------------------------------


@contextlib.contextmanager
def _redis_server(tmp_path: Path, *args: str) -> Iterator[subprocess.Popen]:
    """A private redis-server (never the shared one on 6379), stopped on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        require("redis-server on PATH", "not found")
    log = open(tmp_path / "redis-server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            binary or "redis-server",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            *args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"redis-server exited with {proc.returncode}:\n{_log(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise AssertionError(f"redis-server did not listen on {port}:\n{_log(log)}")


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[int]:
    """Our own redis-server that requires a password; returns its port."""
    home = tmp_path / "redis"
    home.mkdir()
    port = _free_port()
    with _redis_server(home, "--port", str(port), "--requirepass", PASSWORD) as proc:
        _wait_for_port(port, proc, home / "redis-server.log")
        yield port


def _workers_with_secret_in_argv(secret: str) -> list[str]:
    """Command lines of worker processes that show ``secret`` to every user via ps."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
            if "worker" in argv and any(secret in a for a in argv):
                found.append(" ".join(argv))
    return found


def _launch_watching_argv(args: list[str], cwd: Path, secret: str) -> tuple[int, str, str]:
    """Run ``python -m scheduler launch`` while checking the workers' command lines."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    for var in ("SEQSWEEP_DB_URL", "SEQSWEEP_BROKER_URL"):
        env.pop(var, None)
    out, err = cwd / "launch.out", cwd / "launch.err"
    leaks: list[str] = []
    with open(out, "wb") as fout, open(err, "wb") as ferr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "launch", *args],
            cwd=cwd,
            env=env,
            stdout=fout,
            stderr=ferr,
        )
        try:
            while proc.poll() is None:
                leaks += _workers_with_secret_in_argv(secret)
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=60)
    assert not leaks, f"a worker's command line shows the password: {leaks[0]}"
    return proc.returncode, _log(out), _log(err)


@pytest.mark.slow
def test_password_protected_redis_end_to_end_never_prints_the_password(
    tmp_path: Path, password_redis: int
) -> None:
    write_tiny_csv(tmp_path / "tiny.csv")
    broker = f"redis://:{PASSWORD}@127.0.0.1:{password_redis}/0"
    db_url = f"sqlite:///{tmp_path / 'r.db'}"
    args = ["--trials", "2", "--local-workers", "1", "--study", "pw"]
    code, out, err = _launch_watching_argv(
        [*args, "--broker", broker, "--db", db_url, *LAUNCH_TINY], tmp_path, PASSWORD
    )
    worker_log = _log(tmp_path / "seqsweep-workers.log")
    assert code == 0, out + err + worker_log
    assert _rows(db_url, "SELECT status, count(*) FROM trials GROUP BY status") == [
        ("succeeded", 2)
    ]
    assert worker_log, "launch wrote no worker log"
    for name, text in (("stdout", out), ("stderr", err), ("worker log", worker_log)):
        assert PASSWORD not in text, f"the password appears in {name}"
    assert f"127.0.0.1:{password_redis}" in worker_log  # the broker is named, masked


def test_wrong_redis_password_is_one_masked_line(tmp_path: Path, password_redis: int) -> None:
    wrong = "n0t-the-Pw"
    broker = f"redis://:{wrong}@127.0.0.1:{password_redis}/0"
    started = time.monotonic()
    proc = run_cli(
        "scheduler",
        "launch",
        "--trials",
        "1",
        "--local-workers",
        "0",
        "--db",
        "sqlite:///r.db",
        "--broker",
        broker,
        cwd=tmp_path,
        timeout=60,
    )
    _assert_one_line_error(proc, f"cannot reach broker redis://:***@127.0.0.1:{password_redis}/0")
    assert time.monotonic() - started < 20
    assert wrong not in proc.stdout + proc.stderr
    assert _study_count(tmp_path / "r.db") == 0  # nothing written
    # A worker given the wrong password says so in one line and does not start (after
    # one line of warning: a password in a flag).
    worker = run_cli("worker", "--broker", broker, "--db", "sqlite:///r.db", cwd=tmp_path)
    warning, _, error = worker.stderr.partition("\n")
    assert warning.startswith("warning: a password in --broker shows in `ps`"), worker.stderr
    worker.stderr = error
    _assert_one_line_error(worker, f"cannot reach broker redis://:***@127.0.0.1:{password_redis}")
    assert wrong not in worker.stdout + worker.stderr + warning


def _study_count(path: Path) -> int:
    """Number of studies in the SQLite results DB at ``path`` (0 if it was never created)."""
    if not path.exists():
        return 0
    return int(_rows(f"sqlite:///{path}", "SELECT count(*) FROM studies")[0][0])


# -- c: rediss:// (Redis over TLS) ---------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def _make_certs(home: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    if shutil.which("openssl") is None:
        require("openssl on PATH", "needed to make a test certificate")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=seqsweep-test-ca", cwd=home)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=127.0.0.1", cwd=home)  # fmt: skip
    (home / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.cnf",
             cwd=home)  # fmt: skip


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS-only redis-server with a password; returns (port, CA certificate)."""
    home = tmp_path / "redis-tls"
    home.mkdir()
    _make_certs(home)
    port = _free_port()
    with _redis_server(
        home,
        "--port",
        "0",  # no plain-text listener at all
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(home / "server.crt"),
        "--tls-key-file",
        str(home / "server.key"),
        "--tls-ca-cert-file",
        str(home / "ca.crt"),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        PASSWORD,
    ) as proc:
        log = home / "redis-server.log"
        time.sleep(0.5)
        if proc.poll() is not None and "tls" in _log(log).lower():
            # Debian's and the official builds have TLS; a BUILD_TLS=no build refuses the flags.
            require("redis-server built with TLS support", " ".join(_log(log).split())[-200:])
        _wait_for_port(port, proc, log)
        yield port, home / "ca.crt"


@pytest.mark.slow
def test_rediss_end_to_end(tmp_path: Path, tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    write_tiny_csv(tmp_path / "tiny.csv")
    broker = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    db_url = f"sqlite:///{tmp_path / 'r.db'}"
    args = ["--trials", "2", "--local-workers", "1", "--study", "tls"]
    code, out, err = _launch_watching_argv(
        [*args, "--broker", broker, "--db", db_url, *LAUNCH_TINY], tmp_path, PASSWORD
    )
    worker_log = _log(tmp_path / "seqsweep-workers.log")
    assert code == 0, out + err + worker_log
    assert _rows(db_url, "SELECT status, count(*) FROM trials GROUP BY status") == [
        ("succeeded", 2)
    ]
    for name, text in (("stdout", out), ("stderr", err), ("worker log", worker_log)):
        assert PASSWORD not in text, f"the password appears in {name}"


def test_rediss_with_an_untrusted_certificate_is_refused(
    tmp_path: Path, tls_redis: tuple[int, Path]
) -> None:
    """Certificate checks are on: a CA that did not sign the server's certificate fails."""
    port, _ = tls_redis
    other = tmp_path / "other-ca"
    other.mkdir()
    _make_certs(other)
    broker = (
        f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"
        f"?ssl_cert_reqs=required&ssl_ca_certs={other / 'ca.crt'}"
    )
    proc = run_cli(
        "scheduler",
        "launch",
        "--trials",
        "1",
        "--local-workers",
        "0",
        "--db",
        "sqlite:///r.db",
        "--broker",
        broker,
        cwd=tmp_path,
        timeout=60,
    )
    _assert_one_line_error(proc, f"cannot reach broker rediss://:***@127.0.0.1:{port}/0")
    assert "certificate" in proc.stderr.lower()
    assert PASSWORD not in proc.stdout + proc.stderr


# -- d: PostgreSQL with sslmode=require ----------------------------------------


def _pg_ssl_on(pg_admin_url: str) -> bool:
    return _rows(pg_admin_url, "SHOW ssl") == [("on",)]


def test_postgresql_sslmode_require_is_really_tls(pg_admin_url: str, pg_url: str) -> None:
    if not _pg_ssl_on(pg_admin_url):
        require(
            "PostgreSQL with ssl = on",
            "the server at 127.0.0.1:5432 has ssl = off, so sslmode=require cannot be tested",
        )
    from seqsweep.db import ResultStore

    url = pg_url + ("&" if "?" in pg_url else "?") + "sslmode=require"
    store = ResultStore(url)
    try:
        assert store.list_studies() == []
        with store.session() as conn:
            ssl = conn.execute(
                sqlalchemy.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            ).scalar_one()
        assert ssl is True
    finally:
        store.dispose()


def test_tls_to_postgresql_works_after_models_imported_keras(
    pg_admin_url: str, pg_url: str
) -> None:
    """TensorFlow's BoringSSL aborts libpq's first TLS handshake if TF loads first.

    seqsweep's workers create their store (loading psycopg) before a trial
    imports Keras; a process that imports ``models`` first (as a user's script that
    builds a network may) and then Keras must work too. ``models`` knows nothing of
    the DB layer; it loads the driver itself.
    """
    if not _pg_ssl_on(pg_admin_url):
        require("PostgreSQL with ssl = on", "the server at 127.0.0.1:5432 has ssl = off")
    url = pg_url + ("&" if "?" in pg_url else "?") + "sslmode=require"
    script = (
        "import models, keras, sqlalchemy\n"
        "from seqsweep.db import ResultStore\n"
        "store = ResultStore(__import__('sys').argv[1])\n"
        "with store.session() as conn:\n"
        "    print(conn.execute(sqlalchemy.text("
        "'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).scalar_one())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, url],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "True"


def test_sslmode_require_without_server_tls_is_one_masked_line(
    tmp_path: Path, pg_admin_url: str, pg_url: str
) -> None:
    if _pg_ssl_on(pg_admin_url):
        pytest.skip("the server has ssl = on; test_postgresql_sslmode_require_is_really_tls runs")
    url = sqlalchemy.engine.make_url(pg_url).set(password=PASSWORD)
    db = url.render_as_string(hide_password=False) + "?sslmode=require"
    proc = run_cli("scheduler", "migrate", "--db", db, cwd=tmp_path, timeout=60)
    _assert_one_line_error(proc, "cannot use results DB postgresql+psycopg://")
    assert "SSL" in proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr


# -- e: passwords are masked everywhere ----------------------------------------

_LAUNCH0 = ["launch", "--local-workers", "0", "--db", "sqlite:///r.db"]
MASKING = [
    pytest.param(
        ["migrate", "--db", "postgresql://u:hunter2@127.0.0.1:1/x"],
        "postgresql://u:***@127.0.0.1:1/x",
        id="migrate-unreachable-postgresql",
    ),
    pytest.param(
        ["report", "--db", "postgresql://u:hunter2@127.0.0.1:1/x"],
        "postgresql://u:***@127.0.0.1:1/x",
        id="report-unreachable-postgresql",
    ),
    pytest.param(
        ["migrate", "--db", "mysql://u:hunter2@h/x"], "mysql://u:***@h/x", id="unsupported-db"
    ),
    pytest.param(
        ["migrate", "--db", "postgresql+nodriver://u:hunter2@h/x"],
        "u:***@h/x",
        id="missing-db-driver",
    ),
    pytest.param(
        ["report", "--db", "postgresql://u:hunter2@127.0.0.1:notaport/x"],
        "error:",
        id="db-port-not-a-number",
    ),
    pytest.param(
        [*_LAUNCH0, "--broker", "redis://:hunter2@127.0.0.1:notaport/0"],
        "error:",
        id="broker-port-not-a-number",
    ),
    pytest.param(
        [*_LAUNCH0, "--broker", "ftp://u:hunter2@h/x"], "ftp://u:***@h/x", id="unsupported-broker"
    ),
    pytest.param(
        ["report", "--db", "postgresql://u:hunter2@Alpha/x@127.0.0.1:1/x"],
        "postgresql://u:***@127.0.0.1:1/x",
        id="report-password-with-at-and-slash",
    ),
    pytest.param(
        ["report", "--db", "postgresql://u:hunter2#Alpha?@127.0.0.1:1/x"],
        "postgresql://u:***@127.0.0.1:1/x",
        id="report-password-with-hash",
    ),
    pytest.param(
        [*_LAUNCH0, "--broker", "redis://:hunter2@Alpha@127.0.0.1:1/0"],
        "redis://:***@127.0.0.1:1/0",
        id="broker-password-with-at",
    ),
    pytest.param(
        [*_LAUNCH0, "--broker", "amqp://u:hunter2@127.0.0.1:1//"],
        "cannot reach broker amqp://u:***@127.0.0.1:1//",
        id="unreachable-amqp",
    ),
]


@pytest.mark.parametrize(("args", "fragment"), MASKING)
def test_cli_errors_mask_passwords(tmp_path: Path, args: list[str], fragment: str) -> None:
    proc = run_cli("scheduler", *args, cwd=tmp_path, timeout=60)
    _assert_one_line_error(proc, fragment)
    assert "hunter2" not in proc.stdout + proc.stderr
    assert "Alpha" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("password", ["hunter#2", "hunter@Alpha/?#[]:!$&'()*+,;=%25x"])
def test_migrate_never_prints_a_password_with_reserved_characters(
    tmp_path: Path, pg_url: str, password: str
) -> None:
    """PostgreSQL here trusts every login, so the migrate succeeds and prints its URL."""
    url = sqlalchemy.engine.make_url(pg_url)
    db = f"postgresql+psycopg://{url.username}:{password}@{url.host}:{url.port}/{url.database}"
    proc = run_cli("scheduler", "migrate", "--db", db, cwd=tmp_path, timeout=60)
    assert proc.returncode in (0, 2), proc.stderr
    out = proc.stdout + proc.stderr
    assert "***" in out
    assert "hunter" not in out and "Alpha" not in out, out


def test_worker_log_masks_both_urls(
    tmp_path: Path, password_redis: int, pg_admin_url: str, pg_url: str
) -> None:
    """A worker started with secret-bearing URLs never writes the secrets to its log."""
    db = sqlalchemy.engine.make_url(pg_url).set(password="db-" + PASSWORD)  # trust auth
    db_url = db.render_as_string(hide_password=False)
    broker = f"redis://:{PASSWORD}@127.0.0.1:{password_redis}/0"
    log_path = tmp_path / "worker.log"
    with _worker(tmp_path, db_url, broker, log_path) as worker:
        _wait_for_log(log_path, "ready.", 90)
        assert worker.poll() is None
    text = _log(log_path)
    assert PASSWORD not in text  # covers "db-" + PASSWORD too
    assert f"127.0.0.1:{password_redis}" in text


# -- f: a message's sender decides which trial, never how it runs -----------------


def test_forged_headers_and_names_cannot_fail_kill_or_forge_a_trial(tmp_path: Path) -> None:
    """Anyone who can write to the broker can set Celery headers and any payload. The
    worker takes its limits from the study, drops a message whose study name does not
    match the DB, and keeps every logged value on its own line."""
    from datetime import UTC, datetime, timedelta

    from seqsweep.broker import make_app
    from seqsweep.messages import QUEUE, TASK_NAME

    write_tiny_csv(tmp_path / "tiny.csv")
    db_url = f"sqlite:///{tmp_path / 'r.db'}"
    broker_url = f"sqla+sqlite:///{tmp_path / 'b.db'}"
    # The studies' own messages go to another broker: the worker sees only forged ones.
    elsewhere = f"sqla+sqlite:///{tmp_path / 'elsewhere.db'}"
    for study, extra in (
        ("fast", ["--trials", "2", "--pack-size", "1"]),
        ("slow", ["--trials", "1", "--trial-timeout", "3", "--epochs", "3000"]),
    ):
        flags = ["--detach", "--local-workers", "0", "--study", study, *extra]
        proc = run_cli(
            "scheduler", "launch", *flags, "--db", db_url, "--broker", elsewhere, *_tiny(extra),
            cwd=tmp_path, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    ids = dict(_rows(db_url, "SELECT name, id FROM studies"))
    app = make_app(broker_url, main="attacker")
    past = datetime.now(UTC) - timedelta(hours=1)

    def send(study: str, number: int, study_id: int | None = None, **options: object) -> None:
        payload = {"study_id": study_id or ids["fast"], "study": study, "number": number}
        app.send_task(TASK_NAME, args=[payload], queue=QUEUE, **options)

    send("x\nFORGED succeeded", 0)  # a newline in the payload's study name
    send("slow", 0)  # a real study's name on another study's id
    send("fast", 0, task_id="id\nFORGED line", shadow="evil\nFORGED shadow")
    # A kill 0.05 s in and an expiry in the past: both ignored, the trial succeeds.
    send("fast", 0, soft_time_limit=0.01, time_limit=0.05, expires=past)
    # A soft limit of 0.5 s on a study whose limit is 3600 s: ignored.
    send("fast", 1, soft_time_limit=0.5, time_limit=3600, countdown=0)
    # No limit at all on a study whose limit is 3 s: the study's limit applies.
    send("slow", 0, study_id=ids["slow"], soft_time_limit=3000, time_limit=3600)

    log_path = tmp_path / "worker.log"
    home = tmp_path / "worker-home"
    home.mkdir()
    with _worker(home, db_url, broker_url, log_path) as worker:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            sql = "SELECT count(*) FROM trials WHERE status IN ('succeeded', 'failed')"
            if _rows(db_url, sql) == [(3,)]:
                break
            time.sleep(1)
        assert worker.poll() is None, _log(log_path)
    log = _log(log_path)
    got = _rows(
        db_url,
        "SELECT s.name, t.number, t.status, t.attempts, t.error FROM trials t "
        "JOIN studies s ON s.id = t.study_id ORDER BY s.name, t.number",
    )
    assert got[:2] == [("fast", 0, "succeeded", 1, None), ("fast", 1, "succeeded", 1, None)], log
    name, _, status, attempts, error = got[2]
    assert (name, status, attempts) == ("slow", "failed", 1), (got, log)
    assert "ran past 3 s" in error, error
    assert "rejected trial message" in log and "was not sent by seqsweep" in log
    assert "rejected malformed trial message" in log
    for line in log.splitlines():
        assert not line.startswith("FORGED"), line


def _tiny(extra: list[str]) -> list[str]:
    """LAUNCH_TINY, with the caller's --epochs winning."""
    flags = list(LAUNCH_TINY)
    if "--epochs" in extra:
        at = flags.index("--epochs")
        del flags[at : at + 2]
    return flags


# -- g: ways to give a worker its secrets, and none shows them to ps ---------------


def _node(home: Path, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    full = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "--concurrency", "1", *args],
            cwd=home,
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_worker_secrets_never_reach_ps(tmp_path: Path, password_redis: int, pg_url: str) -> None:
    broker = f"redis://:{PASSWORD}@127.0.0.1:{password_redis}/0"
    db = sqlalchemy.engine.make_url(pg_url).set(password="db-" + PASSWORD)  # trust auth
    db_url = db.render_as_string(hide_password=False)
    (tmp_path / "db-url").write_text(db_url + "\n")
    (tmp_path / "db-url").chmod(0o600)
    env = {"MY_BROKER": broker}
    for var in ("SEQSWEEP_DB_URL", "SEQSWEEP_BROKER_URL"):
        env[var] = ""
    runs = {
        # The README's way: the secrets never were in argv.
        "env-and-file": ["--broker-env", "MY_BROKER", "--db-file", str(tmp_path / "db-url")],
        # The careless way: a warning, and the node hides them from then on.
        "flags": ["--broker", broker, "--db", db_url],
    }
    for name, args in runs.items():
        log = tmp_path / f"{name}.log"
        proc = _node(tmp_path, args, env, log)
        try:
            _wait_for_log(log, "ready.", 90)
            assert proc.poll() is None, _log(log)
            leaks = _workers_with_secret_in_argv(PASSWORD)
        finally:
            _stop(proc)
        assert not leaks, f"{name}: ps shows the password: {leaks[0]}"
        text = _log(log)
        assert PASSWORD not in text, name
        warned = "warning: a password in --db and --broker shows in `ps`" in text
        assert warned == (name == "flags"), text
