"""Search strategies: best val accuracy against training epochs spent, per sampler and pruner.

    python bench/search.py            # the README's tables: 60 trials x 3 seeds x 3 data sets
    python bench/search.py --quick    # a smoke run: 3 trials, 1 seed, 3 epochs, wine only

Data sets: the built-in data and two that ship inside scikit-learn (no download):
``load_breast_cancer`` and ``load_digits`` (``load_wine`` too, for ``--quick``: every
method reaches 100% on its 36 validation rows, so it ranks nothing).

Rows: seqsweep's ``random``, ``random`` + ``asha``, ``tpe`` and ``tpe`` + ``asha``, run
as a user runs them (``launch`` with the embedded broker; one node of ``--workers``
processes serves every study, started once, as a cluster's workers would be), and
Optuna's own ``TPESampler`` and ``RandomSampler`` with its ``SuccessiveHalvingPruner``
driving the same Keras network (seqsweep's ``models.build_network``, the study's split,
epochs and batch size), one epoch per report. ``epochs`` is every epoch trained, pruned
trials' included; ``best`` is the best final val accuracy of a trial that ran to the
end. 9 epochs, so that ASHA's rungs (min epochs 1, reduction factor 3) are 1, 3 and 9.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import env, machine, one_thread, table

DATASETS = ("builtin", "breast_cancer", "digits")
SEQSWEEP = ("random", "random+asha", "tpe", "tpe+asha")
OPTUNA = ("optuna-tpe", "optuna-random+sha")
METHODS = SEQSWEEP + OPTUNA
#: Accuracy points (percent) within which a run "reaches" another's best.
REACH_POINTS = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run on a tiny budget")
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--in-flight", type=int, default=4, help="for tpe (default 4)")
    parser.add_argument("--data", nargs="+", choices=(*DATASETS, "wine"), default=None)
    parser.add_argument("--only", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    parser.add_argument("--run-optuna", help=argparse.SUPPRESS)  # a child: method,seed
    parser.add_argument("--npz", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.trials, args.seeds, args.epochs = 3, 1, 3
        args.data = args.data or ["wine"]
    args.data = args.data or list(DATASETS)
    if args.run_optuna:
        method, seed = args.run_optuna.split(",")
        print(json.dumps(_optuna_run(method, int(seed), args)))
        return
    started = time.perf_counter()
    methods = [m for m in args.only if "asha" not in m or _has_pruner()]
    skipped = [m for m in args.only if m not in methods]
    runs = _run_all(args, methods)
    print()
    print(
        f"{args.trials} trials x {args.seeds} seeds, {args.epochs} epochs, batch 32, "
        f"{args.workers} workers, tpe --in-flight {args.in_flight}; {machine()}; "
        f"{time.perf_counter() - started:,.0f} s in all"
    )
    if skipped:
        print(f"not run (this seqsweep has no --pruner): {', '.join(skipped)}")
    for name in args.data:
        print(f"\n{name}")
        print(table(HEADER, [_row(m, r, runs[name]) for m, r in runs[name].items()]))
    print()
    for line in targets(runs, args.data):
        print(line)


HEADER = ["method", "best val acc (mean)", "min-max", "epochs (mean)", "epochs vs random"]


def _row(method: str, seeds: list[dict[str, Any]], runs: dict[str, Any]) -> list[Any]:
    best = [r["best"] for r in seeds]
    epochs = statistics.mean(r["epochs"] for r in seeds)
    base = runs.get("random")
    ratio = "" if not base else f"{epochs / statistics.mean(r['epochs'] for r in base):.2f}"
    return [
        method,
        f"{100 * statistics.mean(best):.2f}",
        f"{100 * min(best):.2f}-{100 * max(best):.2f}",
        f"{epochs:,.0f}",
        ratio,
    ]


def targets(runs: dict[str, dict[str, list[dict[str, Any]]]], names: list[str]) -> list[str]:
    """The issue's three targets, MET or MISSED, with the numbers that decide them."""

    def mean(name: str, method: str, key: str) -> float:
        return statistics.mean(r[key] for r in runs[name][method])

    lines = []
    reach = []
    for name in names:
        have = runs[name]
        if "random+asha" not in have or "random" not in have:
            reach.append(f"{name}: not run")
            continue
        gap = 100 * (mean(name, "random", "best") - mean(name, "random+asha", "best"))
        share = mean(name, "random+asha", "epochs") / mean(name, "random", "epochs")
        ok = gap <= REACH_POINTS and share <= 0.5
        reach.append(f"{name}: {'MET' if ok else 'MISSED'} ({gap:+.2f} points, {share:.2f}x)")
    lines.append(
        f"(a) random+asha within {REACH_POINTS} points of random's best with <= 0.5x "
        f"its epochs: {'; '.join(reach)}"
    )
    wins = []
    for name in names:
        if {"tpe", "random"} <= runs[name].keys():
            diff = 100 * (mean(name, "tpe", "best") - mean(name, "random", "best"))
            wins.append((name, diff))
    won = sum(d > 0 for _, d in wins)
    verdict = "MET" if won >= 2 else "MISSED" if len(wins) >= 3 else "NOT JUDGED (< 3 data sets)"
    lines.append(
        f"(b) tpe beats random on >= 2 of 3 data sets: {verdict} ({won} of {len(wins)}: "
        + ", ".join(f"{n} {d:+.2f} points" for n, d in wins)
        + ")"
    )
    match = []
    for name in names:
        have = runs[name]
        if not {"tpe", "optuna-tpe"} <= have.keys():
            continue
        ours = [100 * r["best"] for r in have["tpe"]]
        theirs = [100 * r["best"] for r in have["optuna-tpe"]]
        # Matched: the two ranges over the seeds overlap.
        ok = min(ours) <= max(theirs) and min(theirs) <= max(ours)
        match.append(
            f"{name}: {'MET' if ok else 'MISSED'} ({min(ours):.2f}-{max(ours):.2f} vs "
            f"{min(theirs):.2f}-{max(theirs):.2f})"
        )
    lines.append(
        "(c) seqsweep tpe within the seeds' spread of Optuna's TPESampler (ranges overlap): "
        + "; ".join(match)
    )
    return lines


