"""A pack's optimizer update compiled or not (``models.fused``): seconds per pack, by shape.

    python bench/fused.py                  # the throughput study's packs, 3 epochs
    python bench/fused.py --epochs 10      # as long as the study trains them
    python bench/fused.py --packs 512x2    # other packs: UNITSxMEMBERS
    python bench/fused.py --min-size 1     # compile every variable's update

Trains packs of the sizes and widths the 100-trial study of bench/throughput.py forms
(the article's two layers, on its problem), on one thread as a pool process does, each
with Keras' own update for every variable ("off") and with each variable of at least
``models.fused.FUSE_MIN_SIZE`` elements compiled by XLA ("on"), alternating, best of
``--repeat``, compile time included (a new pack compiles anew). The last columns are the
mean and largest difference of a member's final val accuracy between the two, which
XLA's other rounding makes (a member with a high learning rate amplifies it).
TensorFlow only: the other backends keep Keras' update.
"""

from __future__ import annotations

import argparse
import math
import time

from common import ROWS, SEED, machine, one_thread, table

one_thread()

#: UNITSxMEMBERS: the 100-trial study's packs, heaviest first (bench/timeline.py).
PACKS = ("512x11", "256x17", "128x14", "64x22", "32x15")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="best of N, alternating")
    parser.add_argument("--packs", nargs="+", default=list(PACKS), help="UNITSxMEMBERS")
    parser.add_argument(
        "--min-size", type=int, default=None, help="compile from this size (FUSE_MIN_SIZE)"
    )
    args = parser.parse_args()

    import keras

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("bench/fused.py: needs KERAS_BACKEND=tensorflow")
    from models import fused
    from scheduler.data import synthetic_dataset
    from seqsweep.dataset import split_dataset
    from seqsweep.settings import StudySettings
    from seqsweep.trial import packed
    from seqsweep.trial.packed import run_pack

    splits = split_dataset(synthetic_dataset(n_rows=ROWS), SEED, 0.2, 0.2)
    warm = {"dense_units": 8, "dropout_rate1": 0.1, "dropout_rate2": 0.1, "learning_rate": 1e-3}
    run_pack([warm], [0], splits, StudySettings(epochs=1), study_seed=SEED)  # first trace
    threshold = fused.FUSE_MIN_SIZE if args.min_size is None else args.min_size
    rows = []
    for units, k in (tuple(int(n) for n in pack.split("x")) for pack in args.packs):
        settings = StudySettings(epochs=args.epochs, batch_size=32, pack_size=k)
        members = [
            {
                "dense_units": units,
                "dropout_rate1": 0.05 + 0.4 * i / k,
                "dropout_rate2": 0.3,
                "learning_rate": 1e-3 * (1 + i),
            }
            for i in range(k)
        ]
        seconds, accuracy = {False: math.inf, True: math.inf}, {}
        compiled = 0

        def keep(model: object) -> None:
            """The elements of the variables whose update this pack compiled."""
            nonlocal compiled
            made = getattr(model.optimizer, "fused_updates", {})  # type: ignore[attr-defined]
            variables = model.trainable_variables  # type: ignore[attr-defined]
            compiled = sum(math.prod(v.shape) for i, v in enumerate(variables) if i in made)

        for on in (False, True) * args.repeat:
            fused.FUSE_MIN_SIZE = threshold if on else math.inf
            packed._ASKED.clear()  # each run a new pack, as the study's (keys rarely repeat)
            started = time.perf_counter()
            out = run_pack(
                members, list(range(k)), splits, settings, study_seed=SEED,
                keep=keep if on else None,
            )  # fmt: skip
            seconds[on] = min(seconds[on], time.perf_counter() - started)
            accuracy[on] = [r.val_accuracy for r in out]  # type: ignore[union-attr]
        gaps = [abs(a - b) for a, b in zip(accuracy[False], accuracy[True], strict=True)]
        rows.append(
            [
                f"{k} x {units}", f"{compiled:,}", f"{seconds[False]:.2f}",
                f"{seconds[True]:.2f}", f"{seconds[False] / seconds[True]:.2f}x",
                f"{sum(gaps) / k:.4f}", f"{max(gaps):.4f}",
            ]
        )  # fmt: skip
        print(rows[-1], flush=True)
    print()
    print(
        f"8,000 training rows, {args.epochs} epochs, batch 32, 1 thread, "
        f"FUSE_MIN_SIZE {threshold:,}; {machine()}"
    )
    header = ["pack", "elements compiled", "s off", "s on", "off / on"]
    print(table([*header, "val acc gap, mean", "largest"], rows))


if __name__ == "__main__":
    main()
