"""``seqsweep-worker`` (or ``python -m worker``): start a Celery worker node that trains trials.

Checks both URLs first, so a typo fails in seconds with one line instead of a
worker that retries forever, then hands over to Celery's own worker.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

from seqsweep.broker import check_broker, check_broker_url
from seqsweep.cli_support import OneLineParser, bounded, hide_passwords_from_ps, run_cli
from seqsweep.db import ResultStore
from seqsweep.errors import UsageError
from seqsweep.files import open_log, read_input
from seqsweep.messages import QUEUE
from seqsweep.settings import BOUNDS, PARENT_ENV, short_value, stop_grace_seconds
from seqsweep.urls import (
    BROKER_ENV,
    DB_ENV,
    DEFAULT_BROKER_URL,
    DEFAULT_DB_URL,
    resolve_broker_url,
    resolve_db_url,
)
from seqsweep.version import __version__
from worker.config import worker_config
from worker.gpus import machine_gpus, parse_gpus, share_gpus

#: Celery's log levels.
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description=__doc__)
    parser.add_argument("--version", action="version", version=f"seqsweep {__version__}")
    parser.add_argument(
        "--broker", help=f"broker URL (default: ${BROKER_ENV} or {DEFAULT_BROKER_URL})"
    )
    parser.add_argument("--db", help=f"results DB URL (default: ${DB_ENV} or {DEFAULT_DB_URL})")
    # Ways to pass a URL that holds a password without showing it to `ps`.
    parser.add_argument("--db-env", metavar="NAME", help="read the results DB URL from $NAME")
    parser.add_argument("--broker-env", metavar="NAME", help="read the broker URL from $NAME")
    parser.add_argument(
        "--db-file", type=Path, metavar="PATH", help="read the results DB URL from a file"
    )
    parser.add_argument(
        "--broker-file", type=Path, metavar="PATH", help="read the broker URL from a file"
    )
    parser.add_argument(
        "--concurrency",
        type=bounded("concurrency"),
        help="trials trained at once, one pool process each (default: cores; with --gpus: "
        "the GPUs times --per-gpu)",
    )
    parser.add_argument(
        "--gpus",
        metavar="all|0,2",
        help="pin pool processes one GPU each, through CUDA_VISIBLE_DEVICES: all GPUs, or "
        "these indices (as nvidia-smi numbers them)",
    )
    parser.add_argument(
        "--per-gpu",
        type=bounded("per_gpu"),
        metavar="K",
        help="with --gpus: pool processes per GPU (default: 1)",
    )
    parser.add_argument("--loglevel", default="INFO", help="Celery log level (default: INFO)")
    parser.add_argument("--logfile", help="write the worker log here instead of stderr")
    return parser


def main(argv: list[str] | None = None, prog: str = "seqsweep-worker") -> int:
    """The ``seqsweep-worker`` console script; ``python -m worker`` passes its own ``prog``."""
    if argv is None:
        hide_passwords_from_ps(sys.argv[1:])
    args = _parser(prog).parse_args(argv)
    return run_cli(lambda: _start(args))


def _url(args: argparse.Namespace, name: str) -> str | None:
    """The URL given by ``--NAME``, ``--NAME-env`` or ``--NAME-file`` (one of them at most)."""
    given = {
        f"--{name}": getattr(args, name),
        f"--{name}-env": getattr(args, f"{name}_env"),
        f"--{name}-file": getattr(args, f"{name}_file"),
    }
    chosen = [flag for flag, value in given.items() if value is not None]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)} both give the {name} URL; pass one of them")
    if not chosen or chosen[0] == f"--{name}":
        return getattr(args, name)  # type: ignore[no-any-return]
    if chosen[0].endswith("-env"):
        variable = getattr(args, f"{name}_env")
        url = os.environ.get(variable, "").strip()
        if not url:
            raise UsageError(f"--{name}-env {variable}: ${variable} is not set or empty")
        return url
    path = getattr(args, f"{name}_file")
    text = read_input(path, f"--{name}-file", 64 * 1024).decode("utf-8", errors="replace")
    url = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not url:
        raise UsageError(f"--{name}-file {path}: the file is empty; write the URL into it")
    return url


def _start(args: argparse.Namespace) -> int:
    db_url = resolve_db_url(_url(args, "db"))
    broker_url = resolve_broker_url(_url(args, "broker"))
    check_broker_url(broker_url, db_url)
    if args.loglevel.upper() not in _LOG_LEVELS:
        raise UsageError(
            f"--loglevel {short_value(args.loglevel)}: use one of {', '.join(_LOG_LEVELS)}"
        )
    concurrency = _concurrency(args)
    if args.logfile:  # checked (and created private, never through a symlink) up front
        os.close(open_log(Path(args.logfile)))
    # Validate, create or migrate the schema, then drop the engine: pool
    # processes are forked from this one and must open their own connections.
    ResultStore(db_url).dispose()
    # Pool processes read both URLs from the environment, never from argv,
    # where `ps` would show a password to every user of the machine.
    os.environ[DB_ENV] = db_url
    os.environ[BROKER_ENV] = broker_url
    _share_cores(concurrency)
    worker_config()  # a bad $SEQSWEEP_LEASE_S stops the node here, in one line
    _stop_with_launch(stop_grace_seconds())

    # Imported only now: the app reads the broker URL set above (one configuration).
    from worker.celery_app import app

    check_broker(app, broker_url)
    celery_args = [
        "worker",
        "--pool=prefork",
        f"--concurrency={concurrency}",
        f"--loglevel={args.loglevel}",
        f"--queues={QUEUE}",
        f"--hostname=seqsweep-{os.getpid()}@%h",
        "--without-mingle",
    ]
    if args.logfile:
        celery_args.append(f"--logfile={args.logfile}")
    app.worker_main(celery_args)
    return 0


def _concurrency(args: argparse.Namespace) -> int:
    """Pool processes to start; with ``--gpus``, K per GPU, handed their GPUs (worker.gpus)."""
    if args.gpus is None:
        if args.per_gpu is not None:
            raise UsageError("--per-gpu needs --gpus: e.g. --gpus all --per-gpu 2")
        if args.concurrency is not None:
            return int(args.concurrency)
        return min(os.cpu_count() or 1, BOUNDS["concurrency"].high)
    if args.concurrency is not None:
        raise UsageError(
            "--concurrency and --gpus both set the pool size; with --gpus use --per-gpu K"
        )
    gpus = parse_gpus(args.gpus, machine_gpus())
    per_gpu = 1 if args.per_gpu is None else int(args.per_gpu)
    total = len(gpus) * per_gpu
    bound = BOUNDS["concurrency"]
    if total > bound.high:
        raise UsageError(
            f"--gpus {args.gpus} --per-gpu {per_gpu}: {total} pool processes, more than "
            f"{bound.high}; lower --per-gpu"
        )
    share_gpus(gpus)
    return total


def _stop_with_launch(grace_s: float) -> None:
    """If ``launch`` started this node, stop once it is gone, even killed with -9.

    The kernel's parent-death signal (SIGTERM, asked for by ``launch``) starts Celery's
    warm shutdown, which waits for running trials however long they take; and it fires
    only on Linux. So a thread watches for the parent itself: once it is gone the node
    gets SIGTERM, and ``grace_s`` later the node and its pool processes are killed,
    as ``launch`` does when a study ends. Their trials come back through their leases.
    """
    text = os.environ.pop(PARENT_ENV, "")  # not inherited by anything this node starts
    if not text.isdigit():
        return
    parent = int(text)

    def kill_all() -> None:
        # launch starts the node in its own process group, with its pool processes.
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        kill_all()

    if os.getppid() != parent:  # launch died before this node got here
        kill_all()
    threading.Thread(target=watch, name="seqsweep-stop-with-launch", daemon=True).start()


def _share_cores(concurrency: int) -> None:
    """Give each pool process its share of the machine, so N trials do not oversubscribe it.

    Set before any pool process imports a backend; values the user exported win.
    Several pool processes may share one GPU, so none may grab all its memory
    up front, as TensorFlow and JAX do by default.
    """
    share = str(max(1, (os.cpu_count() or 1) // concurrency))
    defaults = {
        "TF_NUM_INTRAOP_THREADS": share,
        "OMP_NUM_THREADS": share,
        "TF_NUM_INTEROP_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)


if __name__ == "__main__":
    sys.exit(main(prog="python -m worker"))
