"""Memory: a worker process's RSS after 10 and after 200 trials.

    python bench/memory.py [--mode unpacked|packed|both] [--packing shape|repeat]
                           [--pack-size 32]

One process runs 200 trials back to back through the worker's own code, as one Celery
pool process would if it were never recycled (seqsweep recycles a pool process once a
task leaves it above 1.5 GiB, a backstop this measurement leaves out). Both training
paths: unpacked (one ``fit`` per trial) and packed (packs of 32). 1 epoch per trial:
memory that leaks per model, not per step, is what this looks for.

``--packing shape`` (the default) forms packs as workers do: the lowest queued trial and
up to pack-size - 1 queued trials of its shape; with the article's space and 200 trials
that gives 8 packs, each of its own key (5 shapes; the tail packs differ in size), so a
process never meets a pack it has built before. ``--packing repeat`` forms packs of
exactly ``--pack-size`` trials of one shape, in the order the trials are drawn, until 200
trials have trained: the article's five shapes then repeat, which is what packed-model
reuse (PACK_CACHE_SIZE) is for.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import SEED, env, load_splits, machine, table, write_data


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--run":
        mode, data, packing, size, cache = sys.argv[2:7]
        print(json.dumps(_run(mode, Path(data), packing, int(size), cache)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("unpacked", "packed", "both"), default="both")
    parser.add_argument("--packing", choices=("shape", "repeat"), default="shape")
    parser.add_argument("--pack-size", type=int, default=32)
    parser.add_argument(
        "--cache-size",
        default="",
        help="built packs kept per process (default PACK_CACHE_SIZE; 0: no reuse)",
    )
    args = parser.parse_args()
    modes = ("unpacked", "packed") if args.mode == "both" else (args.mode,)
    rows = []
    with tempfile.TemporaryDirectory(prefix="seqsweep-memory-") as tmp:
        data = write_data(Path(tmp), rows=2000)
        for mode in modes:
            proc = subprocess.run(
                [sys.executable, __file__, "--run", mode, str(data), args.packing,
                 str(args.pack_size), args.cache_size],
                env=env(), capture_output=True, text=True, check=True,
            )  # fmt: skip
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            growth = (r["rss_200"] - r["rss_10"]) / r["rss_10"]
            if mode == "packed":
                cache = args.cache_size or "default"
                mode = (
                    f"packed ({args.packing}, {args.pack_size}, cache {cache}; {r['builds']} built)"
                )
            rows.append([mode, round(r["rss_10"], 1), round(r["rss_200"], 1), f"{growth:+.1%}"])
            print(rows[-1], flush=True)
            if r.get("trace"):
                what = (
                    "each pack (trials, packs built"
                    if mode != "unpacked"
                    else "every 20 trials (trials, models built"
                )
                print(f"after {what}, RSS MiB):", r["trace"], flush=True)
    print()
    print(machine())
    print(table(["training", "RSS after 10 trials, MiB", "after 200, MiB", "growth"], rows))


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _run(mode: str, data: Path, packing: str, size: int, cache: str) -> dict[str, Any]:
    from scheduler.sampling import sample
    from scheduler.space import default_space
    from seqsweep.settings import StudySettings
    from seqsweep.trial import packed, train
    from seqsweep.trial.packed import pack_shape, run_pack

    splits = load_splits(data)
    if cache:
        packed.PACK_CACHE_SIZE = int(cache)
    settings = StudySettings(epochs=1, batch_size=32, pack_size=size if mode == "packed" else 1)
    params = {n: sample(default_space(), SEED, n) for n in range(200)}
    done, rss, builds = 0, {}, 0
    trace: list[tuple[int, int, float]] = []  # after each pack: trials, packs built, RSS

    build_pack = packed.build_pack

    def counted(*args: Any, **kwargs: Any) -> Any:  # packs built anew, not reused
        nonlocal builds
        builds += 1
        return build_pack(*args, **kwargs)

    packed.build_pack = counted

    def run(pack: list[int]) -> None:
        nonlocal done
        run_pack([params[n] for n in pack], pack, splits, settings, study_seed=SEED)
        before, done = done, done + len(pack)
        trace.append((done, builds, round(_rss_mib(), 1)))
        for mark in (10, 200):
            if before < mark <= done:
                rss[mark] = _rss_mib()

    if mode == "unpacked":
        for n in range(200):
            train({n: params[n]}, splits, settings, study_seed=SEED)
            done += 1
            if done in (10, 200):
                rss[done] = _rss_mib()
            if done % 20 == 0:
                trace.append((done, done, round(_rss_mib(), 1)))
    elif packing == "shape":  # as workers form packs: the lowest queued trial + its shape's
        queued = list(range(200))
        while queued:
            shape = pack_shape(params[queued[0]], settings)
            pack = [n for n in queued if pack_shape(params[n], settings) == shape][:size]
            run(pack)
            queued = [n for n in queued if n not in pack]
    else:  # packs of exactly ``size`` trials of one shape, in the order they are drawn
        waiting: dict[Any, list[int]] = {}
        n = 0
        while done < 200:
            params.setdefault(n, sample(default_space(), SEED, n))
            group = waiting.setdefault(pack_shape(params[n], settings), [])
            group.append(n)
            if len(group) == size:
                run(group)
                waiting.pop(pack_shape(params[n], settings))
            n += 1
    return {"rss_10": rss[10], "rss_200": rss[200], "builds": builds, "trace": trace}


if __name__ == "__main__":
    main()
