"""Throughput: one 100-trial search, five ways, on the same data, epochs and batch size.

    python bench/throughput.py                 # the README's table (about an hour)
    python bench/throughput.py --trials 10     # a quick look

Rows: seqsweep with its defaults (packed training, one local worker per core);
seqsweep with --pack-size 1; the article's naive loop (``adjust_model`` then ``fit``,
one process); KerasTuner ``RandomSearch``; Optuna's ``RandomSampler`` driving the same
Keras model. Each runs in its own process, TensorFlow import included, one after the
other. The baselines use Keras' defaults, as their users do.

The seqsweep and naive rows train the same trials, so they also get a FLOP rate: the
study's training FLOPs (``seqsweep.trial.cost.trial_flops``, forward + backward from the
params) over the wall time, as a share of this machine's dense float32 matmul rate,
measured at the start of the same run (numpy, every core, best of several sizes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    SEED,
    best_rate,
    launch,
    load_splits,
    machine,
    run_json,
    study_flops,
    table,
    write_data,
)

RUNNERS = ("seqsweep", "seqsweep-unpacked", "naive", "kerastuner", "optuna")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--only", nargs="+", choices=RUNNERS, default=list(RUNNERS))
    parser.add_argument("--run", choices=RUNNERS[2:], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:  # a baseline, in this child process
        print(json.dumps(BASELINES[args.run](args)))
        return
    peak, rates = matmul_rate()
    print(
        "dense float32 matmul, GFLOP/s: "
        + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in rates.items())
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="seqsweep-bench-") as tmp:
        data = write_data(Path(tmp))
        flops = study_flops(data, args.trials, args.epochs, args.batch_size)
        print(f"the study: {flops / 1e12:.2f} TFLOP (forward + backward, from the params)")
        common = ["--trials", str(args.trials), "--epochs", str(args.epochs)]
        common += ["--batch-size", str(args.batch_size)]
        for name in args.only:
            if name.startswith("seqsweep"):
                extra = ["--pack-size", "1"] if name == "seqsweep-unpacked" else []
                run = launch(
                    Path(tmp) / name, *common, "--data", str(data), "--seed", str(SEED), *extra
                )
                result = {
                    "trials": run["report"]["counts"]["succeeded"],
                    "wall_s": run["wall_s"],
                    "best": run["report"]["best"]["val_accuracy"],
                }
            else:
                result = run_json(__file__, "--run", name, *common, "--data", str(data))
            rows.append((name, result))
            print(f"{name}: {result}", flush=True)
    rate = {name: r["trials"] / r["wall_s"] * 60 for name, r in rows}
    out = []
    for name, r in rows:
        vs = [f"{rate[name] / rate[b]:.1f}x" if b in rate else "" for b in ("naive", "kerastuner")]
        share = ""
        if name in SAME_TRIALS and r["trials"] == args.trials:
            share = f"{flops / r['wall_s'] / 1e9:.1f} ({flops / r['wall_s'] / peak:.1%})"
        out.append(
            [name, r["trials"], round(r["wall_s"], 1), round(rate[name], 2), *vs, share, r["best"]]
        )
    print()
    print(f"{args.trials} trials, {args.epochs} epochs, batch {args.batch_size}; {machine()}; "
          f"matmul rate {peak / 1e9:.1f} GFLOP/s")  # fmt: skip
    header = ["run", "trials", "wall s", "trials/min", "vs naive", "vs KerasTuner",
              "GFLOP/s (of matmul rate)", "best val acc"]  # fmt: skip
    print(table(header, out))


#: The rows that train the study's own trials, whose FLOPs are known.
SAME_TRIALS = ("seqsweep", "seqsweep-unpacked", "naive")
#: (rows, inner, columns) of the timed matmuls: a batch of 32 through a 512-unit layer,
#: a whole epoch's rows through it, and a large square one (the machine's best case).
MATMUL_SIZES = ((32, 512, 512), (8000, 512, 512), (2048, 2048, 2048))


def matmul_rate(repeats: int = 5) -> tuple[float, dict[str, float]]:
    """This machine's dense float32 matmul rate (FLOP/s): the best over sizes and repeats.

    numpy's BLAS uses every core; each size is timed ``repeats`` times over at least
    0.2 s and its best kept, as a loaded machine only ever makes a run slower.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    rates = {}
    for m, k, n in MATMUL_SIZES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        a @ b  # warm up the BLAS threads
        rates[f"{m}x{k}x{n}"] = best_rate(lambda a=a, b=b: a @ b, 2 * m * k * n, repeats)
    return max(rates.values()), rates


