"""Worker processes that ``launch`` starts on this machine and stops when the study ends."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from seqsweep.files import open_log
from seqsweep.settings import PARENT_ENV, stop_grace_seconds
from seqsweep.urls import BROKER_ENV, DB_ENV

_PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> None:
    """In the child, before exec: get SIGTERM when ``launch`` dies, even by kill -9.

    Linux only; elsewhere a killed launch leaves its workers running, which is
    harmless: they finish their trials and the next launch reuses the study.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _package_root() -> Path:
    """The folder that holds this copy of seqsweep's packages (scheduler, worker, models)."""
    return Path(__file__).resolve().parent.parent


def _site_dirs() -> set[Path]:
    dirs = {*site.getsitepackages(), site.getusersitepackages()}
    dirs |= {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    return {Path(d).resolve() for d in dirs}


def worker_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The environment of local workers: ``base``, with seqsweep's own folder on the path.

    Workers run with ``python -P`` in an empty folder (see :class:`LocalWorkers`), so
    nothing in the caller's folder is importable; seqsweep itself must still be. An
    installed seqsweep is found in its site folder, and PYTHONPATH keeps its order;
    a checkout or an editable install is put first on PYTHONPATH, so workers run the
    very code this ``launch`` runs.
    """
    env = dict(base)
    root = _package_root()
    if root not in _site_dirs():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), base.get("PYTHONPATH")]))
    return env


class LocalWorkers:
    """One worker node with ``count`` pool processes, in its own session and its own folder.

    Its own process session lets :meth:`stop` end the node and every pool
    process together, and keeps a Ctrl-C in the terminal from killing trials
    mid-write: ``launch`` catches it and stops the workers itself.

    The node is ``python -P -m worker`` in a fresh, empty folder: seqsweep's packages
    have generic names, and ``python -m`` puts the working folder first on
    ``sys.path``, as Celery does while it imports task modules. Started in the caller's
    folder, a ``worker.py`` or ``models.py`` of the user's project would be imported
    instead of seqsweep's.
    """

    def __init__(self, count: int, db_url: str, broker_url: str, log_path: Path) -> None:
        self.log_path = log_path
        self._env = worker_environment(os.environ)
        # URLs travel in the environment: argv is visible to every user via `ps`.
        self._env[DB_ENV] = db_url
        self._env[BROKER_ENV] = broker_url
        self._env[PARENT_ENV] = str(os.getpid())  # the node stops once this process is gone
        self._count = count
        self._home = tempfile.mkdtemp(prefix="seqsweep-workers-")
        self._log = os.fdopen(open_log(log_path), "ab")  # closed in stop()
        self._proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        args = ["--concurrency", str(self._count), "--loglevel", "INFO"]
        return subprocess.Popen(
            [sys.executable, "-P", "-m", "worker", *args],
            cwd=self._home,
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
            deadline = time.monotonic() + stop_grace_seconds()
            while self._proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        self._signal(signal.SIGKILL)  # pool processes that outlived their parent
        self._proc.wait()
        self._log.close()
        shutil.rmtree(self._home, ignore_errors=True)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)
