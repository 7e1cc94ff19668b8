"""bench/search.py's quick mode runs end to end and prints its tables and targets."""

from __future__ import annotations

import pytest

from tests.conftest import run_bench


@pytest.mark.slow
@pytest.mark.integration
def test_quick_search_bench_prints_its_table_and_targets() -> None:
    proc = run_bench("search.py", "--quick", "--only", "random", "optuna-tpe", timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    header = "| method | best val acc (mean) | min-max | epochs (mean) | epochs vs random |"
    assert header in out
    lines = out.splitlines()
    last = len(lines) - lines[::-1].index(header)  # the final table, after the progress ones
    rows = [line for line in lines[last + 1 :] if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows] == ["| random", "| optuna-tpe"]
    for row in rows:  # 3 trials of 3 epochs each: 9 epochs, none pruned
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert 0 < float(cells[1]) <= 100 and cells[3] == "9", row
    assert "(b) tpe beats random" in out and "(c) seqsweep tpe" in out
    assert "(a) random+asha" in out