def _has_pruner() -> bool:
    proc = subprocess.run(
        [sys.executable, "-m", "scheduler", "launch", "--help"],
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )
    return "--pruner" in proc.stdout


def _run_all(args: argparse.Namespace, methods: list[str]) -> dict[str, dict[str, Any]]:
    """Every run: per data set, its seqsweep studies and Optuna runs side by side."""
    from scheduler.local_workers import LocalWorkers

    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="seqsweep-search-") as tmp:
        folder = Path(tmp)
        db = f"sqlite:///{folder / 'results.db'}"
        broker = f"sqla+sqlite:///{folder / 'broker.db'}"
        workers = LocalWorkers(args.workers, db, broker, folder / "workers.log")
        try:
            for name in args.data:
                npz = _write(folder, name)
                jobs = [(m, s) for m in methods for s in range(1, args.seeds + 1)]
                # seqsweep's launches only sample and wait while the shared workers
                # train, so they all run at once; Optuna trains in its own processes,
                # as many at a time as there are workers.
                ours = [job for job in jobs if not job[0].startswith("optuna")]
                with (
                    ThreadPoolExecutor(max_workers=max(1, len(ours))) as pool,
                    ThreadPoolExecutor(max_workers=args.workers) as trainers,
                ):
                    futures = {
                        job: (pool if job in ours else trainers).submit(
                            _one, args, name, npz, db, broker, folder, *job
                        )
                        for job in jobs
                    }
                out[name] = {}
                for m in methods:
                    try:
                        out[name][m] = [futures[(m, s)].result() for s in range(1, 1 + args.seeds)]
                    except SystemExit as exc:  # one method's failure leaves the others' rows
                        print(f"{name} {m}: FAILED {exc}", flush=True)
                        continue
                    print(f"{name} {m}: {out[name][m]}", flush=True)
                if args.json is not None:  # so that an interrupted long run keeps its data sets
                    args.json.write_text(json.dumps(out, indent=1))
                # Each data set's table as soon as it is done: a long run shows its progress.
                print(
                    f"\n{name}\n"
                    + table(HEADER, [_row(m, r, out[name]) for m, r in out[name].items()]),
                    flush=True,
                )
        finally:
            workers.stop()
    return out


