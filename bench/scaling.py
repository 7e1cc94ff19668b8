"""Scaling: throughput with 1 and with 2 local worker processes, packed and unpacked.

    python bench/scaling.py                   # the README's table
    python bench/scaling.py --trials 16       # a quick look

The problem of bench/throughput.py (8,000 training rows, 10 epochs, batch 32); each
worker process gets its share of the cores (TF_NUM_INTRAOP_THREADS = cores / workers).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import SEED, launch, machine, table, write_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="seqsweep-scaling-") as tmp:
        data = write_data(Path(tmp))
        for pack in (32, 1):
            base = None
            for workers in (1, 2):
                run = launch(
                    Path(tmp) / f"p{pack}-w{workers}",
                    "--trials", str(args.trials), "--epochs", str(args.epochs),
                    "--data", str(data), "--seed", str(SEED),
                    "--local-workers", str(workers), "--pack-size", str(pack),
                )  # fmt: skip
                rate = run["report"]["counts"]["succeeded"] / run["wall_s"] * 60
                base = rate if base is None else base
                rows.append([pack, workers, round(run["wall_s"], 1), round(rate, 2),
                             f"{rate / base:.2f}x"])  # fmt: skip
                print(rows[-1], flush=True)
    print()
    print(f"{args.trials} trials, {args.epochs} epochs, batch 32; {machine()}")
    print(table(["pack size", "local workers", "wall s", "trials/min", "vs 1 worker"], rows))


if __name__ == "__main__":
    main()
