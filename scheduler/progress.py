"""What ``launch`` shows while it waits: a live bar on a terminal, plain lines elsewhere.

Logs and CI output get a line whenever a trial finishes and every 15 s in
between, so they stay readable and greppable; a terminal gets one tqdm bar
that redraws in place, and a Jupyter notebook a widget bar (``tqdm.auto``).
All show succeeded, failed and running out of the total, the best validation
accuracy so far, and an ETA from this launch's own pace (trials finished before
it, by an earlier launch, do not count).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from tqdm.auto import tqdm

from seqsweep.db import Counts
from seqsweep.vocab import OBJECTIVE

#: Seconds between two plain lines when nothing has finished.
PLAIN_EVERY_S = 15.0


class Progress:
    """Progress of one study; call :meth:`update` on every poll, :meth:`close` at the end."""

    def __init__(self, stream: IO[str], say: Callable[[str], None], *, tty: bool | None = None):
        self._stream = stream
        self._say = say
        self._tty = (_isatty(stream) or in_notebook()) if tty is None else tty
        self._bar: Any = None
        self._t0 = time.monotonic()
        self._start_finished: int | None = None
        self._last_finished = -1
        self._last_line = float("-inf")

    def note(self, line: str) -> None:
        """Print an event (a requeue, an outage) without breaking the bar."""
        text = f"[{self._elapsed():6.0f}s] {line}"
        if self._bar is not None:
            self._bar.write(text, file=self._stream)
        else:
            self._say(text)

    def update(
        self, counts: Counts, best: tuple[int, float] | None, metric: str = OBJECTIVE.metric
    ) -> None:
        """Show ``counts`` and ``best``: (trial number, value of the objective ``metric``)."""
        if self._start_finished is None:
            self._start_finished = counts.finished
        summary = describe(counts, best, metric)
        if self._tty:
            self._draw(counts, summary)
            return
        now = time.monotonic()
        if counts.finished != self._last_finished or now - self._last_line >= PLAIN_EVERY_S:
            eta = self.eta_s(counts)
            eta_text = "" if counts.finished >= counts.total else f", ETA {format_eta(eta)}"
            self._say(f"[{self._elapsed():6.0f}s] {summary}{eta_text}")
            self._last_finished, self._last_line = counts.finished, now

    def eta_s(self, counts: Counts) -> float | None:
        """Seconds left at this launch's pace so far, or None before its first finished trial."""
        done_here = counts.finished - (self._start_finished or 0)
        if done_here <= 0:
            return None
        return self._elapsed() / done_here * (counts.total - counts.finished)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _draw(self, counts: Counts, summary: str) -> None:
        if self._bar is None:
            columns = _columns(self._stream)
            # Follow the terminal's width; one that reports none (0) gets 100. A
            # notebook's widget sizes itself.
            width: dict[str, Any] = {}
            if not in_notebook():
                width = {"dynamic_ncols": True} if columns > 0 else {"ncols": 100}
            self._bar = tqdm(
                total=counts.total,
                initial=counts.finished,
                file=self._stream,
                unit="trial",
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}",
                **width,
            )
        self._bar.total = counts.total
        self._bar.set_postfix_str(summary.split(": ", 1)[-1], refresh=False)
        self._bar.update(counts.finished - self._bar.n)
        self._bar.refresh()

    def _elapsed(self) -> float:
        return time.monotonic() - self._t0


def describe(counts: Counts, best: tuple[int, float] | None, metric: str = OBJECTIVE.metric) -> str:
    """``3/10 finished: 2 succeeded, 1 failed, 2 running, best val_accuracy 0.9750 (trial 4)``."""
    cancelled = f", {counts.cancelled} cancelled" if counts.cancelled else ""
    best_text = "" if best is None else f", best {metric} {best[1]:.4f} (trial {best[0]})"
    return (
        f"{counts.finished}/{counts.total} finished: {counts.succeeded} succeeded, "
        + (f"{counts.pruned} pruned, " if counts.pruned else "")
        + f"{counts.failed} failed{cancelled}, {counts.running} running{best_text}"
    )


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "unknown until a trial finishes"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def in_notebook() -> bool:
    """True in a Jupyter kernel with ipywidgets, where ``tqdm.auto`` draws a widget bar."""
    if "IPython" not in sys.modules:  # a kernel has it loaded; a terminal need not pay for it
        return False
    from tqdm import notebook

    return issubclass(tqdm, notebook.tqdm)


def _columns(stream: IO[str]) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):  # not a real terminal
        return 0


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False
