"""The scaling curve on the namespace cluster: trials/s for 1 to 16 worker processes.

    sudo python bench/cluster.py                 # 1, 2, 4, 8, 16 processes
    sudo python bench/cluster.py --workers 1 4   # some points only

Runs on tests/cluster.py's cluster (root, network namespaces): its own PostgreSQL and
Redis on a private bridge, 4 hosts. Trials are tiny (1 epoch, 64 training rows, no
packing), so the system is measured and not Keras. For each point the processes are
spread over the hosts (1: 1x1, 2: 2x1, 4: 4x1, 8: 4x2, 16: 4x4), a warm-up study
lets every pool process import TensorFlow, then a measured study is enqueued
(``launch --detach``) and timed until its last trial is recorded.

Printed per point: trials/s; the PostgreSQL connections open and active (sampled
from pg_stat_activity); CPU seconds of the workers, PostgreSQL and Redis over the
measured window (from /proc, so they are measured, not estimated) and how busy the
machine's cores were. Then, for the largest point, what PostgreSQL spent its time on
(pg_stat_statements) and what Redis did (INFO commandstats).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy
from common import env, machine, table

from tests.cluster import Cluster, Host, cluster, missing

HOSTS = 4
TICKS = os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--per-process", type=int, default=20, help="measured trials per process")
    parser.add_argument("--min-trials", type=int, default=30, help="measured trials at least")
    args = parser.parse_args()
    problem = missing()
    if problem:
        raise SystemExit(f"cannot build the namespace cluster: {problem}")
    points = []
    with cluster() as net:
        data = net.scheduler_dir / "tiny.npz"
        rng = np.random.default_rng(0)
        x = rng.normal(size=(107, 5)).astype(np.float32)  # 64 training rows
        np.savez(data, X=x, y=(x[:, 0] > 0).astype(np.int64))
        for number, workers in enumerate(args.workers, start=1):
            trials = max(args.min_trials, min(args.per_process * workers, 160))
            last = number == len(args.workers)
            points.append(run_point(net, number, workers, trials, profile=last))
            print(f"{workers} processes: {points[-1]['trials_s']:.2f} trials/s", flush=True)
    print(f"\n{machine()}; {HOSTS} hosts in network namespaces; 1 epoch, 64 rows, no packing\n")
    header = ["worker processes", "hosts x processes", "trials", "wall s", "trials/s"]
    header += ["PG connections (max open / active)", "CPU s: workers / PostgreSQL / Redis"]
    header += ["machine busy (of 2 cores)"]
    print(
        table(
            header,
            [
                [
                    p["workers"],
                    p["layout"],
                    p["trials"],
                    round(p["wall_s"], 1),
                    round(p["trials_s"], 2),
                    f"{p['pg_open']} / {p['pg_active']}",
                    " / ".join(f"{p['cpu'][k]:.1f}" for k in ("workers", "postgres", "redis")),
                    f"{p['busy']:.2f}",
                ]
                for p in points
            ],
        )
    )
    last = points[-1]
    per = last["trials"]
    print(f"\nPostgreSQL at {last['workers']} processes (pg_stat_statements, top by time):\n")
    print(
        table(
            ["statement", "calls per trial", "total ms", "mean ms"],
            [[q, round(c / per, 2), round(t, 1), round(t / c, 3)] for q, c, t in last["pg"]],
        )
    )
    if last["profile"]:
        total = sum(last["profile"].values())
        print(f"\nWhere a worker host's CPU went at {last['workers']} processes (py-spy):\n")
        print(
            table(
                ["stack contains", "samples", "share"],
                [[k, n, f"{n / total:.1%}"] for k, n in last["profile"].items()],
            )
        )
    print(f"\nRedis at {last['workers']} processes (INFO commandstats, top by time):\n")
    print(
        table(
            ["command", "calls per trial", "total ms", "mean us"],
            [
                [c, round(n / per, 2), round(u / 1000, 1), round(u / n, 1)]
                for c, n, u in last["redis"]
            ],
        )
    )


def layout(workers: int) -> list[int]:
    """Processes per host: fill every host before giving any a second process."""
    hosts = min(HOSTS, workers)
    each = math.ceil(workers / hosts)
    return [each] * hosts


def run_point(
    net: Cluster, number: int, workers: int, trials: int, profile: bool
) -> dict[str, Any]:
    db = net.new_db(f"bench{number}")
    broker = net.broker_url(number)
    admin = sqlalchemy.create_engine(db, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
    per_host = layout(workers)
    hosts = [net.add_host(f"b{number}h{i}") for i in range(len(per_host))]
    for host, processes in zip(hosts, per_host, strict=True):
        host.start_worker(db, broker, processes)
    try:
        for host in hosts:
            deadline = time.monotonic() + 120
            while not host.ready():
                if time.monotonic() > deadline:
                    raise SystemExit(f"{host.name} never became ready:\n{host.output()[-2000:]}")
                time.sleep(0.5)
        # Every pool process imports TensorFlow on its first trial: not part of the curve.
        study(net, db, broker, "warmup", 3 * workers)
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_stat_statements_reset()"))
        net_redis = net.redis_client()
        net_redis.config_resetstat()
        sampler = ConnectionSampler(admin, f"bench{number}")
        before = cpu_times(net, hosts)
        busy_before = machine_ticks()
        sampler.start()
        profiler = Profiler(hosts[0]) if profile else None
        wall = study(net, db, broker, "measured", trials)
        sampler.stop()
        spent = profiler.result() if profiler else {}
        after = cpu_times(net, hosts)
        busy_after = machine_ticks()
        with admin.connect() as conn:
            pg = [
                (_short(q), int(c), float(t))
                for q, c, t in conn.execute(
                    sqlalchemy.text(
                        "SELECT query, calls, total_exec_time FROM pg_stat_statements s "
                        "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
                        " AND query NOT LIKE '%pg_stat%'"  # the benchmark's own queries
                        " AND query NOT LIKE 'SELECT status FROM studies%'"
                        " ORDER BY total_exec_time DESC LIMIT 8"
                    )
                )
            ]
        stats = net_redis.info("commandstats")
        redis_rows = sorted(
            (
                (k.removeprefix("cmdstat_"), int(v["calls"]), int(v["usec"]))
                for k, v in stats.items()
            ),
            key=lambda r: -r[2],
        )[:6]
        busy = (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1])
        return {
            "workers": workers,
            "layout": f"{len(per_host)} x {per_host[0]}",
            "trials": trials,
            "wall_s": wall,
            "trials_s": trials / wall,
            "pg_open": sampler.max_open,
            "pg_active": sampler.max_active,
            "cpu": {k: (after[k] - before[k]) / TICKS for k in before},
            "busy": busy * (os.cpu_count() or 1),
            "pg": pg,
            "redis": redis_rows,
            "profile": spent,
        }
    finally:
        admin.dispose()
        for host in hosts:
            host.destroy()
        net.hosts = [h for h in net.hosts if h not in hosts]


def study(net: Cluster, db: str, broker: str, name: str, trials: int) -> float:
    """Enqueue a study and wait until it completes; return the seconds from enqueue to done."""
    args = [sys.executable, "-m", "scheduler", "launch", "--detach", "--study", name]
    args += ["--trials", str(trials), "--local-workers", "0", "--pack-size", "1"]
    args += ["--data", "tiny.npz", "--epochs", "1", "--batch-size", "8", "--seed", "1"]
    args += ["--db", db, "--broker", broker]
    started = time.perf_counter()
    proc = subprocess.run(
        args, cwd=net.scheduler_dir, env=env(), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"launch failed:\n{proc.stderr[-3000:]}")
    engine = sqlalchemy.create_engine(db)
    sql = sqlalchemy.text("SELECT status FROM studies WHERE name = :n")
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(sql, {"n": name}).scalar_one() != "running":
                    return time.perf_counter() - started
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise SystemExit(f"study {name} did not complete within 900 s")


#: What a sampled stack is charged to: the first of these found in it, searched in order.
PROFILE_CATEGORIES = (
    ("Keras / TensorFlow (build, fit, evaluate)", ("keras", "tensorflow")),
    ("results DB (SQLAlchemy, psycopg)", ("sqlalchemy", "psycopg")),
    ("broker (kombu, redis-py)", ("kombu", "redis/")),
    ("Celery", ("celery", "billiard")),
)


SPY = ("py-spy", "record", "--subprocesses", "--nonblocking", "--format", "raw", "--rate", "50")


class Profiler:
    """py-spy on a host's worker node and its pool processes, while the study runs."""

    def __init__(self, host: Host, seconds: int = 20) -> None:
        self.out = host.cluster.folder / f"py-spy-{host.name}.txt"
        pids = sorted(
            p for p in host.pids() if b"worker" in _cmdline(p) and b"python" in _cmdline(p)
        )
        self.proc = None
        if shutil.which("py-spy") and pids:
            self.proc = subprocess.Popen(
                [*SPY, "--pid", str(pids[0]), "--duration", str(seconds), "-o", str(self.out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def result(self) -> dict[str, int]:
        """Samples per category (stacks collapsed by py-spy: ``frame;frame;... count``)."""
        if self.proc is None:
            return {}
        self.proc.wait(120)
        spent = {name: 0 for name, _ in PROFILE_CATEGORIES} | {"other": 0}
        for line in self.out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            name = next(
                (n for n, keys in PROFILE_CATEGORIES if any(k in stack for k in keys)), "other"
            )
            spent[name] += int(count)
        return spent


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class ConnectionSampler:
    """The study DB's connections in pg_stat_activity, sampled every 0.2 s in a thread."""

    def __init__(self, admin: sqlalchemy.Engine, database: str) -> None:
        self.admin, self.database = admin, database
        self.max_open = self.max_active = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        sql = sqlalchemy.text(
            "SELECT count(*), count(*) FILTER (WHERE state <> 'idle') FROM pg_stat_activity "
            "WHERE datname = :d AND pid <> pg_backend_pid()"
        )
        with self.admin.connect() as conn:
            while not self._stop.wait(0.2):
                opened, active = conn.execute(sql, {"d": self.database}).one()
                self.max_open = max(self.max_open, int(opened))
                self.max_active = max(self.max_active, int(active))


def _proc_ticks(pid: int) -> int:
    """CPU ticks of a process and of its children that it has reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def cpu_times(net: Cluster, hosts: list[Host]) -> dict[str, int]:
    """CPU ticks used so far by the worker hosts, PostgreSQL and Redis."""
    postmaster = int((net.folder / "pg" / "postmaster.pid").read_text().split()[0])
    redis_pid = int(net.redis_client().info("server")["process_id"])
    worker_pids = [pid for host in hosts for pid in host.pids()]
    return {
        "workers": sum(_proc_ticks(p) for p in worker_pids),
        "postgres": _proc_ticks(postmaster) + sum(_proc_ticks(p) for p in _children(postmaster)),
        "redis": _proc_ticks(redis_pid),
    }


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


def _short(query: str) -> str:
    text = " ".join(query.split())
    return (text[:90] + "...") if len(text) > 90 else text


if __name__ == "__main__":
    main()
