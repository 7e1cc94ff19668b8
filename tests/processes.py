"""Real processes for the fault tests: worker nodes, a private Redis, a background launch."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy

from tests.conftest import REPO, require

#: Leases short enough that a killed worker's trial is requeued within seconds.
FAST_LEASE = {"SEQSWEEP_LEASE_S": "4"}


def rows(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sqlalchemy.text(sql))]
    finally:
        engine.dispose()


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for var in ("SEQSWEEP_DB_URL", "SEQSWEEP_BROKER_URL"):
        if var not in extra:
            env.pop(var, None)
    return env


def wait_until(predicate: Any, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


class Proc:
    """A command in its own process group, its output in a log file."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in wait()
        self.popen = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        """kill -9 the whole process group: the machine is gone."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(30)
        self.kill9()

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout)
        self._log.close()
        return code

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def worker_node(home: Path, name: str, db: str, broker: str, concurrency: int = 1) -> Proc:
    env = child_env(SEQSWEEP_DB_URL=db, SEQSWEEP_BROKER_URL=broker, **FAST_LEASE)
    return Proc(
        [sys.executable, "-m", "worker", "--concurrency", str(concurrency), "--loglevel", "INFO"],
        home,
        env,
        home / f"{name}.log",
    )


def launch(home: Path, name: str, *args: str, **env: str) -> Proc:
    return Proc(
        [sys.executable, "-m", "scheduler", "launch", *args],
        home,
        child_env(**FAST_LEASE, **env),
        home / f"{name}.log",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private redis-server that a test may stop and restart at will."""

    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.home = home
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Proc | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.home)]
        try:
            self.proc = Proc(args, self.home, dict(os.environ), self.home / "redis.log")
        except FileNotFoundError as exc:
            require("redis-server", str(exc))
        wait_until(self.ping, 10, f"redis-server on port {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill9()
            self.proc = None
