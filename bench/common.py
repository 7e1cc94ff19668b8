"""What every benchmark shares: the problem, the seeds, subprocess runs and the table.

The problem is the one of the performance issue: 5 features, 8,000 training rows
(13,334 rows split 60/20/20), the article's default space, 10 epochs, batch 32.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scheduler.data import synthetic_dataset  # noqa: E402
from seqsweep.dataset import Splits, split_dataset  # noqa: E402

ROWS = 13_334  # 8,000 training rows after the 20% validation and 20% test cuts
SEED = 1234
VAL_FRACTION = TEST_FRACTION = 0.2


def one_thread() -> None:
    """Train on one thread, as each pool process of a worker on these 2 cores does (unless
    the caller's environment says otherwise). Call it before TensorFlow is imported."""
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def write_data(folder: Path, rows: int = ROWS) -> Path:
    """The benchmark's data as an .npz file that ``launch --data`` reads."""
    data = synthetic_dataset(n_rows=rows)
    path = folder / f"bench-{rows}.npz"
    np.savez(path, X=data.X, y=data.y)
    return path


def best_rate(call: Any, flops: float, repeats: int = 5, span_s: float = 0.2) -> float:
    """FLOP/s of ``call`` (``flops`` each): the best of ``repeats`` runs of at least
    ``span_s`` each, as a loaded machine only ever makes a run slower."""
    best = 0.0
    for _ in range(repeats):
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < span_s:
            call()
            count += 1
        best = max(best, flops * count / elapsed)
    return best


def load_splits(path: Path, seed: int = SEED) -> Splits:
    """The split a seqsweep study with ``--seed seed`` trains on, for the baselines."""
    from scheduler.data import load_dataset

    return split_dataset(load_dataset(path, None), seed, VAL_FRACTION, TEST_FRACTION)


def env() -> dict[str, str]:
    out = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    for var in ("SEQSWEEP_DB_URL", "SEQSWEEP_BROKER_URL"):
        out.pop(var, None)
    return out


def launch(folder: Path, *args: str) -> dict[str, Any]:
    """Run ``python -m scheduler launch ARGS --format json`` in ``folder``; time it."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "scheduler", "launch", *args, "--format", "json"],
        cwd=folder,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"launch {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout)
    return {"wall_s": wall, "report": report, "folder": folder}


def run_json(*args: str) -> dict[str, Any]:
    """Run ``python ARGS`` and parse the JSON object its last stdout line holds."""
    proc = subprocess.run(
        [sys.executable, *args], env=env(), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table, as the README shows it."""
    cells = [[_cell(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value < 1 else f"{value:,.1f}"
    return str(value)


def machine() -> str:
    import platform

    return f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"


def study_flops(data: Path, trials: int, epochs: int, batch_size: int) -> int:
    """Training and evaluation FLOPs of the study's trials (``seqsweep.trial.cost``): the
    naive loop's and seqsweep's, which train the same configurations."""
    from scheduler.sampling import sample
    from scheduler.space import default_space
    from seqsweep.settings import StudySettings
    from seqsweep.trial.cost import DataShape, trial_flops

    settings = StudySettings(epochs=epochs, batch_size=batch_size)
    shape = DataShape.of_splits(load_splits(data))
    space = default_space()
    return sum(trial_flops(sample(space, SEED, n), settings, shape) for n in range(trials))
