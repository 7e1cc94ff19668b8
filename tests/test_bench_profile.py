"""bench/step_profile.py traces a small pack and prints where its kernel time went."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_bench, table_rows


@pytest.mark.slow
def test_the_step_profile_sums_every_kind_of_kernel_of_a_small_pack() -> None:
    proc = run_bench("step_profile.py", "--units", "16", "--members", "2", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = table_rows(proc.stdout)
    for kind in ("matmul", "optimizer", "dropout", "other"):
        assert float(rows[kind][0]) > 0 and int(rows[kind][2]) > 0, (kind, proc.stdout)
    total = float(rows["all kernels"][0])
    parts = sum(float(rows[kind][0]) for kind in ("matmul", "optimizer", "dropout", "other"))
    assert abs(total - parts) <= 0.005, proc.stdout
    rate = re.search(
        r"matmul kernels: ([\d.]+) GFLOP in ([\d.]+) s = ([\d.]+) GFLOP/s", proc.stdout
    )
    assert rate is not None and float(rate.group(3)) > 0, proc.stdout
