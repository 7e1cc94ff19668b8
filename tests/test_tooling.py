"""Lint, format and type checks run with the suite, so CI enforces them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


def test_ruff_lint() -> None:
    proc = _run(sys.executable, "-m", "ruff", "check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format() -> None:
    proc = _run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_mypy_strict_on_the_shared_core() -> None:
    proc = _run(sys.executable, "-m", "mypy")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scheduler_and_worker_parent_never_import_a_backend() -> None:
    """TensorFlow state must only exist in pool processes, never in a parent that forks."""
    code = (
        "import sys, scheduler.cli, worker, worker.tasks, worker.__main__\n"
        "loaded = sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules)\n"
        "print(','.join(loaded))"
    )
    proc = _run(sys.executable, "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