def _one(
    args: argparse.Namespace,
    name: str,
    npz: Path,
    db: str,
    broker: str,
    folder: Path,
    method: str,
    seed: int,
) -> dict[str, Any]:
    if method.startswith("optuna"):
        proc = subprocess.run(
            [sys.executable, __file__, "--run-optuna", f"{method},{seed}", "--npz", str(npz),
             "--trials", str(args.trials), "--epochs", str(args.epochs)],
            env=env(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"{method} seed {seed} failed:\n{proc.stderr[-3000:]}")
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    return _seqsweep_run(args, name, npz, db, broker, folder, method, seed)


def _seqsweep_run(
    args: argparse.Namespace,
    name: str,
    npz: Path,
    db: str,
    broker: str,
    folder: Path,
    method: str,
    seed: int,
) -> dict[str, Any]:
    from seqsweep.db import ResultStore

    sampler, _, pruner = method.partition("+")
    study = f"{name}-{sampler}-{pruner or 'none'}-{seed}".replace("_", "-")
    flags = ["--study", study, "--data", str(npz), "--seed", str(seed)]
    flags += ["--trials", str(args.trials), "--epochs", str(args.epochs), "--sampler", sampler]
    flags += ["--local-workers", "0", "--db", db, "--broker", broker]
    if sampler == "tpe":
        flags += ["--in-flight", str(args.in_flight)]
    if pruner:
        flags += ["--pruner", pruner]
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "scheduler", "launch", *flags, "--format", "json"],
        cwd=folder, env=env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"launch {' '.join(flags)} failed:\n{proc.stderr[-3000:]}")
    store = ResultStore(db, create=False)
    record = store.require_study(study)
    trials = store.get_trials(record.id)
    epochs = store.epochs_of([t.id for t in trials])
    finished = [t.metric("val_accuracy") for t in trials if t.status == "succeeded"]
    counts = {str(s): sum(t.status == s for t in trials) for s in {t.status for t in trials}}
    store.dispose()
    return {
        "best": max(v for v in finished if v is not None),
        "epochs": sum(len(e) for e in epochs.values()),
        "trials": len(trials),
        "counts": counts,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _write(folder: Path, name: str) -> Path:
    """Data set ``name`` as the .npz ``launch --data`` reads."""
    import numpy as np

    if name == "builtin":
        from scheduler.data import synthetic_dataset

        data = synthetic_dataset()
        x, y = data.X, data.y
    else:
        from sklearn import datasets

        loaded = getattr(datasets, f"load_{name}")()
        x, y = loaded.data.astype(np.float32), loaded.target.astype(np.int64)
    path = folder / f"{name}.npz"
    np.savez(path, X=x, y=y)
    return path


def _optuna_run(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Optuna's study loop on seqsweep's network and split, in this process."""
    started = time.perf_counter()
    one_thread()
    import keras
    import optuna

    from models import build_network
    from scheduler.data import load_dataset
    from scheduler.optuna_export import optuna_distribution
    from scheduler.space import Choice, default_space
    from seqsweep.seeds import trial_seed
    from seqsweep.settings import StudySettings
    from seqsweep.structure import Structure
    from seqsweep.trial.alone import STEPS_PER_EXECUTION, targets
    from seqsweep.trial.train import study_splits

    settings = StudySettings(epochs=args.epochs)
    splits = study_splits(load_dataset(args.npz, None), seed, settings)
    y_train, y_val, _ = targets(keras, splits)
    space = default_space()
    spent = 0

    def objective(trial: Any) -> float:
        nonlocal spent
        params: dict[str, Any] = {}
        for pname, dist in space.params.items():
            if isinstance(dist, Choice):
                params[pname] = trial.suggest_categorical(pname, list(dist.values))
            else:
                found = optuna_distribution(dist)
                params[pname] = trial.suggest_float(pname, found.low, found.high, log=found.log)
        keras.utils.set_random_seed(trial_seed(seed, trial.number))
        model = build_network(
            splits.x_train.shape[1],
            splits.n_outputs,
            **Structure.from_params(params).build_kwargs(),
            task=str(splits.task),
            steps_per_execution=STEPS_PER_EXECUTION,
        )
        seen: list[float] = []

        class Report(keras.callbacks.Callback):  # type: ignore[misc]
            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                seen.append(float(logs["val_accuracy"]))
                trial.report(seen[-1], epoch + 1)
                if trial.should_prune():
                    self.model.stop_training = True

        try:
            model.fit(
                splits.x_train, y_train, epochs=args.epochs, batch_size=settings.batch_size,
                validation_data=(splits.x_val, y_val), verbose=0, callbacks=[Report()],
            )  # fmt: skip
        finally:
            keras.backend.clear_session()
        spent += len(seen)
        if len(seen) < args.epochs:
            raise optuna.TrialPruned()
        value = seen[-1]
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if method == "optuna-tpe":
        sampler: Any = optuna.samplers.TPESampler(seed=seed)
        pruner: Any = optuna.pruners.NopPruner()
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    first = time.perf_counter()
    study.optimize(objective, n_trials=args.trials)
    print(f"{method} seed {seed}: {time.perf_counter() - first:.1f} s in trials", file=sys.stderr)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {
        "best": max(t.value for t in done),
        "epochs": spent,
        "trials": len(study.trials),
        "counts": {"succeeded": len(done), "pruned": len(study.trials) - len(done)},
        "wall_s": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":
    main()
