"""Many machines, simulated: worker hosts in network namespaces (tests/cluster.py).

Each host has its own network stack, hostname, empty working folder and HOME, and
cannot see the scheduler's folder; it gets only the broker and DB URLs. On that
cluster: a study over 4 hosts x 2 processes, a host that vanishes, a host cut off
for longer than its lease and then back, the broker unreachable from every host for
30 s, and hosts whose clocks are 2 hours wrong. Every test then reads the results
DB: each trial counted exactly once.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.cluster import Cluster, Host, cluster, missing
from tests.conftest import require, write_tiny_csv
from tests.processes import Proc, child_env, rows, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEASE_S = 3.0
EPOCHS = 1
_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def net() -> Iterator[Cluster]:
    problem = missing()
    if problem is not None:
        require("a namespace cluster (root, ip netns)", problem)
    with cluster({"SEQSWEEP_LEASE_S": str(LEASE_S)}) as made:
        write_tiny_csv(made.scheduler_dir / "tiny.csv", rows=200)
        yield made


@dataclass
class Study:
    """One study on the cluster: its own database and Redis database."""

    net: Cluster
    name: str
    db: str
    broker: str

    def launch(self, trials: int, *extra: str) -> Proc:
        """``launch`` on the scheduler's machine (the root namespace), with no local workers."""
        args = [sys.executable, "-m", "scheduler", "launch", "--study", self.name]
        args += ["--trials", str(trials), "--local-workers", "0", "--pack-size", "1"]
        args += ["--data", "tiny.csv", "--target", "label", "--epochs", str(EPOCHS)]
        args += ["--batch-size", "8", "--seed", "7", "--db", self.db, "--broker", self.broker]
        log = self.net.folder / "logs" / f"launch-{self.name}.log"
        return Proc([*args, *extra], self.net.scheduler_dir, child_env(), log)

    def hosts(self, names: list[str], concurrency: int = 1, **skews: int) -> list[Host]:
        return self.net.start_hosts(names, self.db, self.broker, concurrency, skews)

    def trials(self) -> list[tuple[Any, ...]]:
        return rows(self.db, "SELECT number, status, attempts, worker FROM trials ORDER BY number")

    def running_on(self, host: str) -> list[int]:
        sql = f"SELECT number FROM trials WHERE status = 'running' AND worker LIKE '{host}:%'"
        try:
            return [r[0] for r in rows(self.db, sql)]
        except Exception:  # the schema is not there until launch made it
            return []

    def status_of(self, number: int) -> str:
        return str(rows(self.db, f"SELECT status FROM trials WHERE number = {number}")[0][0])

    def succeeded(self) -> int:
        try:
            sql = "SELECT count(*) FROM trials WHERE status = 'succeeded'"
            return int(rows(self.db, sql)[0][0])
        except Exception:
            return 0

    def assert_each_trial_counted_once(self, n: int) -> list[tuple[Any, ...]]:
        trials = self.trials()
        assert [t[0] for t in trials] == list(range(n)), trials
        assert all(t[1] == "succeeded" for t in trials), trials
        # No trial's epochs were written twice, by a lost attempt or a late one.
        assert rows(self.db, "SELECT count(*) FROM trial_epochs") == [(n * EPOCHS,)]
        return trials


@pytest.fixture
def study(net: Cluster) -> Iterator[Study]:
    number = next(_numbers)
    made = Study(net, f"s{number}", net.new_db(f"s{number}"), net.broker_url(number))
    try:
        yield made
    finally:
        net.stop_hosts()


def _finish(launch: Proc, timeout: float = 240) -> str:
    try:
        code = launch.wait(timeout)
    finally:
        launch.stop()
    out = launch.output()
    assert code == 0, out[-3000:]
    return out


def test_four_hosts_two_processes_each_all_train(study: Study) -> None:
    hosts = study.hosts(["h1", "h2", "h3", "h4"], concurrency=2)
    out = _finish(study.launch(16))
    trials = study.assert_each_trial_counted_once(16)
    by_host = {w.split(":")[0] for *_, w in trials}
    assert by_host == {"h1", "h2", "h3", "h4"}, trials

    status = subprocess_json(
        study, "status", "--study", study.name, "--db", study.db, "--format", "json"
    )
    per_host: dict[str, list[int]] = {}
    for entry in status["workers"]:
        per_host.setdefault(entry["worker"].split(":")[0], []).append(entry["succeeded"])
    assert sorted(per_host) == ["h1", "h2", "h3", "h4"], status
    assert all(0 < len(counts) <= 2 and sum(counts) > 0 for counts in per_host.values())
    assert sum(map(sum, per_host.values())) == 16
    # Nothing of the scheduler's folder was there to read: the data came through the DB.
    for host in hosts:
        assert "holds 0 entries; scheduler dir hidden" in host.output()
    assert "16/16 finished" in out


def subprocess_json(study: Study, *args: str) -> Any:
    proc = Proc(
        [sys.executable, "-m", "scheduler", *args],
        study.net.scheduler_dir,
        child_env(),
        study.net.folder / "logs" / f"cli-{study.name}.log",
    )
    assert proc.wait(60) == 0, proc.output()
    text = proc.output()
    return json.loads(text[text.index("{") :])


