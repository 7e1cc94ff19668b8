"""GPU throughput: the 100-trial study of bench/throughput.py, three ways, on the device.

    python bench/gpu.py                         # the README's table, on a machine with a GPU
    python bench/gpu.py --quick                 # 20 trials, 2 epochs: a first look
    KERAS_BACKEND=jax python bench/gpu.py --trials 4 --epochs 1   # runs on the CPU too

Backend JAX (set here unless KERAS_BACKEND is set): the lent GPU machine has JAX, not
TensorFlow. Rows, each in its own processes, one after the other:

- naive: the article's loop (``adjust_model``, then ``fit`` per trial) in one process,
  bench/throughput.py's own code;
- seqsweep unpacked (``--pack-size 1``) and seqsweep packed (``--pack-size``, default
  ``auto``): ``launch --local-workers 0`` with one ``python -m worker --gpus all``
  (``--concurrency`` = cores on a machine without a GPU), worker start included.

Each row also gets the study's FLOPs (``seqsweep.trial.cost``, from the params) over its
wall time, as a share of the device's dense float32 matmul rate measured at the start of
the same run (``jax.numpy.matmul``, default precision as training gets it, best of
``--repeats``), and the peak device memory: JAX's ``memory_stats()`` in the naive loop's
process, ``nvidia-smi``'s memory used (all processes, above the idle level) while a
seqsweep row runs, "n/a" where neither exists (the CPU).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import ROWS, SEED, env, machine, run_json, study_flops, table, write_data

#: (rows, inner, columns) of the timed matmuls; the best of them is the device's rate.
GPU_SIZES = ((4096, 4096, 4096), (8192, 8192, 8192))
CPU_SIZES = ((512, 512, 512), (1024, 1024, 1024))
HEADER = ["run", "trials", "wall s", "trials/min", "vs naive", "GFLOP/s (of matmul rate)",
          "peak device memory", "best val acc"]  # fmt: skip
GIB = 1024**3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, help="default 100 (20 with --quick)")
    parser.add_argument("--epochs", type=int, help="default 10 (2 with --quick)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pack-size", default="auto", help="of the packed row (default auto)")
    parser.add_argument("--repeats", type=int, default=5, help="matmul timings per size")
    parser.add_argument("--quick", action="store_true", help="20 trials, 2 epochs")
    parser.add_argument("--run", choices=("naive", "matmul"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=ROWS, help=argparse.SUPPRESS)  # tests
    args = parser.parse_args()
    if args.trials is None:
        args.trials = 20 if args.quick else 100
    if args.epochs is None:
        args.epochs = 2 if args.quick else 10
    if args.run == "naive":
        print(json.dumps(_naive(args)))
        return
    if args.run == "matmul":
        print(json.dumps(_matmul(args.repeats)))
        return
    matmul = run_json(__file__, "--run", "matmul", "--repeats", str(args.repeats))
    peak = matmul["rate"]
    print(f"device {matmul['device']}; dense float32 matmul {peak / 1e9:,.1f} GFLOP/s "
          f"({matmul['sizes']})", flush=True)  # fmt: skip
    gpus = _gpus()
    rows = []
    with tempfile.TemporaryDirectory(prefix="seqsweep-gpu-") as tmp:
        data = write_data(Path(tmp), args.rows)
        flops = study_flops(data, args.trials, args.epochs, args.batch_size)
        print(f"the study: {flops / 1e9:,.1f} GFLOP (forward + backward, from the params)")
        common = ["--trials", str(args.trials), "--epochs", str(args.epochs)]
        common += ["--batch-size", str(args.batch_size)]
        naive = run_json(__file__, "--run", "naive", *common, "--data", str(data))
        rows.append(("naive", naive))
        print(f"naive: {naive}", flush=True)
        for name, pack in (("seqsweep unpacked", "1"), ("seqsweep packed", args.pack_size)):
            extra = [*common, "--data", str(data), "--seed", str(SEED), "--pack-size", pack]
            result = _seqsweep(Path(tmp) / name.replace(" ", "-"), extra, gpus)
            rows.append((name, result))
            print(f"{name}: {result}", flush=True)
    rate = {name: r["trials"] / r["wall_s"] * 60 for name, r in rows}
    out = []
    for name, r in rows:
        share = flops / r["wall_s"]
        out.append([
            name, r["trials"], f"{r['wall_s']:.1f}", f"{rate[name]:.1f}",
            f"{rate[name] / rate['naive']:.1f}x", f"{share / 1e9:.1f} ({share / peak:.1%})",
            _memory(r["peak_bytes"], r["memory_source"]), f"{r['best']:.4f}",
        ])  # fmt: skip
    workers = f"--gpus all ({len(gpus)} GPU)" if gpus else f"--concurrency {os.cpu_count()}"
    print()
    print(f"{args.trials} trials, {args.epochs} epochs, batch {args.batch_size}; {machine()}; "
          f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}; device {matmul['device']}; "
          f"matmul rate {peak / 1e9:,.1f} GFLOP/s; worker {workers}")  # fmt: skip
    print(table(HEADER, out))


def _memory(peak_bytes: int | None, source: str) -> str:
    return "n/a" if peak_bytes is None else f"{peak_bytes / GIB:.2f} GiB ({source})"


def _matmul(repeats: int) -> dict[str, Any]:
    """The device's dense float32 matmul rate: per size, the best of ``repeats`` timings
    (a busy machine only ever makes one slower)."""
    import jax
    import jax.numpy as jnp

    device = jax.devices()[0]
    sizes = CPU_SIZES if device.platform == "cpu" else GPU_SIZES
    matmul = jax.jit(jnp.matmul)
    rates = {}
    for m, k, n in sizes:
        a = jax.random.normal(jax.random.key(0), (m, k), dtype=jnp.float32)
        b = jax.random.normal(jax.random.key(1), (k, n), dtype=jnp.float32)
        matmul(a, b).block_until_ready()  # compile, and wake the device
        best = 0.0
        for _ in range(repeats):
            started = time.perf_counter()
            matmul(a, b).block_until_ready()
            best = max(best, 2 * m * k * n / (time.perf_counter() - started))
        rates[f"{m}x{k}x{n}"] = best
    label = f"{device.platform}:{device.id} ({device.device_kind})"
    sizes_text = ", ".join(f"{s} {r / 1e9:,.1f}" for s, r in rates.items())
    return {"rate": max(rates.values()), "device": label, "sizes": sizes_text}


def _naive(args: argparse.Namespace) -> dict[str, Any]:
    """bench/throughput.py's naive loop in this process, with JAX's peak device memory."""
    import throughput

    result = throughput._naive(args)
    import jax

    stats = jax.devices()[0].memory_stats()
    peak = None if stats is None else stats.get("peak_bytes_in_use")
    return {**result, "peak_bytes": peak, "memory_source": "jax memory_stats"}


def _seqsweep(folder: Path, launch_args: list[str], gpus: tuple[int, ...]) -> dict[str, Any]:
    """One ``launch --local-workers 0`` served by one ``python -m worker`` that this run
    starts beside it (the worker path, ``--gpus all`` where there is a GPU), timed from
    the start of both to the end of the study."""
    folder.mkdir(parents=True)
    pool = ["--gpus", "all"] if gpus else ["--concurrency", str(os.cpu_count())]
    memory = _SmiPeak() if gpus else None
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "scheduler", "launch", *launch_args]
    launch = subprocess.Popen(
        [*cmd, "--local-workers", "0", "--format", "json"],
        cwd=folder, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with open(folder / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker", *pool, "--loglevel", "WARNING"],
            cwd=folder, env=env(), stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        try:
            out, err = launch.communicate()
            wall = time.perf_counter() - started
        finally:
            _stop(worker)
            if memory is not None:
                memory.stop()
    if launch.returncode != 0:
        raise SystemExit(f"launch {' '.join(launch_args)} failed:\n{err[-3000:]}")
    report = json.loads(out)
    return {
        "trials": report["counts"]["succeeded"],
        "wall_s": wall,
        "best": report["best"]["val_accuracy"],
        "peak_bytes": None if memory is None else memory.peak,
        "memory_source": "nvidia-smi",
    }


def _stop(worker: subprocess.Popen[bytes]) -> None:
    """Celery's warm shutdown of the worker this run started, then a kill of its group."""
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def _gpus() -> tuple[int, ...]:
    from worker.gpus import machine_gpus

    return machine_gpus()


class _SmiPeak:
    """The most device memory in use (every GPU, every process) above the level before,
    sampled from ``nvidia-smi`` twice a second until :meth:`stop`."""

    def __init__(self) -> None:
        self.smi = shutil.which("nvidia-smi") or "nvidia-smi"
        self.base = self._used()
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _used(self) -> int:
        query = ["--query-gpu=memory.used", "--format=csv,noheader,nounits"]
        out = subprocess.run([self.smi, *query], capture_output=True, text=True, check=False)
        return sum(int(v) for v in out.stdout.split() if v.isdigit()) * 1024**2  # MiB

    def _sample(self) -> None:
        while not self._done.wait(0.5):
            self.peak = max(self.peak, self._used() - self.base)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


if __name__ == "__main__":
    main()
