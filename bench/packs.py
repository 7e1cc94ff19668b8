"""Packed training: seconds per trial by pack size and width, on one core.

    python bench/packs.py
    python bench/packs.py --epochs 10          # the full trials of bench/throughput.py

What one worker process (one thread, as with two workers on two cores) spends per
member when it trains K trials of one structure together, on the problem of
bench/throughput.py: the article's two layers of ``dense_units`` U, and a 3-layer
stack (128-64-32, gelu, batch norm, SGD). K=1 is a pack of one: the same engine, one
trial.

``--xla`` adds a column: the same row again with ``jit_compile=True`` (XLA), timed
right after the default (TensorFlow on the CPU does not use XLA unless asked), compile
time included: every pack is a new model, so it compiles anew.
"""

from __future__ import annotations

import argparse
import time

from common import ROWS, machine, one_thread, table

one_thread()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--xla", action="store_true", help="also time each row with XLA")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 32])
    args = parser.parse_args()
    if args.xla:
        _allow_xla()

    from scheduler.data import synthetic_dataset
    from seqsweep.dataset import split_dataset
    from seqsweep.settings import StudySettings
    from seqsweep.trial.alone import run_trial
    from seqsweep.trial.packed import run_pack

    splits = split_dataset(synthetic_dataset(n_rows=ROWS), 0, 0.2, 0.2)
    settings = StudySettings(epochs=args.epochs, batch_size=32, pack_size=64)
    member = {"dropout_rate1": 0.2, "dropout_rate2": 0.2, "learning_rate": 1e-3}
    run_pack([{**member, "dense_units": 32}], [0], splits, settings, study_seed=0)  # warm up
    deep = {
        "n_layers": 3, "dense_units1": 128, "dense_units2": 64, "dense_units3": 32,
        "dropout_rate": 0.2, "activation": "gelu", "batch_norm": True, "optimizer": "sgd",
        "learning_rate": 1e-2,
    }  # fmt: skip
    rows = []
    for units, params in ((64, None), (512, None), ("3 x 128-64-32 gelu bn sgd", deep)):
        params = params or {**member, "dense_units": units}

        def fit(params: dict = params) -> None:
            run_trial(params, splits, epochs=args.epochs, batch_size=32, seed=0)

        alone, alone_xla = _timed(fit, 1, args.xla)
        rows.append([units, "fit (--pack-size 1)", f"{alone:.2f}", "1.0x", *_xla(alone, alone_xla)])
        print(rows[-1], flush=True)
        for k in args.sizes:

            def pack(params: dict = params, k: int = k) -> None:
                run_pack([params] * k, list(range(k)), splits, settings, study_seed=0)

            per, per_xla = _timed(pack, k, args.xla)
            rows.append(
                [units, f"pack of {k}", f"{per:.2f}", f"{alone / per:.1f}x", *_xla(per, per_xla)]
            )
            print(rows[-1], flush=True)
    print()
    print(f"8,000 training rows, {args.epochs} epochs, batch 32, 1 thread; {machine()}")
    header = ["structure (dense_units)", "training", "s per trial", "vs fit"]
    header += ["s per trial, XLA", "XLA vs default"] if args.xla else []
    print(table(header, rows))


#: Set while a row is timed with XLA (``--xla``).
_XLA = {"on": False}


def _allow_xla() -> None:
    """Make every Keras ``compile`` of this process ask for XLA while ``_XLA["on"]``."""
    import keras

    compile_ = keras.Model.compile

    def compile_with_xla(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if _XLA["on"]:
            kwargs["jit_compile"] = True
        return compile_(self, *args, **kwargs)

    keras.Model.compile = compile_with_xla


def _timed(run, members: int, xla: bool) -> tuple[float, float | None]:  # type: ignore[no-untyped-def]
    """Seconds per member of ``run()``; then with XLA, if asked."""
    started = time.perf_counter()
    run()
    default = (time.perf_counter() - started) / members
    if not xla:
        return default, None
    _XLA["on"] = True
    try:
        started = time.perf_counter()
        run()
        return default, (time.perf_counter() - started) / members
    finally:
        _XLA["on"] = False


def _xla(default: float, xla: float | None) -> list[str]:
    return [] if xla is None else [f"{xla:.2f}", f"{default / xla:.2f}x"]


if __name__ == "__main__":
    main()
