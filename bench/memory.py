"""Memory: a worker process's RSS after 10 and after 200 trials.

    python bench/memory.py

One process runs 200 trials back to back through the worker's own code, as one Celery
pool process would if it were never recycled (seqsweep recycles each pool process
after 50 tasks, a backstop this measurement leaves out). Both training paths: unpacked
(one ``fit`` per trial) and packed (packs of 32). 1 epoch per trial: memory that leaks
per model, not per step, is what this looks for.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import SEED, env, load_splits, machine, table, write_data


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--run":
        print(json.dumps(_run(sys.argv[2], Path(sys.argv[3]))))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="seqsweep-memory-") as tmp:
        data = write_data(Path(tmp), rows=2000)
        for mode in ("unpacked", "packed"):
            proc = subprocess.run(
                [sys.executable, __file__, "--run", mode, str(data)],
                env=env(), capture_output=True, text=True, check=True,
            )  # fmt: skip
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            growth = (r["rss_200"] - r["rss_10"]) / r["rss_10"]
            rows.append([mode, round(r["rss_10"], 1), round(r["rss_200"], 1), f"{growth:+.1%}"])
            print(rows[-1], flush=True)
    print()
    print(machine())
    print(table(["training", "RSS after 10 trials, MiB", "after 200, MiB", "growth"], rows))


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _run(mode: str, data: Path) -> dict[str, float]:
    from scheduler.sampling import sample
    from scheduler.space import default_space
    from seqsweep.settings import StudySettings
    from seqsweep.trial import train
    from seqsweep.trial.packed import pack_shape, run_pack

    splits = load_splits(data)
    settings = StudySettings(epochs=1, batch_size=32, pack_size=32 if mode == "packed" else 1)
    params = {n: sample(default_space(), SEED, n) for n in range(200)}
    done, rss = 0, {}
    if mode == "unpacked":
        for n in range(200):
            train({n: params[n]}, splits, settings, study_seed=SEED)
            done += 1
            if done in (10, 200):
                rss[done] = _rss_mib()
    else:  # packs as workers form them: the lowest queued trial and up to 31 of its shape
        queued = list(range(200))
        while queued:
            shape = pack_shape(params[queued[0]], settings)
            pack = [n for n in queued if pack_shape(params[n], settings) == shape][:32]
            run_pack([params[n] for n in pack], pack, splits, settings, study_seed=SEED)
            queued = [n for n in queued if n not in pack]
            before, done = done, done + len(pack)
            for mark in (10, 200):
                if before < mark <= done:
                    rss[mark] = _rss_mib()
    return {"rss_10": rss[10], "rss_200": rss[200]}


if __name__ == "__main__":
    main()
