"""The pack benchmarks run and print consistent tables: bench/step_profile.py (where a
pack's kernel time went), bench/fused.py (updates compiled or not) and bench/timeline.py
(where a study's wall time went)."""

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


@pytest.mark.slow
def test_the_fused_bench_compiles_only_the_large_kernel_and_times_both_ways() -> None:
    proc = run_bench(
        "fused.py", "--epochs", "1", "--repeat", "1", "--packs", "512x1", "16x2", timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = table_rows(proc.stdout)
    assert rows["1 x 512"][0] == "262,144" and rows["2 x 16"][0] == "0", proc.stdout
    for row in (rows["1 x 512"], rows["2 x 16"]):
        off, on, ratio = float(row[1]), float(row[2]), float(row[3].rstrip("x"))
        assert off > 0 and on > 0, proc.stdout
        # Each figure is printed to 2 decimals: the ratio of the rounded seconds may differ.
        low, high = (off - 0.005) / (on + 0.005), (off + 0.005) / (on - 0.005)
        assert low - 0.005 <= ratio <= high + 0.005, proc.stdout
    assert rows["2 x 16"][4:] == ["0.0000", "0.0000"], proc.stdout  # nothing compiled


@pytest.mark.slow
@pytest.mark.integration
def test_the_timeline_bench_splits_a_real_studys_wall_time() -> None:
    """A 4-trial study with local workers: the parts add up to the wall time, and every
    trial is in one of the packs listed."""
    proc = run_bench("timeline.py", "--trials", "4", "--epochs", "1", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = table_rows(proc.stdout)
    parts = [float(rows[name][0]) for name in rows if name.split(" ")[0] in PARTS]
    assert len(parts) == 3 and sum(parts) == pytest.approx(float(rows["wall"][0]), abs=0.2)
    packs = [row for name, row in rows.items() if name.startswith("pack ")]
    assert sum(int(row[4]) for row in packs) == 4, proc.stdout
    workers = {row[2] for row in packs}
    assert workers and all(name in rows for name in workers), proc.stdout


PARTS = ("lead-in", "training", "tail")
