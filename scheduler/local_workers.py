"""Worker processes that ``launch`` starts on this machine and stops when the study ends."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from seqsweep.urls import BROKER_ENV, DB_ENV

STOP_TIMEOUT_S = 30
_PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> None:
    """In the child, before exec: get SIGTERM when ``launch`` dies, even by kill -9.

    Linux only; elsewhere a killed launch leaves its workers running, which is
    harmless: they finish their trials and the next launch reuses the study.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class LocalWorkers:
    """One ``python -m worker`` node with ``count`` pool processes, in its own session.

    Its own process session lets :meth:`stop` end the node and every pool
    process together, and keeps a Ctrl-C in the terminal from killing trials
    mid-write: ``launch`` catches it and stops the workers itself.
    """

    def __init__(self, count: int, db_url: str, broker_url: str, log_path: Path) -> None:
        self.log_path = log_path
        self._env = dict(os.environ)
        # URLs travel in the environment: argv is visible to every user via `ps`.
        self._env[DB_ENV] = db_url
        self._env[BROKER_ENV] = broker_url
        self._count = count
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        args = ["--concurrency", str(self._count), "--loglevel", "INFO"]
        return subprocess.Popen(
            [sys.executable, "-m", "worker", *args],
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )

    def restart(self) -> None:
        """Start a new node after this one exited; kill pool processes it left behind.

        Their trials' leases then expire and recovery requeues them, counting
        the lost run as an attempt.
        """
        self._signal(signal.SIGKILL)
        self._proc.wait()
        self._proc = self._start()

    def exit_code(self) -> int | None:
        """Return the node's exit code if it has exited, else None."""
        return self._proc.poll()

    def stop(self) -> None:
        """Ask for a warm shutdown, then kill whatever is left of the process group."""
        if self._proc.poll() is None:
            # Only the node: it stops its pool processes itself after their trials.
            self._proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while self._proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        self._signal(signal.SIGKILL)  # pool processes that outlived their parent
        self._proc.wait()
        self._log.close()

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)
