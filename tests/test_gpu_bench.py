"""bench/gpu.py runs on the CPU with KERAS_BACKEND=jax and prints its table."""

from __future__ import annotations

import os
import re

import pytest

from tests.conftest import run_bench

ROWS = ("naive", "seqsweep unpacked", "seqsweep packed")


@pytest.mark.slow
@pytest.mark.integration
# Seven processes import Keras and JAX (matmul, naive loop, two launches, two workers
# and their pool processes): past pytest's 300 s on a loaded 2-core machine.
@pytest.mark.timeout(900)
def test_the_gpu_bench_prints_every_row_with_numbers_on_the_cpu() -> None:
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    for var in ("SEQSWEEP_DB_URL", "SEQSWEEP_BROKER_URL", "CUDA_VISIBLE_DEVICES"):
        env.pop(var, None)
    args = ["--trials", "2", "--epochs", "1", "--rows", "400", "--repeats", "2"]
    proc = run_bench("gpu.py", *args, "--pack-size", "4", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "KERAS_BACKEND=jax; device cpu:0" in proc.stdout
    rate = re.search(r"matmul rate ([\d,.]+) GFLOP/s", proc.stdout)
    assert rate is not None and float(rate[1].replace(",", "")) > 0
    header = next(i for i, line in enumerate(lines) if line.startswith("| run |"))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[header + 2 :]]
    assert [r[0] for r in rows] == list(ROWS)
    for name, trials, wall, per_min, vs, flops, memory, best in rows:
        assert int(trials) == 2, name
        assert float(wall) > 0 and float(per_min) > 0, name
        assert re.fullmatch(r"\d+\.\dx", vs), name
        gflops = re.fullmatch(r"([\d,]+\.\d) \(([\d.]+)%\)", flops)
        assert gflops is not None, (name, flops)
        assert memory == "n/a", name  # no device memory to read on the CPU
        assert 0 < float(best) <= 1, name
    assert rows[0][4] == "1.0x"