def _data(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The study's split, with one-hot labels for ``fit``."""
    import keras

    splits = load_splits(args.data)
    y_train = keras.utils.to_categorical(splits.y_train, splits.n_classes)
    y_val = keras.utils.to_categorical(splits.y_val, splits.n_classes)
    return splits, y_train, y_val


def _fit_val_accuracy(model: Any, args: argparse.Namespace, data: tuple[Any, Any, Any]) -> float:
    """The article's ``fit`` with Keras' defaults; the last epoch's val accuracy."""
    import keras

    splits, y_train, y_val = data
    history = model.fit(
        splits.x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(splits.x_val, y_val),
        verbose=0,
    )
    keras.backend.clear_session()
    return float(history.history["val_accuracy"][-1])


def _naive(args: argparse.Namespace) -> dict[str, Any]:
    """The article's loop: sample, ``adjust_model``, ``fit``, keep the best. Same configs
    and seeds as seqsweep's trials; Keras' defaults otherwise."""
    started = time.perf_counter()
    import keras

    from models import build_model
    from scheduler.sampling import sample
    from scheduler.space import default_space
    from seqsweep.seeds import trial_seed

    data = _data(args)
    splits = data[0]
    best = 0.0
    for number in range(args.trials):
        params = sample(default_space(), SEED, number)
        keras.utils.set_random_seed(trial_seed(SEED, number))
        model = build_model(splits.x_train.shape[1], splits.n_classes, **params)
        best = max(best, _fit_val_accuracy(model, args, data))
    return {"trials": args.trials, "wall_s": time.perf_counter() - started, "best": best}


def _article_model(hp_or_trial: Any, n_features: int, n_classes: int, optuna: bool) -> Any:
    from models import build_model

    if optuna:
        t = hp_or_trial
        params = {
            "dense_units": t.suggest_categorical("dense_units", [32, 64, 128, 256, 512]),
            "dropout_rate1": t.suggest_float("dropout_rate1", 0.0, 0.5),
            "dropout_rate2": t.suggest_float("dropout_rate2", 0.0, 0.5),
            "learning_rate": t.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        }
    else:
        hp = hp_or_trial
        params = {
            "dense_units": hp.Choice("dense_units", [32, 64, 128, 256, 512]),
            "dropout_rate1": hp.Float("dropout_rate1", 0.0, 0.5),
            "dropout_rate2": hp.Float("dropout_rate2", 0.0, 0.5),
            "learning_rate": hp.Float("learning_rate", 1e-4, 1e-2, sampling="log"),
        }
    return build_model(n_features, n_classes, **params)


def _kerastuner(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    import keras_tuner

    splits, y_train, y_val = _data(args)
    nf, nc = splits.x_train.shape[1], splits.n_classes
    with tempfile.TemporaryDirectory(prefix="kt-") as folder:
        tuner = keras_tuner.RandomSearch(
            lambda hp: _article_model(hp, nf, nc, optuna=False),
            objective="val_accuracy",
            max_trials=args.trials,
            seed=SEED,
            directory=folder,
            project_name="bench",
        )
        tuner.search(
            splits.x_train,
            y_train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            validation_data=(splits.x_val, y_val),
            verbose=0,
        )
        trials = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
        # KerasTuner scores a trial by its best epoch; report the last epoch, as the others do.
        best = max(t.metrics.get_history("val_accuracy")[-1].value[0] for t in trials)
    return {"trials": len(trials), "wall_s": time.perf_counter() - started, "best": best}


def _optuna(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    import optuna

    data = _data(args)
    nf, nc = data[0].x_train.shape[1], data[0].n_classes

    def objective(trial: Any) -> float:
        return _fit_val_accuracy(_article_model(trial, nf, nc, optuna=True), args, data)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=SEED)
    )
    study.optimize(objective, n_trials=args.trials)
    return {"trials": len(study.trials), "wall_s": time.perf_counter() - started,
            "best": study.best_value}  # fmt: skip


BASELINES = {"naive": _naive, "kerastuner": _kerastuner, "optuna": _optuna}

if __name__ == "__main__":
    main()
