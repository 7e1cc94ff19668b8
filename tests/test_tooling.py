"""Lint, format and type checks run with the suite, so CI enforces them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


def test_the_core_settings_stay_cheap_to_import_for_a_worker() -> None:
    """``import seqsweep.settings`` runs seqsweep/__init__.py, which re-exports the Python
    API: none of the API's heavy dependencies, and no backend, may load with it."""
    heavy = (
        "tensorflow", "keras", "jax", "torch", "pandas", "plotly", "sklearn", "tqdm",
        "scheduler.launch", "scheduler.report", "scheduler.html_report", "seqsweep.db",
    )  # fmt: skip
    code = (
        "import sys, seqsweep.settings, seqsweep\n"
        "assert callable(seqsweep.launch) and callable(seqsweep.load_study)\n"
        f"print(','.join(sorted(m for m in {heavy!r} if m in sys.modules)))"
    )
    proc = _run(sys.executable, "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def _imports(path: Path) -> set[str]:
    """Top-level modules ``path`` imports (absolute imports), as dotted names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_the_core_never_imports_the_packages_above_it() -> None:
    """seqsweep/ is the shared core: only its __init__.py (the API's face) may name
    scheduler, no module of it may import worker, and only the trial layer (below
    which the model builders sit) may import models."""
    for path in sorted((REPO / "seqsweep").rglob("*.py")):
        allowed = {"scheduler"} if path == REPO / "seqsweep" / "__init__.py" else set()
        if REPO / "seqsweep" / "trial" in path.parents:
            allowed = {"models"}
        names = _imports(path)
        tops = {name.split(".")[0] for name in names}
        assert not (tops & {"scheduler", "worker", "models"}) - allowed, (
            f"{path.relative_to(REPO)} imports {names}"
        )


def test_the_model_builders_know_no_db_and_the_scheduler_no_worker() -> None:
    """models/ sits at the bottom (Keras only); scheduler/ reaches training through the
    core's trial layer, never through the Celery package (which builds an app on import)."""
    for path in sorted((REPO / "models").rglob("*.py")):
        assert not {
            n for n in _imports(path) if n.startswith(("seqsweep.db", "scheduler", "worker"))
        }, path
    for path in sorted((REPO / "scheduler").rglob("*.py")):
        tops = {name.split(".")[0] for name in _imports(path)}
        assert "worker" not in tops, f"{path.relative_to(REPO)} imports worker"
