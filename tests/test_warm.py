"""A pool process warms up (Keras imported, a tiny pack trained) before any trial comes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.processes import wait_until, worker_node

pytestmark = pytest.mark.integration


def test_pool_processes_warm_up_with_no_trial_queued(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    broker = f"sqla+sqlite:///{tmp_path / 'b.db'}"
    node = worker_node(tmp_path, "w", db, broker, concurrency=1)
    try:
        wait_until(
            lambda: "pool process warmed up in" in node.output(),
            timeout=180,  # a TensorFlow import on a loaded machine
            what="the pool process to log its warm-up",
            every=0.5,
        )
        assert "warm-up failed" not in node.output()
    finally:
        node.stop()
