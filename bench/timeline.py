"""Where a study's wall time goes: the default throughput study, worker by worker.

    python bench/timeline.py                  # bench/throughput.py's seqsweep row
    python bench/timeline.py --pack-size 1    # its unpacked row

Runs ``launch`` as ``bench/throughput.py`` does (100 trials, 10 epochs, batch 32,
embedded defaults, one local worker per core), keeps the results DB and reads back
each trial's worker, pack, start and end. It splits the command's wall time into the
lead-in (``launch`` started to the first trial started: imports, the study written,
the pool processes warmed up), the span of training (first start to last end) and the
tail (last end to the command's exit: the report, the workers stopped). Then, for each
pool process, its busy time in the span (the union of its packs' start-to-end
intervals) and its idle time: the share of the span a core had no pack to train.
The packs follow, in start order, with their shape, size and duration.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from common import SEED, launch, table, write_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pack-size", default=None)
    args = parser.parse_args()

    from seqsweep.db.store import ResultStore

    with tempfile.TemporaryDirectory(prefix="seqsweep-bench-") as tmp:
        folder = Path(tmp)
        data = write_data(folder)
        extra = [] if args.pack_size is None else ["--pack-size", args.pack_size]
        launched = datetime.now().astimezone()
        run = launch(
            folder / "study", "--trials", str(args.trials), "--epochs", str(args.epochs),
            "--batch-size", "32", "--data", str(data), "--seed", str(SEED), *extra,
        )  # fmt: skip
        wall = run["wall_s"]
        store = ResultStore(f"sqlite:///{folder / 'study' / 'seqsweep.db'}")
        try:
            study = store.list_studies()[0]
            trials = store.get_trials(study.id)
        finally:
            store.dispose()

    packs = _packs(trials)
    first = min(p["start"] for p in packs)
    last = max(p["end"] for p in packs)
    span = (last - first).total_seconds()
    lead_in = (first - launched).total_seconds()
    print(f"best val accuracy {run['report']['best']['val_accuracy']:.4f}")
    print(
        table(
            ["part", "s", "of wall"],
            [
                ["lead-in (launch to first trial)", lead_in, lead_in / wall],
                ["training (first start to last end)", span, span / wall],
                ["tail (last end to exit)", wall - lead_in - span, 1 - (lead_in + span) / wall],
                ["wall", wall, 1.0],
            ],
        )
    )
    by_worker: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for pack in packs:
        by_worker[pack["worker"]].append(pack)
    rows = []
    for name, mine in sorted(by_worker.items(), key=lambda kv: kv[1][0]["start"]):
        busy = _union([(p["start"], p["end"]) for p in mine])
        begin = (mine[0]["start"] - first).total_seconds()
        end = (max(p["end"] for p in mine) - first).total_seconds()
        rows.append([name, len(mine), begin, end, busy, span - busy, (span - busy) / span])
    print()
    print(table(["pool process", "packs", "first start s", "last end s", "busy s", "idle s",
                 "idle of span"], rows))  # fmt: skip
    print()
    print(
        table(
            ["pack", "start s", "end s", "pool process", "units", "members", "s"],
            [
                [
                    f"pack {i}",
                    (p["start"] - first).total_seconds(),
                    (p["end"] - first).total_seconds(),
                    p["worker"],
                    p["units"],
                    p["members"],
                    (p["end"] - p["start"]).total_seconds(),
                ]
                for i, p in enumerate(packs, 1)
            ],
        )
    )


def _packs(trials: list[Any]) -> list[dict[str, Any]]:
    """One entry per pack (a trial alone is a pack of one): its worker, shape, start, end."""
    seen: dict[tuple[int, ...], dict[str, Any]] = {}
    for t in trials:
        if t.started_at is None or t.finished_at is None:
            continue
        key = t.pack or (t.number,)
        pack = seen.setdefault(
            key,
            {
                "worker": t.worker or "?",
                "units": t.params.get("dense_units", "?"),
                "members": len(key),
                "start": t.started_at,
                "end": t.finished_at,
            },
        )
        pack["start"] = min(pack["start"], t.started_at)
        pack["end"] = max(pack["end"], t.finished_at)
    return sorted(seen.values(), key=lambda p: p["start"])


def _union(spans: list[tuple[datetime, datetime]]) -> float:
    """Seconds covered by ``spans`` (overlaps counted once)."""
    total, reach = 0.0, None
    for start, end in sorted(spans):
        if reach is not None and start < reach:
            start = reach
        if end > start:
            total += (end - start).total_seconds()
            reach = end if reach is None or end > reach else reach
    return total


if __name__ == "__main__":
    main()
