"""Enqueue and report at scale: ``launch --trials N --detach``, then ``report``, timed.

    python bench/enqueue.py                   # embedded broker + SQLite, then Redis + PostgreSQL
    python bench/enqueue.py --no-servers      # embedded only

The quick half of ``bench/overhead.py`` (which also measures the per-trial overhead),
repeated ``--repeat`` times per setup; the table shows the best and the median run.
``report`` runs twice: first on results it has not ranked yet (the importance is
computed), then again (the importance comes from the cache).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import overhead
from common import env, machine, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-servers", action="store_true", help="skip Redis + PostgreSQL")
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--redis", default=overhead.REDIS_URL, help="a Redis DB it may flush")
    args = parser.parse_args()
    overhead.REDIS_URL = args.redis
    setups = [("embedded (SQLite + SQLite broker)", [])]
    if not args.no_servers:
        setups.append(("Redis + PostgreSQL", ["--db", overhead.PG_URL, "--broker", args.redis]))
    rows = []
    with tempfile.TemporaryDirectory(prefix="seqsweep-enqueue-") as tmp:
        home = Path(tmp)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(107, 5)).astype(np.float32)
        np.savez(home / "tiny.npz", X=x, y=(x[:, 0] > 0).astype(np.int64))
        for label, urls in setups:
            enqueue, report, cached = [], [], []
            for _ in range(args.repeat):
                seconds, study, db = overhead._enqueue(
                    home / uuid.uuid4().hex[:8], urls, args.trials
                )
                overhead._finish_all(db, study)
                enqueue.append(seconds)
                report.append(_report(home, db, study))
                cached.append(_report(home, db, study))
                print(label, *(round(v[-1], 2) for v in (enqueue, report, cached)), flush=True)
            rows.append([label, args.trials, *(_best_median(v) for v in (enqueue, report, cached))])
    print()
    print(machine())
    header = ["setup", "trials", "launch --detach s", "report s", "report s, cached importance"]
    print(table(header, rows))


def _best_median(values: list[float]) -> str:
    return f"{min(values):.2f} (median {statistics.median(values):.2f})"


def _report(home: Path, db: str, study: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "scheduler", "report", "--study", study, "--db", db],
        cwd=home, env=env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
