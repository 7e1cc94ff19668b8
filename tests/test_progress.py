"""launch's progress: plain lines with an ETA off a terminal, a live bar on one."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from scheduler import progress as progress_module
from scheduler.progress import Progress, describe, format_eta
from seqsweep.db import Counts
from tests.conftest import REPO, write_tiny_csv


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", fake)
    return fake


def test_plain_lines_on_each_finish_and_every_15_s_with_an_eta(clock: Clock) -> None:
    lines: list[str] = []
    view = Progress(io.StringIO(), lines.append, tty=False)
    view.update(Counts(total=10, succeeded=2, queued=8), None)  # two done by an earlier launch
    assert lines[-1].endswith(
        "2/10 finished: 2 succeeded, 0 failed, 0 running, ETA unknown until a trial finishes"
    )
    clock.now += 5
    view.update(Counts(total=10, succeeded=2, running=1, queued=7), None)
    assert len(lines) == 1, "nothing finished and less than 15 s passed: no line"
    clock.now += 15
    view.update(Counts(total=10, succeeded=2, running=1, queued=7), None)
    assert len(lines) == 2
    clock.now += 10  # 30 s for this launch's first 2 trials: 6 left at 15 s each
    view.update(Counts(total=10, succeeded=3, failed=1, running=1, queued=5), (7, 0.91234))
    assert lines[-1] == (
        "[    30s] 4/10 finished: 3 succeeded, 1 failed, 1 running, "
        "best val_accuracy 0.9123 (trial 7), ETA 1m30s"
    )
    view.update(Counts(total=10, succeeded=9, cancelled=1), (7, 0.91234))
    assert "1 cancelled" in lines[-1] and "ETA" not in lines[-1]


def test_format_eta() -> None:
    assert format_eta(59.6) == "1m00s"
    assert format_eta(3 * 3600 + 125) == "3h02m"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_bar_redrawn_in_place(clock: Clock) -> None:
    out = FakeTerminal()
    lines: list[str] = []
    view = Progress(out, lines.append)
    view.update(Counts(total=4, running=2, queued=2), None)
    clock.now += 10
    view.note("requeued trials 1: their workers vanished")
    view.update(Counts(total=4, succeeded=2, failed=1, running=1), (3, 0.875))
    view.close()
    text = out.getvalue()
    assert lines == [], "on a terminal nothing goes through the plain-line path"
    assert "\r" in text, "tqdm redraws the line in place"
    final = text.rsplit("\r", 1)[-1]
    assert "3/4" in final and "2 succeeded, 1 failed, 1 running" in final
    assert "best val_accuracy 0.8750 (trial 3)" in final
    assert "requeued trials 1: their workers vanished" in text


@pytest.mark.integration
@pytest.mark.slow
def test_launch_on_a_real_terminal_draws_a_bar(tmp_path: Path) -> None:
    """launch under a pseudo-terminal, as in a user's shell, with a real local worker."""
    write_tiny_csv(tmp_path / "tiny.csv", rows=300)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    env.pop("SEQSWEEP_DB_URL", None)
    env.pop("SEQSWEEP_BROKER_URL", None)
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "launch", "--trials", "2", "--local-workers", "1",
         "--data", "tiny.csv", "--target", "label", "--epochs", "1", "--batch-size", "16"],
        cwd=tmp_path, env=env, stdin=child, stdout=child, stderr=child,
    )  # fmt: skip
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child side closed: launch exited
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(main)
    code = proc.wait(30)
    text = b"".join(chunks).decode(errors="replace")
    assert code == 0, text[-3000:]
    bar = [part for part in text.split("\r") if "2/2 [" in part]
    assert bar, f"no finished bar in {text[-3000:]!r}"
    assert "100%" in bar[-1] and "2 succeeded, 0 failed, 0 running" in bar[-1]
    assert "best val_accuracy" in bar[-1]
    assert "best trial: #" in text


def test_the_progress_line_counts_pruned_trials_as_finished() -> None:
    line = describe(Counts(total=10, succeeded=3, pruned=4, running=1, queued=2), (2, 0.9))
    assert line.startswith("7/10 finished: 3 succeeded, 4 pruned, 0 failed, 1 running")
