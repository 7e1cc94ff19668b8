"""Celery's own monitoring against seqsweep workers: ``celery -A worker inspect active``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, run_cli, write_tiny_csv
from tests.processes import worker_node

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
