"""Importance: what ranking the hyperparameters costs a report, apart from reading the DB.

    python bench/importance.py                # 100 and 10,000 trials, 3 runs each
    python bench/importance.py --trials 500 --repeat 5

The trials are the article's space with a val accuracy that depends on dense_units and
the learning rate, plus noise. ``report`` ranks them when their results are new to it
(a finished ``launch`` ranks its own study the same way before it prints). A study
over 1,000 trials is ranked on a random 1,000 of them. scikit-learn's import is timed
in a fresh process, as the first report after new results pays it.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import time

import numpy as np
from common import REPO, env, machine, table

from scheduler.importance import hyperparameter_importance
from seqsweep.db import TrialRecord


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    imports = [_sklearn_import_s() for _ in range(args.repeat)]
    rows = [["scikit-learn import (fresh process)", "", *_best_median(imports)]]
    for n in args.trials:
        trials = synthetic_trials(n)
        hyperparameter_importance(trials)  # scikit-learn imported, caches warm
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            ranked = hyperparameter_importance(trials)
            times.append(time.perf_counter() - started)
        assert ranked is not None and ranked.params[0].name == "dense_units", ranked
        rows.append([f"ranking {n} trials", ranked.trials, *_best_median(times)])
        print(rows[-1], flush=True)
    print()
    print(f"{machine()}; {args.repeat} runs each")
    print(table(["step", "trials ranked", "best s", "median s"], rows))


def synthetic_trials(n: int, seed: int = 0) -> list[TrialRecord]:
    """``n`` succeeded trials of the article's space; dense_units matters most."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        params = {
            "dense_units": int(rng.choice([16, 32, 64, 128, 256, 512])),
            "dropout_rate1": float(rng.uniform(0.0, 0.5)),
            "dropout_rate2": float(rng.uniform(0.0, 0.5)),
            "learning_rate": float(10 ** rng.uniform(-4, -2)),
        }
        acc = 0.6 + params["dense_units"] / 2000 + 0.02 * math.log10(params["learning_rate"])
        acc += float(rng.normal(0.0, 0.01))
        out.append(
            TrialRecord(
                i, 1, i, params, "succeeded", 1, None, None, None, None, 1.0, 1 - acc, acc,
                None, None, None,
            )
        )  # fmt: skip
    return out


def _sklearn_import_s() -> float:
    code = (
        "import time; t = time.perf_counter()\n"
        "import sklearn.ensemble, sklearn.model_selection\n"
        "print(time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return float(out.stdout.strip())


def _best_median(times: list[float]) -> list[float]:
    return [round(min(times), 2), round(statistics.median(times), 2)]


if __name__ == "__main__":
    main()