def test_a_lost_host_trials_are_requeued_and_counted_once(study: Study) -> None:
    hosts = study.hosts(["h1", "h2", "h3"])
    launch = study.launch(12)
    lost: list[int] = []
    try:
        wait_until(lambda: bool(study.running_on("h2")), 90, "a trial running on h2", every=0.05)
        hosts[1].destroy()  # every process of h2, then its namespace: the machine is gone
        lost = sorted(set(study.running_on("h2")))
    finally:
        out = _finish(launch)
    assert lost, "h2 finished its trial before it was destroyed"
    trials = study.assert_each_trial_counted_once(12)
    for number in lost:
        _, _, attempts, worker = trials[number]
        assert attempts == 2 and not worker.startswith("h2:"), trials[number]
    assert "requeued trials" in out
    assert not hosts[1].exists()


def test_a_host_cut_off_past_its_lease_comes_back_and_its_late_result_is_refused(
    study: Study,
) -> None:
    hosts = study.hosts(["h1", "h2", "h3"])
    cut = hosts[2]
    launch = study.launch(12)
    try:
        wait_until(lambda: bool(study.running_on("h3")), 90, "a trial running on h3", every=0.05)
        cut.cut()
        (number,) = study.running_on("h3")
        started = time.monotonic()
        # Cut off, h3 trains on; the lease expires, launch requeues, another host runs it.
        wait_until(lambda: study.status_of(number) == "succeeded", 90, f"trial {number} to succeed")
        assert time.monotonic() - started > LEASE_S
        cut.heal()
    finally:
        out = _finish(launch)
    # Back on the network, h3 presents its stale claim (attempt 1): refused.
    refused = f"trial {number} (attempt 1)"
    wait_until(
        lambda: any(refused in line and "claim had lapsed" in line for line in lines(cut)),
        120,
        f"h3 to report that its late result for {refused} was refused",
        every=1,
    )
    trials = study.assert_each_trial_counted_once(12)
    _, _, attempts, worker = trials[number]
    assert attempts == 2 and not worker.startswith("h3:"), trials[number]
    assert "requeued trials" in out


def lines(host: Host) -> list[str]:
    return host.output().splitlines()


def test_the_broker_unreachable_from_every_host_for_30s(study: Study) -> None:
    hosts = study.hosts(["h1", "h2", "h3"])
    launch = study.launch(14)
    try:
        wait_until(lambda: study.succeeded() >= 2, 120, "two succeeded trials")
        for host in hosts:
            host.block(study.net.redis_address)
        cut_at = datetime.now(UTC)
        time.sleep(30)
        healed_at = datetime.now(UTC)
        left = 14 - study.succeeded()
        for host in hosts:
            host.unblock(study.net.redis_address)
    finally:
        _finish(launch, timeout=300)
    assert left > 0, "the study finished before the broker was cut off"
    study.assert_each_trial_counted_once(14)
    # The cut held: once the trials in hand were done, no host could fetch another.
    started = [r[0] for r in rows(study.db, "SELECT started_at FROM trials")]
    assert not [s for s in started if cut_at + timedelta(seconds=10) < s < healed_at], started


def test_leases_follow_the_db_clock_whatever_the_hosts_clocks(study: Study) -> None:
    """Two hosts 2 hours ahead and behind: their leases are still LEASE_S long.

    Leases are written and judged by the DB server's clock, so a host's wrong clock
    moves only the timestamps it writes itself (started_at, finished_at).
    """
    study.hosts(["ahead", "behind", "right"], ahead=7200, behind=-7200)
    launch = study.launch(12)
    # Seconds left on each running lease, by the DB's clock, sampled while the study runs.
    left: dict[str, list[float]] = {"ahead": [], "behind": [], "right": []}
    sql = (
        "SELECT worker, extract(epoch FROM lease_expires_at - now()) FROM trials "
        "WHERE status = 'running'"
    )
    try:
        while launch.alive():
            try:
                sampled = rows(study.db, sql)
            except Exception:  # not created yet
                sampled = []
            for worker, seconds in sampled:
                left[worker.split(":")[0]].append(float(seconds))
            time.sleep(0.05)
    finally:
        _finish(launch)
    for host, samples in left.items():
        assert samples, f"never saw a trial running on {host}"
        assert all(0 < s <= LEASE_S + 0.5 for s in samples), (host, min(samples), max(samples))
    trials = study.assert_each_trial_counted_once(12)
    assert all(t[2] == 1 for t in trials), trials  # no lease looked expired: no requeue
    # The skew was real: what a host stamps with its own clock is 2 hours off the DB's.
    skew = rows(
        study.db,
        "SELECT split_part(worker, ':', 1), "
        "avg(extract(epoch FROM started_at - heartbeat_at)) FROM trials GROUP BY 1",
    )
    skews = {host: float(seconds) for host, seconds in skew}
    assert skews["ahead"] > 3600 and skews["behind"] < -3600 and abs(skews["right"]) < 600, skews
