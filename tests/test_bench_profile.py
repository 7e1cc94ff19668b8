"""bench/step_profile.py traces a small pack and prints where its kernel time went."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_bench, table_rows


@pytest.mark.slow
@pytest.mark.parametrize("units", [16, 512])
def test_the_step_profile_sums_every_kind_of_kernel_of_a_small_pack(units: int) -> None:
    """At 16 units every update is Keras' own kernels; at 512 the hidden kernel's update
    is compiled (models.fused), and its XLA kernel and compiling are counted too."""
    proc = run_bench("step_profile.py", "--units", str(units), "--members", "1", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = table_rows(proc.stdout)
    kinds = ["matmul", "optimizer", "dropout", "other"] + (["XLA compile"] if units > 16 else [])
    for kind in kinds:
        assert float(rows[kind][0]) > 0 and int(rows[kind][2]) > 0, (kind, proc.stdout)
    by_kind = {
        kind: float(row[0])
        for kind, row in rows.items()
        if ":" not in kind and kind != "all kernels" and not kind.startswith("outside")
    }
    assert sorted(by_kind) == sorted(kinds), proc.stdout
    assert abs(float(rows["all kernels"][0]) - sum(by_kind.values())) <= 0.005, proc.stdout
    rate = re.search(
        r"matmul kernels: ([\d.]+) GFLOP in ([\d.]+) s = ([\d.]+) GFLOP/s", proc.stdout
    )
    assert rate is not None and float(rate.group(3)) > 0, proc.stdout
