"""``report --html``: one offline page whose plots really render in headless Chromium."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from scheduler.cli import main
from seqsweep.db import EpochRecord, ResultStore, TrialResult
from tests.conftest import chromium_page
from tests.test_store import _claim, _create

# Counts every plot's drawn marks, so a plot that is there but empty fails.
_PLOTS_JS = """() => Object.fromEntries(
  Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => [d.id, {
    svg: d.querySelectorAll('.main-svg').length,
    points: d.querySelectorAll('.scatterlayer .point').length,
    lines: d.querySelectorAll('.scatterlayer .js-line').length,
    bars: d.querySelectorAll('.barlayer .point').length,
    axes: d.querySelectorAll('.parcoords .y-axis').length,
    contours: d.querySelectorAll('.contourlayer .contourlevel').length,
    xtypes: Object.keys(d._fullLayout).filter(k => /^xaxis[0-9]*$/.test(k)).sort()
      .map(k => d._fullLayout[k].type),
    rows: (d._fullLayout.yaxis || {}).categoryarray || [],
  }]))"""


WORKERS = ("host-a:11", "host-a:12", "host-b:21")


def _study(url: str, n: int = 20, *, pruned: bool = False) -> ResultStore:
    """A study whose val accuracy follows the learning rate, plus one failed and one queued
    (or, with ``pruned``, pruned after its first epoch), trained by three worker processes."""
    store = ResultStore(url)
    study, _ = _create(store, n, name="html")
    for number in range(n - 2):
        claimed = _claim(store, study.id, number, WORKERS[number % 3])
        acc = 0.9 + 0.05 * math.log10(claimed.params["learning_rate"])
        epochs = tuple(
            EpochRecord(e, 1 - acc * e / 3, acc * e / 3, 1.1 - acc * e / 3, acc * e / 3)
            for e in (1, 2, 3)
        )
        store.finish_trial(claimed, TrialResult(1 - acc, acc, 1 - acc, acc, 0.5, "cpu", epochs))
    store.fail_trial(_claim(store, study.id, n - 2, WORKERS[0]), "ValueError: boom")
    if pruned:
        first = (EpochRecord(1, 0.9, 0.3, 1.0, 0.3),)
        stopped = TrialResult(1.0, 0.3, 1.0, 0.3, 0.2, "cpu", first, pruned=True)
        store.finish_trial(_claim(store, study.id, n - 1, WORKERS[1]), stopped)
    return store


def _render(page_file: Path, screenshot: Path | None = None) -> tuple[list[str], dict[str, Any]]:
    """Open ``page_file`` in headless Chromium with the network cut off.

    Returns the console errors, uncaught exceptions and refused requests, and per plot
    the count of what it drew.
    """
    with chromium_page(allowed="file:") as (page, problems):
        page.goto(page_file.as_uri(), wait_until="load")
        page.wait_for_timeout(300)  # parcoords draws on the next animation frame
        plots = page.evaluate(_PLOTS_JS)
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
    return problems, plots


def test_html_report_renders_every_plot_offline_with_no_console_errors(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _study(sqlite_url, pruned=True).dispose()
    out = tmp_path / "report.html"
    assert main(["report", "--db", sqlite_url, "--study", "html", "--html", str(out)]) == 0
    assert f"HTML report: {out}" in capsys.readouterr().out
    page = out.read_text()

    # Any request beyond the file itself (a CDN, fonts, MathJax) is refused and reported.
    problems, plots = _render(out, tmp_path / "report.png")
    assert problems == []
    succeeded = 18
    assert plots["history"]["points"] == succeeded  # the running best is the line
    assert plots["history"]["lines"] == 1
    assert plots["edf"]["points"] == succeeded and plots["edf"]["lines"] == 1
    assert plots["params"]["points"] == succeeded * 4  # one panel per hyperparameter
    # dense_units is a choice of widths: categories; the learning rate: a log axis.
    assert plots["params"]["xtypes"] == ["category", "linear", "linear", "log"]
    assert plots["contour"]["points"] == succeeded and plots["contour"]["contours"] >= 3
    assert plots["contour"]["xtypes"] == ["log"]  # learning_rate, the most important
    # Top 5, val loss and val accuracy; the pruned trial's curve, and an x where it stopped.
    assert plots["curves"]["lines"] == 5 * 2 + 2
    assert plots["curves"]["points"] == 5 * 3 * 2 + 2
    assert plots["parallel"]["axes"] == 5  # 4 hyperparameters + val accuracy
    assert plots["importance"]["bars"] == 4
    assert plots["timeline"]["bars"] == succeeded + 2  # and the failed and pruned trials
    assert plots["timeline"]["rows"] == list(WORKERS)
    assert all(p["svg"] > 0 for p in plots.values())
    assert (tmp_path / "report.png").stat().st_size > 50_000

    # The log axis for the learning rate, the method, the tables.
    assert '"type":"log"' in page.replace(" ", "")
    assert "permutation importance of a random-forest surrogate" in page
    store = ResultStore(sqlite_url)
    best = store.top_trials(store.require_study("html").id, 1)[0]
    assert f"Best configuration: trial {best.number}" in page
    assert page.count("<tr><td>") == 10  # top-10 table rows
    assert "18 succeeded, 1 pruned, 1 failed)" in page
    assert "trial 19 pruned after epoch 1" in page


def test_the_render_check_catches_a_broken_page(sqlite_url: str, tmp_path: Path) -> None:
    """The check above could pass by seeing nothing; here it must see a failure."""
    _study(sqlite_url, n=10).dispose()
    out = tmp_path / "report.html"
    assert main(["report", "--db", sqlite_url, "--study", "html", "--html", str(out)]) == 0
    broken = tmp_path / "broken.html"
    broken.write_text(
        out.read_text().replace(
            "</body>",
            '<script src="https://cdn.plot.ly/x.js"></script><script>Plotly.nope()</script></body>',
        )
    )
    problems, plots = _render(broken)
    assert any("fetched https://cdn.plot.ly" in p for p in problems)
    assert any("uncaught" in p and "nope" in p for p in problems)
    assert plots["history"]["points"] == 8


def test_a_young_study_still_gets_a_page(sqlite_url: str, tmp_path: Path) -> None:
    store = ResultStore(sqlite_url)
    _create(store, 3, name="young")
    out = tmp_path / "young.html"
    assert main(["report", "--db", sqlite_url, "--study", "young", "--html", str(out)]) == 0
    page = out.read_text()
    assert "No trial has succeeded yet." in page
    assert page.count("Not enough succeeded trials to draw this yet.") == 8


def test_html_to_a_missing_folder_is_one_line_and_writes_nothing(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _study(sqlite_url, n=10).dispose()
    target = tmp_path / "nope" / "report.html"
    assert main(["report", "--db", sqlite_url, "--study", "html", "--html", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--html" in err[0] and "does not exist; create it first" in err[0]
    assert not target.parent.exists()
