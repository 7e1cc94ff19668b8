"""Overhead: seqsweep's own cost per trial, enqueuing 10,000 trials, reporting on 10,000.

    python bench/overhead.py                  # embedded broker + SQLite, then Redis + PostgreSQL
    python bench/overhead.py --no-servers     # embedded only

Per-trial overhead: one local worker process trains 200 trials of 1 epoch on 64 rows.
From the first claim to the last result written, everything that is not a trial's own
``duration_s`` (model build, fit, evaluate) is seqsweep and Celery: dequeue, claim, lease
thread, result and epoch writes, ack, and the wait for the next message. The gaps
between one trial's end and the next one's start split that figure: the median gap
(the steady cost per message) and the pauses over 2 s, whose share per trial is
printed beside it. In an unpacked run such a pause is most likely a pool process
recycled for memory that imports Keras and warms up again (the worker log says so;
the bench's folder, logs included, is deleted with the run); in a packed one, a pack's
build can be one.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import sqlalchemy
from common import REPO, env, launch, machine, table

PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/14"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-servers", action="store_true", help="skip Redis + PostgreSQL")
    parser.add_argument("--trials", type=int, default=200, help="for the per-trial overhead")
    parser.add_argument("--big", type=int, default=10_000, help="for enqueue and report")
    parser.add_argument("--pack-sizes", type=int, nargs="+", default=[1, 32], metavar="K")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seqsweep-overhead-") as tmp:
        home = Path(tmp)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(107, 5)).astype(np.float32)  # 64 training rows
        np.savez(home / "tiny.npz", X=x, y=(x[:, 0] > 0).astype(np.int64))
        setups = [("embedded (SQLite + SQLite broker)", [])]
        if not args.no_servers:
            setups.append(("Redis + PostgreSQL", ["--db", PG_URL, "--broker", REDIS_URL]))
        per_trial, bulk = [], []
        for label, urls in setups:
            for pack in args.pack_sizes:
                gaps = _per_trial(home / f"t{uuid.uuid4().hex[:6]}", urls, args.trials, pack)
                per_trial.append([label, pack, args.trials, *gaps])
                print(per_trial[-1], flush=True)
            enqueue_s, study, db = _enqueue(home / f"e{uuid.uuid4().hex[:6]}", urls, args.big)
            _finish_all(db, study)
            report_s, in_process_s = _report(home, db, study)
            bulk.append([label, args.big, round(enqueue_s, 2), round(report_s, 2),
                         round(in_process_s, 2)])  # fmt: skip
            print(bulk[-1], flush=True)
    print()
    print(machine())
    header = ["setup", "pack size", "trials", "overhead ms per trial", "median gap ms",
              "pauses over 2 s", "pauses, ms per trial"]  # fmt: skip
    print(table(header, per_trial))
    print()
    header = ["setup", "trials", "launch --detach s", "report s (command)", "report s (in process)"]
    print(table(header, bulk))


def _per_trial(home: Path, urls: list[str], trials: int, pack: int) -> list[float | int]:
    """Overhead per trial, the median gap between trials, and the pauses over 2 s (count,
    and their share per trial), in ms."""
    home.mkdir()
    study = f"overhead-{pack}-{home.name}"
    run = launch(
        home, "--trials", str(trials), "--epochs", "1", "--batch-size", "64",
        "--data", str(home.parent / "tiny.npz"), "--local-workers", "1",
        "--pack-size", str(pack), "--study", study, *urls,
    )  # fmt: skip
    assert run["report"]["counts"]["succeeded"] == trials, run["report"]["counts"]
    db = urls[1] if urls else f"sqlite:///{home / 'seqsweep.db'}"
    with sqlalchemy.create_engine(db).connect() as conn:
        rows = conn.execute(
            sqlalchemy.text(
                "SELECT t.started_at, t.finished_at, t.duration_s FROM trials t "
                "JOIN studies s ON s.id = t.study_id WHERE s.name = :n"
            ),
            {"n": study},
        ).all()
    span = (max(_t(r[1]) for r in rows) - min(_t(r[0]) for r in rows)).total_seconds()
    training = sum(r[2] for r in rows)
    # A pack's members share their times, so its gaps within are zero or negative.
    spans = sorted((_t(r[0]), _t(r[1])) for r in rows)
    gaps = [max(0.0, (b[0] - a[1]).total_seconds()) for a, b in itertools.pairwise(spans)]
    pauses = [g for g in gaps if g > 2.0]
    return [
        round((span - training) / len(rows) * 1000, 1),
        round(statistics.median(gaps) * 1000, 1),
        len(pauses),
        round(sum(pauses) / len(rows) * 1000, 1),
    ]


def _t(value):  # SQLite hands back text, PostgreSQL datetimes
    from datetime import datetime

    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _enqueue(home: Path, urls: list[str], n: int) -> tuple[float, str, str]:
    home.mkdir()
    study = f"big-{home.name}"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "scheduler", "launch", "--trials", str(n), "--detach",
         "--study", study, "--data", str(home.parent / "tiny.npz"), *urls],
        cwd=home, env=env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    db = urls[1] if urls else f"sqlite:///{home / 'seqsweep.db'}"
    if urls:  # drop the 10,000 messages: nothing will run them
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
    return wall, study, db


def _finish_all(db: str, study: str) -> None:
    """Mark every trial succeeded with made-up metrics, as a finished study would be."""
    with sqlalchemy.create_engine(db).begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "UPDATE trials SET status = 'succeeded', attempts = 1, duration_s = 1.0, "
                "val_accuracy = 0.5 + (number % 97) / 200.0, val_loss = 0.7, "
                "test_accuracy = 0.5, test_loss = 0.7 "
                "WHERE study_id = (SELECT id FROM studies WHERE name = :n)"
            ),
            {"n": study},
        )


def _report(home: Path, db: str, study: str) -> tuple[float, float]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "scheduler", "report", "--study", study, "--db", db],
        cwd=home, env=env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    command = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    code = (
        f"import sys, time; sys.path.insert(0, {str(REPO)!r})\n"
        "from scheduler.report import study_report; from seqsweep.db import ResultStore\n"
        f"store = ResultStore({db!r}); study_report(store, {study!r})\n"  # warm imports, pool
        f"t = time.perf_counter(); study_report(store, {study!r}); print(time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env(), capture_output=True, text=True, check=True
    )
    return command, float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
