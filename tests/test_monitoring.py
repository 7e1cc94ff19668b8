"""Celery's own monitoring against seqsweep workers: ``inspect active`` and Flower."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, run_cli, write_tiny_csv
from tests.processes import Proc, child_env, free_port, rows, wait_until, worker_node

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _inspect_active(env: dict[str, str], cwd: Path) -> dict[str, list[dict[str, Any]]]:
    full = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "inspect", "active", "--json"],
        cwd=cwd, env=full, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if proc.returncode != 0 or not proc.stdout.strip().startswith("{"):
        return {}  # no worker answered yet
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_inspect_active_names_the_study_and_trial_each_worker_runs(
    tmp_path: Path, redis_url: str
) -> None:
    write_tiny_csv(tmp_path / "tiny.csv", rows=600)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    env = {"SEQSWEEP_DB_URL": db, "SEQSWEEP_BROKER_URL": redis_url}
    made = run_cli(
        "scheduler", "launch", "--study", "watched", "--trials", "1", "--detach",
        "--data", "tiny.csv", "--target", "label", "--epochs", "400", "--batch-size", "8",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    node = worker_node(tmp_path, "node", db, redis_url)
    try:
        deadline = time.monotonic() + 120
        active: dict[str, list[dict[str, Any]]] = {}
        while time.monotonic() < deadline and not any(active.values()):
            active = _inspect_active(env, tmp_path)
            time.sleep(1)
        tasks = [task for per_worker in active.values() for task in per_worker]
        assert tasks, f"no worker reported an active task: {active}\n{node.output()[-2000:]}"
        assert tasks[0]["name"] == "seqsweep.run_trial"
        payload = tasks[0]["args"][0]
        assert (payload["study"], payload["number"]) == ("watched", 0)
    finally:
        node.stop()


def _flower_get(port: int, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return json.loads(reply.read())
    except (OSError, ValueError):
        return None  # not up yet


def _flower_workers(port: int) -> list[str]:
    """Worker names Flower knows; ``refresh`` makes it ask the workers again."""
    return list(_flower_get(port, "/api/workers?refresh=1") or {})


def test_flower_lists_the_worker_and_each_trial_task(tmp_path: Path, redis_url: str) -> None:
    """The README's `celery -A worker flower`, against a real worker on Redis."""
    write_tiny_csv(tmp_path / "tiny.csv", rows=600)
    db = f"sqlite:///{tmp_path / 'f.db'}"
    env = {"SEQSWEEP_DB_URL": db, "SEQSWEEP_BROKER_URL": redis_url}
    port = free_port()
    node = worker_node(tmp_path, "node", db, redis_url)
    flower = Proc(
        [sys.executable, "-m", "celery", "-A", "worker", "flower",
         f"--port={port}", "--address=127.0.0.1"],
        tmp_path, child_env(**env, FLOWER_UNAUTHENTICATED_API="1"), tmp_path / "flower.log",
    )  # fmt: skip
    try:
        hostname = f"seqsweep-{node.pid}@"
        wait_until(
            lambda: any(h.startswith(hostname) for h in _flower_workers(port)),
            120,
            f"Flower listing {hostname}",
            every=1,
        )
        # Flower turns task events on by a broadcast it repeats every few seconds; a task
        # sent before the worker heard it would reach Flower without its arguments.
        wait_until(lambda: "enabled by remote" in node.output(), 60, "task events on", every=1)
        made = run_cli(
            "scheduler", "launch", "--study", "flowered", "--trials", "2", "--detach",
            "--data", "tiny.csv", "--target", "label", "--epochs", "1", "--batch-size", "8",
            cwd=tmp_path, env=env,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr

        def finished() -> list[dict[str, Any]]:
            tasks = (_flower_get(port, "/api/tasks") or {}).values()
            ours = [t for t in tasks if "flowered" in str(t.get("args"))]
            return [t for t in ours if t["state"] == "SUCCESS"]

        wait_until(lambda: len(finished()) == 2, 180, "2 finished tasks in Flower", every=1)
        tasks = finished()
        assert {t["name"] for t in tasks} == {"seqsweep.run_trial"}
        assert {"'number': 0", "'number': 1"} <= {
            part.strip(" {}[]") for t in tasks for part in str(t["args"]).split(",")
        }
        assert all(t["worker"].startswith(hostname) and t["runtime"] > 0 for t in tasks)
        assert rows(db, "SELECT count(*) FROM trials WHERE status = 'succeeded'") == [(2,)]
    finally:
        flower.stop()
        node.stop()
